"""models.load() and the DepthModel contract, with the photometric prior (no weights)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from endo_depth_ros import models
from endo_depth_ros.errors import (
    BackendUnavailableError,
    BadInputError,
    ConfigError,
    ModelLoadError,
)
from endo_depth_ros.models.photometric import PhotometricConfig, PhotometricModel


def _grey(value: int, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    return np.full((*shape, 3), value, np.uint8)


def test_load_photometric_follows_the_contract() -> None:
    model = models.load('photometric')
    assert isinstance(model, models.DepthModel)
    assert model.name == 'photometric'
    assert model.output_kind == 'relative_disparity'
    assert (model.device, model.precision) == ('cpu', 'fp32')
    out = model.infer(_grey(120, (48, 64)))
    assert out.shape == (48, 64)
    assert out.dtype == np.float32
    assert model.input_size == model.network_size(48, 64)
    assert isinstance(model.input_size, tuple) and len(model.input_size) == 2


def test_default_name_is_photometric() -> None:
    assert models.load().name == 'photometric'


def test_registry_lists_every_required_name() -> None:
    required = {'photometric', 'dav1-s', 'dav1-b', 'dav1-l', 'dav2-s', 'dav2-b', 'dav2-l',
                'dav2-metric-s', 'dav2-metric-b', 'dav2-metric-l', 'dpt-hybrid', 'dpt-large'}
    assert required <= set(models.MODEL_NAMES)


def test_batch_inference_equals_frame_by_frame() -> None:
    model = models.load('photometric')
    rng = np.random.default_rng(1)
    batch = rng.integers(20, 230, (3, 48, 64, 3), np.uint8)
    out = model.infer(batch)
    assert out.shape == (3, 48, 64)
    for i in range(3):
        np.testing.assert_array_equal(out[i], model.infer(batch[i]))


def test_brighter_surface_is_predicted_nearer() -> None:
    image = _grey(60)
    image[:, 64:] = 180
    disparity = models.load('photometric').infer(image)
    assert np.median(disparity[:, 100:]) > 1.5 * np.median(disparity[:, :28])


def test_nan_only_where_the_image_is_black() -> None:
    image = _grey(140)
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.circle(mask, (64, 48), 40, 255, -1)
    image[mask == 0] = 0
    disparity = models.load('photometric').infer(image)
    np.testing.assert_array_equal(np.isnan(disparity), mask == 0)
    assert np.all(np.isfinite(disparity[mask > 0]))


def test_specular_highlight_does_not_look_nearer() -> None:
    model = models.load('photometric')
    plain = model.infer(_grey(100))
    image = _grey(100)
    cv2.circle(image, (64, 48), 5, (255, 255, 255), -1)
    disparity = model.infer(image)
    assert disparity[48, 64] == pytest.approx(plain[48, 64], rel=0.02)


def test_radial_falloff_of_a_flat_wall_is_compensated() -> None:
    # A wall at constant depth seen through the nominal field of view darkens as cos^n.
    config = PhotometricConfig()
    h, w = 96, 128
    focal = 0.5 * np.hypot(h, w) / np.tan(np.radians(config.fov_deg) / 2)
    v, u = np.mgrid[0:h, 0:w]
    cos = 1.0 / np.sqrt(1.0 + ((u - (w - 1) / 2) ** 2 + (v - (h - 1) / 2) ** 2) / focal**2)
    linear = 0.3 * cos**config.falloff_power
    grey = np.round(255.0 * linear ** (1.0 / config.gamma)).astype(np.uint8)
    disparity = PhotometricModel(config).infer(np.repeat(grey[..., None], 3, axis=2))
    inner = disparity[8:-8, 8:-8]
    assert inner.std() / inner.mean() < 0.03


@pytest.mark.parametrize(('image', 'match'), [
    (np.zeros((48, 64, 3), np.float32), 'uint8'),
    (np.zeros((48, 64), np.uint8), 'shape'),
    (np.zeros((48, 64, 4), np.uint8), 'shape'),
    ([[1, 2, 3]], 'numpy array'),
])
def test_bad_images_are_rejected(image: object, match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        models.load('photometric').infer(image)  # type: ignore[arg-type]


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ModelLoadError, match=r"Unknown depth model 'dav3-s'.*photometric"):
        models.load('dav3-s')


def test_photometric_refuses_a_checkpoint(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match='no weights'):
        models.load('photometric', tmp_path / 'x.pth')


def test_photometric_refuses_cuda() -> None:
    with pytest.raises(BackendUnavailableError, match='CPU only'):
        models.load('photometric', device='cuda')


def test_photometric_refuses_fp16() -> None:
    with pytest.raises(ConfigError, match='fp32 only'):
        models.load('photometric', precision='fp16')


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Unknown backend 'tflite'"):
        models.load('photometric', backend='tflite')


def test_bad_input_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match='input_size'):
        models.load('dav2-s', 'x.pth', input_size=5)


def test_network_without_checkpoint_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="'dav2-s' needs a checkpoint"):
        models.load('dav2-s')


def test_missing_checkpoint_file_is_named(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match=r'not found: .*nothere\.pth'):
        models.load('dav2-s', tmp_path / 'nothere.pth')


@pytest.mark.parametrize(('field', 'value'), [
    ('work_size', 4), ('smooth_sigma', -1.0), ('dark_level', 250), ('fov_deg', 180.0),
    ('falloff_power', -1.0), ('gamma', 0.0),
])
def test_bad_photometric_config_names_the_value(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field.split('_')[0]):
        PhotometricConfig(**{field: value})  # type: ignore[arg-type]
