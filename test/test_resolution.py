"""Working resolution: sizes, rescaled cameras, upsampled depth, the pipeline at work size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.pipeline import Pipeline, PipelineConfig
from endo_depth_ros.resolution import (
    ResolutionConfig,
    shrink,
    to_working_size,
    upsample_depth,
)
from endo_depth_ros.synth import SynthConfig, render_sequence


@pytest.mark.parametrize(('limits', 'size', 'expected'), [
    ((640, 640), (1920, 1080), (640, 360)),
    ((640, 640), (1080, 1920), (360, 640)),
    ((640, 640), (320, 256), (320, 256)),  # never enlarged
    ((0, 0), (1920, 1080), (1920, 1080)),  # no limit
    ((0, 100), (1920, 1080), (178, 100)),
])
def test_working_size_fits_the_limits_and_keeps_the_aspect_ratio(
        limits: tuple[int, int], size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert ResolutionConfig(*limits).working_size(*size) == expected


@pytest.mark.parametrize('value', [-1, 5, 20000, 1.5, True])
def test_limits_are_bounded(value: object) -> None:
    with pytest.raises(ConfigError, match='max_width must be 0'):
        ResolutionConfig(max_width=value)  # type: ignore[arg-type]


def test_frame_and_camera_shrink_together_and_depth_comes_back_by_nearest() -> None:
    camera = Intrinsics(1920, 1080, 1000.0, 1000.0, 959.5, 539.5)
    rgb = np.zeros((1080, 1920, 3), np.uint8)
    small, small_camera = to_working_size(rgb, camera, (640, 360))
    assert small.shape == (360, 640, 3)
    assert (small_camera.fx, small_camera.cx, small_camera.cy) == pytest.approx(
        (1000 / 3, 319.5, 179.5))  # the optical centre stays the image centre
    depth = np.full((360, 640), 0.05, np.float32)
    depth[0, 0] = np.nan
    big = upsample_depth(depth, (1920, 1080))
    assert big.shape == (1080, 1920)
    assert np.isnan(big[:3, :3]).all() and np.isfinite(big[3:, 3:]).all()
    assert set(np.unique(big[np.isfinite(big)])) == {np.float32(0.05)}  # nothing invented


def test_the_pipeline_runs_at_the_working_size_and_remembers_the_input_size() -> None:
    frames = list(render_sequence(SynthConfig(width=128, height=96, frames=2, seed=1)))
    pipeline = Pipeline(PipelineConfig(resolution=ResolutionConfig(64, 64)))
    for frame in frames:
        (result,) = pipeline.process(frame.rgb, frame.intrinsics, frame.stamp_ns)
    assert result.depth.shape == (48, 64) and result.rgb.shape == (48, 64, 3)
    assert result.intrinsics == frames[-1].intrinsics.scaled(64, 48)
    assert result.input_size == (128, 96)
    assert result.cloud is not None and result.cloud.is_dense
    assert 'resize' in result.timings_ms


def test_the_gt_oracle_samples_the_truth_at_the_working_size() -> None:
    from endo_depth_ros.evaluation import GroundTruthModel

    frames = list(render_sequence(SynthConfig(width=128, height=96, frames=1, seed=1)))
    oracle = GroundTruthModel()
    pipeline = Pipeline(PipelineConfig(resolution=ResolutionConfig(64, 64)), model=oracle)
    oracle.set_next(frames[0].depth)
    (result,) = pipeline.process(frames[0].rgb, frames[0].intrinsics, frames[0].stamp_ns)
    np.testing.assert_array_equal(result.raw, upsample_depth(frames[0].depth, (64, 48)))


def _textured(width: int, height: int) -> np.ndarray:
    """A smooth image with fine texture on top (what aliasing would show)."""
    rng = np.random.default_rng(4)
    base = cv2.resize(rng.integers(0, 256, (27, 48, 3), dtype=np.uint8), (width, height),
                      interpolation=cv2.INTER_CUBIC).astype(np.int16)
    fine = rng.integers(-20, 21, (height, width, 3))
    return np.clip(base + fine, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(('source', 'target'), [
    ((1920, 1080), (640, 360)), ((1920, 1080), (480, 270)), ((1921, 1081), (640, 360)),
    ((1280, 720), (1000, 562))])
def test_the_fast_shrink_stays_close_to_an_area_resize(
        source: tuple[int, int], target: tuple[int, int]) -> None:
    image = _textured(*source)
    fast = shrink(image, target).astype(np.float64)
    area = cv2.resize(image, target, interpolation=cv2.INTER_AREA).astype(np.float64)
    plain = cv2.resize(image, target, interpolation=cv2.INTER_LINEAR).astype(np.float64)
    assert fast.shape == area.shape == (target[1], target[0], 3)
    # Pixel-level noise is the worst case for aliasing: still close to the area resize,
    # and far closer than plain bilinear sampling.
    error = np.sqrt(np.mean((fast - area) ** 2))
    assert error < 3.0
    if source[0] >= 2 * target[0]:  # below a factor 2 the last step is bilinear anyway
        assert error < 0.5 * np.sqrt(np.mean((plain - area) ** 2))


def test_halving_is_exactly_an_area_resize() -> None:
    image = _textured(640, 360)
    assert np.array_equal(shrink(image, (320, 180)),
                          cv2.resize(image, (320, 180), interpolation=cv2.INTER_AREA))
