"""ONNX export, the onnxruntime backend and the TensorRT backend's availability check."""

from __future__ import annotations

from pathlib import Path

from model_helpers import random_network, tiny_torch_model
import numpy as np
import onnx
import pytest
import torch

from endo_depth_ros import models
from endo_depth_ros.errors import (
    BackendUnavailableError,
    BadInputError,
    ConfigError,
    ModelLoadError,
)
from endo_depth_ros.models import depth_anything as da
from endo_depth_ros.models.onnx_runtime import OnnxDepthModel, export_onnx, read_metadata
from endo_depth_ros.models.tensorrt import engine_key, missing_requirements

HEIGHT, WIDTH = 48, 64
RNG = np.random.default_rng(11)
IMAGES = RNG.integers(0, 256, (3, HEIGHT, WIDTH, 3), np.uint8)


@pytest.fixture(scope='module')
def torch_model() -> da.TorchDepthModel:
    return tiny_torch_model(random_network(da.tiny_config('dav2'), 0))


@pytest.fixture(scope='module')
def exported(torch_model: da.TorchDepthModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(torch_model, tmp_path_factory.mktemp('onnx') / 'tiny.onnx', HEIGHT, WIDTH)


def test_onnxruntime_matches_torch(torch_model: da.TorchDepthModel, exported: Path) -> None:
    model = models.load('dav2', exported, backend='onnxruntime', device='cpu')
    reference = torch_model.infer(IMAGES)
    out = model.infer(IMAGES)
    assert out.shape == (3, HEIGHT, WIDTH) and out.dtype == np.float32
    assert reference.std() > 0.01 * np.abs(reference).max()  # a non-trivial map
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_onnxruntime_reports_the_exported_model(exported: Path) -> None:
    model = models.load('dav2', exported, backend='onnxruntime', device='cpu')
    assert (model.name, model.output_kind, model.backend) == ('dav2', 'relative_disparity',
                                                             'onnxruntime')
    assert (model.device, model.precision) == ('cpu', 'fp32')
    assert model.input_size == (28, 42)


def test_metadata_records_image_and_network_size(exported: Path) -> None:
    meta = read_metadata(exported)
    assert (meta['image_height'], meta['image_width']) == (str(HEIGHT), str(WIDTH))
    assert (meta['network_height'], meta['network_width']) == ('28', '42')


def test_other_image_size_raises_instead_of_a_wrong_map(exported: Path) -> None:
    model = models.load('dav2', exported, backend='onnxruntime', device='cpu')
    with pytest.raises(BadInputError, match=r'exported for 48x64 images but got 64x64') as info:
        model.infer(np.zeros((64, 64, 3), np.uint8))
    assert info.value.reason == 'size_mismatch'


def test_static_batch_export_still_runs_batches(
    torch_model: da.TorchDepthModel, tmp_path: Path,
) -> None:
    path = export_onnx(torch_model, tmp_path / 'static.onnx', HEIGHT, WIDTH, dynamic_batch=False)
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    out = OnnxDepthModel(path, name='dav2', device='cpu').infer(IMAGES)
    np.testing.assert_allclose(out, torch_model.infer(IMAGES), rtol=1e-4,
                               atol=1e-4 * np.abs(out).max())


def test_fp16_graph_runs_and_reports_fp16(torch_model: da.TorchDepthModel, tmp_path: Path) -> None:
    path = export_onnx(torch_model, tmp_path / 'half.onnx', HEIGHT, WIDTH, precision='fp16')
    model = OnnxDepthModel(path, name='dav2', device='cpu')
    out = model.infer(IMAGES[0])
    reference = torch_model.infer(IMAGES[0])
    assert model.precision == 'fp16' and out.dtype == np.float32
    assert np.abs(out - reference).max() < 0.02 * np.abs(reference).max()


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_onnx_without_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / 'plain.onnx'
    torch.onnx.export(torch.nn.ReLU(), (torch.zeros(1),), str(path), dynamo=False)
    with pytest.raises(ModelLoadError, match='lacks the endo_depth_ros metadata'):
        models.load('dav2', path, backend='onnxruntime')


def test_garbage_file_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / 'garbage.onnx'
    path.write_bytes(b'\x00\x01garbage')
    with pytest.raises(ModelLoadError, match=r'garbage\.onnx is not a readable ONNX file'):
        models.load('dav2', path, backend='onnxruntime')


def test_export_of_another_family_is_refused(exported: Path) -> None:
    with pytest.raises(ModelLoadError, match="exported from 'dav2', not 'dpt-large'"):
        models.load('dpt-large', exported, backend='onnxruntime')


def test_onnxruntime_cuda_without_provider_is_refused(exported: Path) -> None:
    with pytest.raises(BackendUnavailableError, match='no CUDA/TensorRT execution provider'):
        models.load('dav2', exported, backend='onnxruntime', device='cuda')


def test_onnxruntime_fp16_on_fp32_graph_is_refused(exported: Path) -> None:
    with pytest.raises(ConfigError, match='TensorRT execution provider'):
        models.load('dav2', exported, backend='onnxruntime', device='cpu', precision='fp16')


def test_photometric_cannot_be_exported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='Only torch network models'):
        export_onnx(models.load('photometric'), tmp_path / 'p.onnx', HEIGHT, WIDTH)


def test_tensorrt_names_what_is_missing(exported: Path) -> None:
    missing = missing_requirements()
    assert missing, 'this machine has TensorRT and CUDA: run the gpu tests instead'
    with pytest.raises(BackendUnavailableError,
                       match=r"backend 'tensorrt' is unavailable: missing .*CUDA device"):
        models.load('dav2', exported, backend='tensorrt')


def test_engine_key_changes_with_everything_an_engine_depends_on() -> None:
    base = engine_key(b'model', (8, 48, 64, 3), 'fp16', '10.3.0', 'NVIDIA RTX A4000')
    variants = [
        engine_key(b'other', (8, 48, 64, 3), 'fp16', '10.3.0', 'NVIDIA RTX A4000'),
        engine_key(b'model', (8, 64, 64, 3), 'fp16', '10.3.0', 'NVIDIA RTX A4000'),
        engine_key(b'model', (8, 48, 64, 3), 'fp32', '10.3.0', 'NVIDIA RTX A4000'),
        engine_key(b'model', (8, 48, 64, 3), 'fp16', '10.4.0', 'NVIDIA RTX A4000'),
        engine_key(b'model', (8, 48, 64, 3), 'fp16', '10.3.0', 'Orin'),
    ]
    assert len({base, *variants}) == 6
    assert base == engine_key(b'model', (8, 48, 64, 3), 'fp16', '10.3.0', 'NVIDIA RTX A4000')
    assert '/' not in base and ' ' not in base
