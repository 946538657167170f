"""ZoeDepth Hugging Face folders: offline strict loading, the processor's pipeline, ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from endo_depth_ros import models
from endo_depth_ros.errors import ModelLoadError
from endo_depth_ros.models.onnx_runtime import export_onnx
from endo_depth_ros.models.zoedepth import ZoePreprocessing, padding


def _tiny_zoedepth() -> torch.nn.Module:
    from transformers import BeitConfig, ZoeDepthConfig, ZoeDepthForDepthEstimation

    backbone = BeitConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
        image_size=64, patch_size=16, out_indices=[1, 2, 3, 4], use_relative_position_bias=True,
        reshape_hidden_states=False, layer_scale_init_value=0.1)
    config = ZoeDepthConfig(
        backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
        bottleneck_features=16, num_relative_features=8, bin_embedding_dim=8,
        num_attractors=[4, 2, 2, 1],
        bin_configurations=[{'n_bins': 8, 'min_depth': 0.001, 'max_depth': 10.0}],
        patch_transformer_hidden_size=8, patch_transformer_intermediate_size=16,
        patch_transformer_num_attention_heads=2)
    network = ZoeDepthForDepthEstimation(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # outputs that vary with the image
        for key, tensor in network.state_dict().items():
            if tensor.dtype.is_floating_point and 'running_var' not in key:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.15)
    return network


@pytest.fixture(scope='module')
def network() -> torch.nn.Module:
    return _tiny_zoedepth()


@pytest.fixture(scope='module')
def folder(network: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('zoe') / 'zoedepth-tiny'
    network.save_pretrained(path)
    (path / 'preprocessor_config.json').write_text(json.dumps({
        'image_processor_type': 'ZoeDepthImageProcessor', 'size': {'height': 64, 'width': 96},
        'ensure_multiple_of': 32, 'keep_aspect_ratio': True, 'do_pad': True,
        'image_mean': [0.5, 0.5, 0.5], 'image_std': [0.5, 0.5, 0.5]}))
    return path


def test_folder_loads_offline_as_a_metric_model(folder: Path, network: torch.nn.Module) -> None:
    model = models.load('zoedepth', folder, device='cpu')
    assert model.output_kind == 'metric_depth'
    loaded = model.net.network  # type: ignore[attr-defined]
    assert sum(p.numel() for p in loaded.parameters()) == sum(
        p.numel() for p in network.parameters())
    assert model.net.pre == ZoePreprocessing(height=64, width=96)  # type: ignore[attr-defined]


def test_output_matches_the_processor_pipeline(folder: Path, network: torch.nn.Module) -> None:
    pil_processor = pytest.importorskip(
        'transformers.models.zoedepth.image_processing_pil_zoedepth')
    processor = pil_processor.ZoeDepthImageProcessorPil(
        size={'height': 64, 'width': 96}, ensure_multiple_of=32)
    model = models.load('zoedepth', folder, device='cpu')
    rgb = np.random.default_rng(0).integers(0, 256, (50, 70, 3), np.uint8)
    inputs = processor(images=rgb, return_tensors='pt')
    assert model.network_size(50, 70) == tuple(inputs['pixel_values'].shape[-2:])
    with torch.no_grad():
        raw = network(**inputs).predicted_depth[:, None]
    # The processor's post-processing (torchvision): bicubic to the padded size, crop.
    pad_h, pad_w = padding(50, 70)
    expected = torch.nn.functional.interpolate(
        raw, size=(50 + 2 * pad_h, 70 + 2 * pad_w), mode='bicubic', align_corners=False,
    )[0, 0, pad_h:pad_h + 50, pad_w:pad_w + 70].numpy()
    got = model.infer(rgb)
    assert got.shape == (50, 70)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) <= 1e-5
    assert float(expected.std()) > 1e-3 * float(expected.mean())  # not a constant map


def test_onnx_export_matches_torch(folder: Path, tmp_path: Path) -> None:
    model = models.load('zoedepth', folder, device='cpu')
    path = export_onnx(model, tmp_path / 'zoe.onnx', 50, 70)
    exported = models.load('zoedepth', path, backend='onnxruntime', device='cpu')
    assert exported.output_kind == 'metric_depth'
    rgb = np.random.default_rng(1).integers(0, 256, (50, 70, 3), np.uint8)
    expected = model.infer(rgb)
    assert np.abs(exported.infer(rgb) - expected).max() <= 1e-4 * np.abs(expected).max()


def test_depth_anything_folder_is_not_zoedepth(tmp_path: Path) -> None:
    (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'depth_anything'}))
    with pytest.raises(ModelLoadError, match="model_type 'depth_anything'; expected 'zoedepth'"):
        models.load('zoedepth', tmp_path, device='cpu')


def test_original_pt_file_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / 'ZoeD_M12_N.pt'
    torch.save({'model': {'core.core.pretrained.model.cls_token': torch.zeros(1)}}, path)
    with pytest.raises(ModelLoadError, match='must be converted with transformers'):
        models.load('zoedepth', path, device='cpu')


def test_missing_tensors_are_refused(folder: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'config.json').write_text((folder / 'config.json').read_text())
    state = load_file(str(folder / 'model.safetensors'))
    state.pop(sorted(state)[0])
    save_file(state, str(broken / 'model.safetensors'))
    with pytest.raises(ModelLoadError, match=r'do not fit .zoedepth.: missing keys \[1\]'):
        models.load('zoedepth', broken, device='cpu')
