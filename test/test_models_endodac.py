"""EndoDAC: official depth_model.pth layout loads strictly, adapters merge exactly, ONNX export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from endo_depth_ros import models
from endo_depth_ros.errors import ModelLoadError
from endo_depth_ros.models import endodac
from endo_depth_ros.models.frame_network import count_parameters
from endo_depth_ros.models.onnx_runtime import export_onnx

#: Plain torch fp32 (``auto`` would pick OpenVINO/bf16): these tests check the torch network.
TORCH_FP32: dict[str, str] = {'device': 'cpu', 'backend': 'torch', 'precision': 'fp32'}

TINY: dict[str, Any] = {'hidden_size': 64, 'num_layers': 4, 'num_heads': 2, 'features': 16,
                        'out_channels': (8, 16, 32, 64), 'neck_blocks': (1, 3),
                        'image_size': 98, 'head_hidden_size': 8, 'train_size': (64, 80)}


def _tiny_network(seed: int = 0) -> endodac.EndoDACNetwork:
    network = endodac.build_endodac(**TINY)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # outputs that vary (the default init makes tiny heads constant)
        for tensor in network.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return network.eval()


@pytest.fixture(scope='module')
def network() -> endodac.EndoDACNetwork:
    return _tiny_network()


@pytest.fixture(scope='module')
def official(network: endodac.EndoDACNetwork) -> dict[str, Any]:
    return endodac.hf_to_official(network, rank=3, dv=True)


@pytest.fixture(scope='module')
def checkpoint(official: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('endodac') / 'depth_model.pth'
    torch.save(official, path)
    return path


def test_official_layout_has_the_authors_key_names(official: dict[str, Any]) -> None:
    for key in ('encoder.blocks.0.mlp.fc1.lora_A', 'encoder.blocks.3.mlp.fc2.lora_V',
                'encoder.blocks.1.residual_.conv2.weight', 'encoder.blocks.3.residual_.norm3.bias',
                'encoder.blocks.0.attn.qkv.weight', 'encoder.pos_embed',
                'depth_head.conv_depth_1.head.4.weight', 'depth_head.conv_depth_4.head.0.bias',
                'depth_head.scratch.refinenet4.resConfUnit2.conv1.weight'):
        assert key in official, key
    assert (official['height'], official['width']) == (64, 80)


def test_checkpoint_loads_strictly_with_the_right_shapes(
    checkpoint: Path, official: dict[str, Any], network: endodac.EndoDACNetwork,
) -> None:
    model = models.load('endodac', checkpoint, **TORCH_FP32)
    assert model.output_kind == 'relative_disparity'
    assert model.network_size(480, 640) == (64, 80)  # the training size, whatever the image
    loaded = model.net.network  # type: ignore[attr-defined]
    assert loaded.vit_size == (56, 70)  # training size * 14 / 16, as (224, 280) for 256x320
    assert count_parameters(loaded) == count_parameters(network)
    adapters = sum(v.numel() for k, v in official.items() if '.lora_' in k)
    coarse_heads = sum(v.numel() for k, v in official.items() if 'conv_depth_' in k
                       and 'conv_depth_1' not in k)
    tensors = sum(v.numel() for v in official.values() if isinstance(v, torch.Tensor))
    assert count_parameters(loaded) == tensors - adapters - coarse_heads
    out = model.infer(np.random.default_rng(0).integers(0, 256, (50, 90, 3), np.uint8))
    assert out.shape == (50, 90) and np.isfinite(out).all()


class _AdapterLinear(torch.nn.Module):
    """The authors' DV-LoRA forward pass: base linear plus ``x (A U)^T (B V)^T``."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.t = tensors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.t
        base = torch.nn.functional.linear(x, t['weight'], t['bias'])
        return base + x @ (t['lora_A'] * t['lora_U']).T @ (t['lora_B'] * t['lora_V']).T


def test_merged_network_equals_the_adapter_forward_pass(
    checkpoint: Path, official: dict[str, Any],
) -> None:
    merged = models.load('endodac', checkpoint, **TORCH_FP32).net.network  # type: ignore[attr-defined]
    unmerged = endodac.build_endodac(**TINY)
    unmerged.load_state_dict(merged.state_dict())
    for i, layer in enumerate(unmerged.depth_anything.backbone.encoder.layer):
        for fc in ('fc1', 'fc2'):
            prefix = f'encoder.blocks.{i}.mlp.{fc}.'
            tensors = {k[len(prefix):]: v for k, v in official.items() if k.startswith(prefix)}
            assert set(tensors) == {'weight', 'bias', 'lora_A', 'lora_B', 'lora_U', 'lora_V'}
            setattr(layer.mlp, fc, _AdapterLinear(tensors))
    x = torch.rand(2, 3, 70, 90)
    with torch.no_grad():
        reference, plain = unmerged.eval()(x), merged(x)
    assert float((plain - reference).norm() / reference.norm()) <= 1e-5
    assert float((reference - reference.mean()).abs().mean()) > 1e-3  # not a constant map


def test_plain_lora_checkpoints_use_one_over_rank(network: endodac.EndoDACNetwork,
                                                  tmp_path: Path) -> None:
    path = tmp_path / 'depth_model.pth'
    torch.save(endodac.hf_to_official(network, rank=2, dv=False), path)
    loaded = models.load('endodac', path, **TORCH_FP32).net.network  # type: ignore[attr-defined]
    x = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.allclose(loaded(x), network(x), rtol=1e-5, atol=1e-6)


def test_sigmoid_maps_to_disp_to_depth_range(network: endodac.EndoDACNetwork) -> None:
    net = _tiny_network(seed=1)
    head = net.depth_anything.head.conv3
    x = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        head.weight.zero_()
        for bias, expected in ((40.0, 1 / 0.1), (-40.0, 1 / 150)):
            head.bias.fill_(bias)
            out = net(x)
            assert out.shape == (1, 1, 64, 80)  # ViT input 56x70, output x 16 / 14
            assert torch.allclose(out, torch.full_like(out, expected), rtol=1e-5)


def test_unexpected_and_missing_tensors_are_listed(official: dict[str, Any],
                                                   tmp_path: Path) -> None:
    broken = dict(official)
    broken['encoder.blocks.0.extra.weight'] = torch.zeros(2)
    del broken['depth_head.scratch.layer2_rn.weight']
    torch.save(broken, tmp_path / 'depth_model.pth')
    with pytest.raises(ModelLoadError, match=r'missing keys \[1\]: depth_anything\.neck\.convs\.1'
                                             r'\.weight; unexpected keys \[1\]: '):
        models.load('endodac', tmp_path, device='cpu')


def test_incomplete_adapter_is_refused(official: dict[str, Any], tmp_path: Path) -> None:
    broken = {k: v for k, v in official.items() if k != 'encoder.blocks.2.mlp.fc1.lora_B'}
    torch.save(broken, tmp_path / 'depth_model.pth')
    with pytest.raises(ModelLoadError,
                       match=r"incomplete adapter at 'encoder\.blocks\.2\.mlp\.fc1'"):
        models.load('endodac', tmp_path / 'depth_model.pth', device='cpu')


def test_depth_anything_checkpoint_is_not_endodac(tmp_path: Path) -> None:
    torch.save({'pretrained.cls_token': torch.zeros(1, 1, 64)}, tmp_path / 'dav2.pth')
    with pytest.raises(ModelLoadError, match=r'is not an EndoDAC depth_model\.pth'):
        models.load('endodac', tmp_path / 'dav2.pth', device='cpu')


def test_onnx_export_matches_torch(checkpoint: Path, tmp_path: Path) -> None:
    model = models.load('endodac', checkpoint, **TORCH_FP32)
    path = export_onnx(model, tmp_path / 'endodac.onnx', 60, 84)
    exported = models.load('endodac', path, backend='onnxruntime', device='cpu')
    rgb = np.random.default_rng(3).integers(0, 256, (60, 84, 3), np.uint8)
    expected = model.infer(rgb)
    assert np.abs(exported.infer(rgb) - expected).max() <= 1e-4 * np.abs(expected).max()
