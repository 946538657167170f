"""Depth Anything / DPT architectures, official-checkpoint conversion and strict loading.

Every model here has random weights made by the test: tiny configs for anything that
runs, full sizes only on the meta device (parameter counts, nothing allocated).
"""

from __future__ import annotations

import json
from pathlib import Path
import socket

from model_helpers import random_network, tiny_torch_model
import numpy as np
import pytest
from safetensors.torch import save_file
import torch

from endo_depth_ros import models
from endo_depth_ros.errors import BackendUnavailableError, ConfigError, ModelLoadError
from endo_depth_ros.models import depth_anything as da
from endo_depth_ros.models.preprocessing import network_size

RNG = np.random.default_rng(7)
IMAGE = RNG.integers(0, 256, (2, 48, 64, 3), np.uint8)


@pytest.fixture(scope='module')
def tiny() -> torch.nn.Module:
    return random_network(da.tiny_config('dav2'))


@pytest.fixture(scope='module')
def official_pth(tiny: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('official') / 'depth_anything_v2_tiny.pth'
    torch.save(da.hf_to_official(tiny.state_dict()), path)
    return path


@pytest.mark.parametrize(('name', 'millions'), [
    ('dav2-s', 24.8), ('dav2-b', 97.5), ('dav2-l', 335.3),
    ('dav1-s', 24.8), ('dav2-metric-l', 335.3), ('dpt-large', 343.0), ('dpt-hybrid', 122.4),
])
def test_full_size_parameter_counts(name: str, millions: float) -> None:
    network = da.build_network(da.make_config(name), device='meta')
    count = sum(p.numel() for p in network.parameters())
    assert count / 1e6 == pytest.approx(millions, abs=0.05)


@pytest.mark.parametrize(('name', 'features', 'out_channels', 'out_indices'), [
    ('dav2-s', 64, [48, 96, 192, 384], [3, 6, 9, 12]),
    ('dav2-b', 128, [96, 192, 384, 768], [3, 6, 9, 12]),
    ('dav2-l', 256, [256, 512, 1024, 1024], [5, 12, 18, 24]),
    ('dav1-s', 64, [48, 96, 192, 384], [9, 10, 11, 12]),
    ('dav1-l', 256, [256, 512, 1024, 1024], [21, 22, 23, 24]),
])
def test_configs_match_the_official_repositories(
    name: str, features: int, out_channels: list[int], out_indices: list[int],
) -> None:
    config = da.make_config(name)
    assert config.fusion_hidden_size == features
    assert list(config.neck_hidden_sizes) == out_channels
    # transformers counts the embedding output as hidden state 0: block i is index i + 1.
    assert list(config.backbone_config.out_indices) == out_indices


def test_metric_config_has_a_sigmoid_head_scaled_to_max_depth() -> None:
    config = da.make_config('dav2-metric-s')
    assert config.depth_estimation_type == 'metric'
    assert config.max_depth == da.DEFAULT_MAX_DEPTH


@pytest.mark.parametrize(('name', 'spec'), [
    ('dav2-metric-b', da.NameSpec('dav2', 'b', True)),
    ('dav1', da.NameSpec('dav1', None, False)),
    ('dpt-hybrid', da.NameSpec('dpt', 'hybrid', False)),
])
def test_parse_name(name: str, spec: da.NameSpec) -> None:
    assert da.parse_name(name) == spec


def test_official_layout_uses_fused_qkv_and_reversed_refinenets(
    tiny: torch.nn.Module,
) -> None:
    hf = tiny.state_dict()
    official = da.hf_to_official(hf)
    assert all(k.startswith(('pretrained.', 'depth_head.')) for k in official)
    qkv = official['pretrained.blocks.1.attn.qkv.weight']
    prefix = 'backbone.encoder.layer.1.attention'
    expected = torch.cat([hf[f'{prefix}.{n}_proj.weight'] for n in 'qkv'])
    assert torch.equal(qkv, expected)
    assert torch.equal(official['depth_head.scratch.refinenet4.out_conv.weight'],
                       hf['neck.fusion_stage.layers.0.projection.weight'])
    assert torch.equal(official['depth_head.scratch.refinenet1.resConfUnit2.conv1.bias'],
                       hf['neck.fusion_stage.layers.3.residual_layer2.convolution1.bias'])
    assert torch.equal(official['depth_head.scratch.output_conv2.2.weight'],
                       hf['head.conv3.weight'])


def test_conversion_round_trip_is_lossless(tiny: torch.nn.Module) -> None:
    hf = tiny.state_dict()
    back = da.official_to_hf(da.hf_to_official(hf))
    assert back.keys() == hf.keys()
    assert all(torch.equal(back[k], hf[k]) for k in hf)


def test_official_pth_loads_with_identical_outputs(
    tiny: torch.nn.Module, official_pth: Path,
) -> None:
    loaded = models.load('dav2', official_pth, device='cpu', input_size=28)
    assert loaded.output_kind == 'relative_disparity'
    np.testing.assert_array_equal(loaded.infer(IMAGE), tiny_torch_model(tiny).infer(IMAGE))


def test_hf_folder_loads_offline_with_identical_outputs(
    tiny: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    tiny.save_pretrained(tmp_path)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')

    def no_network(*args: object) -> None:
        raise AssertionError(f'network access attempted: {args}')

    monkeypatch.setattr(socket.socket, 'connect', no_network)
    loaded = models.load('dav2', tmp_path, device='cpu', input_size=28)
    np.testing.assert_array_equal(loaded.infer(IMAGE), tiny_torch_model(tiny).infer(IMAGE))


def test_hf_folder_of_older_transformers_loads(tiny: torch.nn.Module, tmp_path: Path) -> None:
    # transformers 4.x named the DINOv2 attention query/key/value/output.dense and
    # stored max_depth null for relative models.
    legacy = {}
    for key, value in tiny.state_dict().items():
        for new, old in (('.q_proj.', '.attention.query.'), ('.k_proj.', '.attention.key.'),
                         ('.v_proj.', '.attention.value.'), ('.o_proj.', '.output.dense.')):
            key = key.replace(new, old)
        legacy[key] = value.contiguous()
    assert any('.attention.attention.query.' in k for k in legacy)
    save_file(legacy, str(tmp_path / 'model.safetensors'))
    config = tiny.config.to_dict()
    config['max_depth'] = None
    (tmp_path / 'config.json').write_text(json.dumps(config))
    loaded = models.load('dav2', tmp_path, device='cpu', input_size=28)
    np.testing.assert_array_equal(loaded.infer(IMAGE), tiny_torch_model(tiny).infer(IMAGE))


def test_single_hf_layout_file_loads(tiny: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / 'finetuned.safetensors'
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(path))
    loaded = models.load('dav2', path, device='cpu', input_size=28)
    np.testing.assert_array_equal(loaded.infer(IMAGE), tiny_torch_model(tiny).infer(IMAGE))


def test_wrapped_data_parallel_checkpoint_loads(tiny: torch.nn.Module, tmp_path: Path) -> None:
    official = da.hf_to_official(tiny.state_dict())
    path = tmp_path / 'ddp.pth'
    torch.save({'model': {f'module.{k}': v for k, v in official.items()}}, path)
    loaded = models.load('dav2', path, device='cpu', input_size=28)
    np.testing.assert_array_equal(loaded.infer(IMAGE), tiny_torch_model(tiny).infer(IMAGE))


def test_missing_key_is_listed_with_the_file(tiny: torch.nn.Module, tmp_path: Path) -> None:
    official = da.hf_to_official(tiny.state_dict())
    del official['depth_head.scratch.refinenet2.out_conv.weight']
    path = tmp_path / 'tampered.pth'
    torch.save(official, path)
    with pytest.raises(ModelLoadError,
                       match=r'tampered\.pth.*missing keys \[1\]: '
                             r'depth_head\.scratch\.refinenet2\.out_conv\.weight'):
        models.load('dav2', path)


def test_wrong_shape_is_listed_with_both_shapes(tiny: torch.nn.Module, tmp_path: Path) -> None:
    official = da.hf_to_official(tiny.state_dict())
    official['depth_head.scratch.output_conv1.weight'] = torch.zeros(3, 16, 3, 3)
    path = tmp_path / 'tampered.pth'
    torch.save(official, path)
    with pytest.raises(ModelLoadError,
                       match=r'shape mismatches \[1\]: depth_head\.scratch\.output_conv1\.weight '
                             r'\(file \(3, 16, 3, 3\), model \(8, 16, 3, 3\)\)'):
        models.load('dav2', path)


def test_unexpected_key_is_listed(tiny: torch.nn.Module, tmp_path: Path) -> None:
    official = da.hf_to_official(tiny.state_dict())
    official['depth_head.extra.weight'] = torch.zeros(1)
    path = tmp_path / 'extra.pth'
    torch.save(official, path)
    with pytest.raises(ModelLoadError, match=r'unexpected keys \[1\]: depth_head\.extra\.weight'):
        models.load('dav2', path)


def test_sized_name_rejects_a_checkpoint_of_another_size(official_pth: Path) -> None:
    with pytest.raises(ModelLoadError, match=r'hidden size 64 and 4 blocks, not the vits'):
        models.load('dav2-s', official_pth)


def test_text_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / 'notes.pth'
    path.write_text('not a checkpoint')
    with pytest.raises(ModelLoadError, match=r'notes\.pth is not a PyTorch/safetensors checkpoint'):
        models.load('dav2-s', path)


def test_state_dict_of_another_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(1), 'fc.bias': torch.zeros(1)}, path)
    with pytest.raises(ModelLoadError, match=r'resnet\.pth is not a Depth Anything or DPT'):
        models.load('dav2-s', path)


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r'without config\.json'):
        models.load('dav2-s', tmp_path)


def test_folder_of_another_model_type_is_refused(tmp_path: Path) -> None:
    (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'bert'}))
    with pytest.raises(ModelLoadError, match="model_type 'bert'"):
        models.load('dav2-s', tmp_path)


def test_relative_folder_under_a_metric_name_is_refused(
    tiny: torch.nn.Module, tmp_path: Path,
) -> None:
    tiny.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="relative Depth Anything model, not 'dav2-metric'"):
        models.load('dav2-metric', tmp_path)


def test_metric_model_outputs_metres_below_max_depth(tmp_path: Path) -> None:
    network = random_network(da.tiny_config('dav2', metric=True), seed=3)
    torch.save(da.hf_to_official(network.state_dict()), tmp_path / 'metric.pth')
    model = models.load('dav2-metric', tmp_path / 'metric.pth', device='cpu', input_size=28)
    depth = model.infer(IMAGE[0])
    assert model.output_kind == 'metric_depth'
    assert depth.min() >= 0.0 and depth.max() <= da.DEFAULT_MAX_DEPTH * (1 + 1e-6)


def test_dav1_checkpoint_uses_the_last_four_blocks(tmp_path: Path) -> None:
    network = random_network(da.tiny_config('dav1'), seed=4)
    torch.save(da.hf_to_official(network.state_dict()), tmp_path / 'v1.pth')
    model = models.load('dav1', tmp_path / 'v1.pth', device='cpu', input_size=28)
    reference = tiny_torch_model(network, 'dav1').infer(IMAGE)
    np.testing.assert_array_equal(model.infer(IMAGE), reference)


def test_dpt_folder_loads(tmp_path: Path) -> None:
    network = random_network(da.tiny_config('dpt'), seed=5)
    network.save_pretrained(tmp_path)
    model = models.load('dpt-large', tmp_path, device='cpu', input_size=64)
    reference = da.TorchDepthModel(network, name='dpt-large', output_kind='relative_disparity',
                                   device='cpu', input_size=64)
    out = model.infer(IMAGE)
    assert out.shape == (2, 48, 64)
    assert model.input_size == (64, 64)  # transformers' DPT needs a square token grid
    np.testing.assert_array_equal(out, reference.infer(IMAGE))


def test_dpt_name_refuses_a_depth_anything_file(official_pth: Path) -> None:
    with pytest.raises(ModelLoadError, match="Depth Anything model, not 'dpt-large'"):
        models.load('dpt-large', official_pth)


@pytest.mark.parametrize(('size', 'input_size', 'multiple', 'expected'), [
    ((266, 350), 266, 14, (266, 350)),
    ((480, 640), 518, 14, (518, 686)),  # transformers' reference output size for COCO
    ((640, 480), 518, 14, (686, 518)),
    ((100, 100), 500, 14, (504, 504)),
    ((480, 640), 384, 32, (384, 512)),
])
def test_network_size_keeps_aspect_with_patch_multiples(
    size: tuple[int, int], input_size: int, multiple: int, expected: tuple[int, int],
) -> None:
    assert network_size(*size, input_size, multiple) == expected


def test_output_is_at_input_resolution_and_batch_matches_frames(
    tiny: torch.nn.Module,
) -> None:
    model = tiny_torch_model(tiny)
    batch = model.infer(IMAGE)
    assert batch.shape == (2, 48, 64) and batch.dtype == np.float32
    assert model.input_size == (28, 42)
    np.testing.assert_allclose(batch[1], model.infer(IMAGE[1]), rtol=1e-4, atol=1e-5)


def test_cuda_without_a_gpu_is_refused_not_silently_cpu(official_pth: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="Device 'cuda' requested but CUDA"):
        models.load('dav2', official_pth, device='cuda', input_size=28)


def test_fp16_on_cpu_is_refused(official_pth: Path) -> None:
    with pytest.raises(ConfigError, match="'fp16' needs a CUDA device"):
        models.load('dav2', official_pth, device='cpu', precision='fp16', input_size=28)


def test_auto_device_and_precision_resolve_to_cpu_fp32(official_pth: Path) -> None:
    model = models.load('dav2', official_pth, input_size=28)
    assert (model.device, model.precision, model.backend) == ('cpu', 'fp32', 'torch')
