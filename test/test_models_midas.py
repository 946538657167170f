"""Original MiDaS v3 (isl-org/MiDaS) checkpoints: key layout, strict loading, preprocessing.

Official-layout state dicts are built from the project's own definitions (random
weights); the key names and counts below are those of the official ``DPTDepthModel``
with a timm ViT-L/16 (``dpt_large_384.pt``) and with timm's ``vit_base_resnet50_384``
(``dpt_hybrid_384.pt``: 368 tensors, 123,146,985 values, read from the official code).
"""

from __future__ import annotations

from pathlib import Path
import re

from model_helpers import random_network
import numpy as np
import pytest
import torch

from endo_depth_ros import models
from endo_depth_ros.errors import ModelLoadError
from endo_depth_ros.models import depth_anything as da
from endo_depth_ros.models import midas
from endo_depth_ros.models.onnx_runtime import export_onnx
from endo_depth_ros.models.preprocessing import MIDAS_V3, recipe_size


def _pattern(key: str) -> str:
    return re.sub(r'\.\d+\.', '.N.', key)


def test_full_size_official_layout_and_parameter_count() -> None:
    network = da.build_network(da.make_config('midas-dpt-large'), device='meta')
    official = midas.hf_to_official(network.state_dict())
    # The official file also holds timm's 1000-class classifier (1024 x 1000 + 1000).
    assert sum(v.numel() for v in official.values()) + 1025000 == 344055465
    assert len(official) + 2 == 368
    assert all(k.startswith(('pretrained.model.', 'pretrained.act_postprocess', 'scratch.'))
               for k in official)
    patterns = {_pattern(k) for k in official}
    for expected in ('pretrained.model.blocks.N.attn.qkv.weight',
                     'pretrained.act_postprocess1.N.project.N.weight',
                     'scratch.refinenet4.resConfUnit2.conv1.bias',
                     'scratch.output_conv.N.weight', 'scratch.layer4_rn.weight'):
        assert expected in patterns
    assert official['pretrained.model.blocks.0.attn.qkv.weight'].shape == (3072, 1024)
    assert official['pretrained.act_postprocess4.4.weight'].shape == (1024, 1024, 3, 3)
    assert 'pretrained.act_postprocess3.4.weight' not in official  # stage 3 keeps its size
    assert network.config.layer_norm_eps == 1e-6  # timm's ViT LayerNorm


@pytest.fixture(scope='module')
def tiny() -> torch.nn.Module:
    return random_network(da.tiny_config('midas'), seed=2)


@pytest.mark.parametrize('variant', ['tiny', 'tiny_hybrid'])
def test_conversion_round_trip_is_lossless(variant: str, request: pytest.FixtureRequest) -> None:
    network: torch.nn.Module = request.getfixturevalue(variant)
    state = network.state_dict()
    official = midas.hf_to_official(state)
    assert not any(k.startswith(('dpt.', 'neck.', 'head.')) for k in official)
    if variant == 'tiny_hybrid':
        assert any(k.startswith(midas.OFFICIAL_RESNET + 'stages.0.blocks.0.') for k in official)
    official[midas.UNUSED_PREFIX + 'weight'] = torch.zeros(1000, 32)  # the classifier
    back = midas.official_to_hf(official)
    assert back.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(back[key], value, rtol=0, atol=0)


def test_converted_weights_load_strictly_and_give_identical_outputs(
    tiny: torch.nn.Module,
) -> None:
    fresh = da.build_network(da.tiny_config('midas'))
    fresh.load_state_dict(midas.official_to_hf(midas.hf_to_official(tiny.state_dict())),
                          strict=True)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fresh(pixel_values=x).predicted_depth,
                                   tiny(pixel_values=x).predicted_depth)


def test_non_square_inputs_use_the_inputs_token_grid(tiny: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        depth = tiny(pixel_values=x).predicted_depth
    assert depth.shape == (2, 64, 96)
    # Square inputs: identical to transformers' own forward.
    plain = type(tiny).__mro__[1]
    square = x[..., :64]
    with torch.no_grad():
        ours = tiny(pixel_values=square).predicted_depth
        theirs = plain.forward(tiny, pixel_values=square).predicted_depth
    torch.testing.assert_close(ours, theirs)


def test_official_file_under_the_large_name_lists_the_mismatches(
    tiny: torch.nn.Module, tmp_path: Path,
) -> None:
    path = tmp_path / 'dpt_large_384.pt'
    torch.save(midas.hf_to_official(tiny.state_dict()), path)
    with pytest.raises(ModelLoadError, match=r"do not fit 'midas-dpt-large'.*shape mismatches"):
        models.load('midas-dpt-large', path, device='cpu')


def test_official_file_under_a_depth_anything_or_hf_dpt_name_is_refused(
    tiny: torch.nn.Module, tmp_path: Path,
) -> None:
    path = tmp_path / 'dpt_large_384.pt'
    torch.save({'model': midas.hf_to_official(tiny.state_dict())}, path)
    for name in ('dav2-s', 'dpt-large'):
        with pytest.raises(ModelLoadError, match='use midas-dpt-large'):
            models.load(name, path, device='cpu')


# ------------------------------------------------------------------ DPT-Hybrid


def test_hybrid_full_size_official_layout_and_parameter_count() -> None:
    network = da.build_network(da.make_config('midas-dpt-hybrid'), device='meta')
    official = midas.hf_to_official(network.state_dict())
    # The official file also holds timm's 1000-class classifier (768 x 1000 + 1000).
    assert len(official) + 2 == 368
    assert sum(v.numel() for v in official.values()) + 769000 == 123146985
    patterns = {_pattern(k) for k in official}
    for expected in ('pretrained.model.patch_embed.backbone.stem.conv.weight',
                     'pretrained.model.patch_embed.backbone.stem.norm.bias',
                     'pretrained.model.patch_embed.backbone.stages.N.blocks.N.downsample.conv.weight',
                     'pretrained.model.patch_embed.backbone.stages.N.blocks.N.norm3.weight',
                     'pretrained.model.patch_embed.proj.weight',
                     'pretrained.model.blocks.N.attn.qkv.bias',
                     'pretrained.act_postprocess3.N.project.N.weight',
                     'pretrained.act_postprocess4.N.weight',
                     'scratch.refinenet1.out_conv.weight', 'scratch.output_conv.N.bias'):
        assert expected in patterns
    # ResNet-50 stages of 3, 4 and 9 bottlenecks; no tensors in act_postprocess1/2.
    stem = 'pretrained.model.patch_embed.backbone.'
    assert official[stem + 'stem.conv.weight'].shape == (64, 3, 7, 7)
    assert official[stem + 'stages.2.blocks.8.conv3.weight'].shape == (1024, 256, 1, 1)
    assert stem + 'stages.2.blocks.9.conv1.weight' not in official
    assert official['pretrained.model.patch_embed.proj.weight'].shape == (768, 1024, 1, 1)
    assert official['pretrained.model.pos_embed'].shape == (1, 577, 768)
    assert official['pretrained.act_postprocess4.4.weight'].shape == (768, 768, 3, 3)
    assert not any(k.startswith(('pretrained.act_postprocess1', 'pretrained.act_postprocess2'))
                   for k in official)
    assert 'pretrained.act_postprocess3.4.weight' not in official
    assert official['scratch.layer1_rn.weight'].shape == (256, 256, 3, 3)  # ResNet stage 1
    assert official['scratch.layer2_rn.weight'].shape == (256, 512, 3, 3)  # ResNet stage 2
    config = network.config
    assert config.layer_norm_eps == 1e-6  # timm's ViT LayerNorm
    assert config.backbone_config.global_padding.lower() == 'same'  # timm StdConv2dSame
    conv = network.dpt.embeddings.backbone.bit.embedder.convolution
    assert conv.eps == 1e-8 and conv.pad is not None  # weight standardisation, dynamic pad


@pytest.fixture(scope='module')
def tiny_hybrid() -> torch.nn.Module:
    return random_network(da.tiny_config('midas-hybrid'), seed=3)


def test_hybrid_runs_non_square_inputs_and_matches_transformers_when_square(
    tiny_hybrid: torch.nn.Module,
) -> None:
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        depth = tiny_hybrid(pixel_values=x).predicted_depth
    assert depth.shape == (2, 64, 96) and torch.isfinite(depth).all()
    # transformers itself refuses every size but image_size (64) for hybrids.
    plain = type(tiny_hybrid).__mro__[1]
    square = x[..., :64]
    with torch.no_grad():
        ours = tiny_hybrid(pixel_values=square).predicted_depth
        theirs = plain.forward(tiny_hybrid, pixel_values=square).predicted_depth
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.fixture
def tiny_hybrid_as_full_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let ``load`` build the tiny hybrid for 'midas-dpt-hybrid' (the real one has 122M
    parameters; its official key layout and count are checked on the meta device)."""
    monkeypatch.setattr(da, 'midas_config', lambda size: da.tiny_config(f'midas-{size}'))


@pytest.mark.usefixtures('tiny_hybrid_as_full_size')
def test_official_hybrid_file_loads_strictly_and_exports(
    tiny_hybrid: torch.nn.Module, tmp_path: Path,
) -> None:
    path = tmp_path / 'dpt_hybrid_384.pt'
    official = midas.hf_to_official(tiny_hybrid.state_dict())
    official[midas.UNUSED_PREFIX + 'weight'] = torch.zeros(1000, 32)
    official[midas.UNUSED_PREFIX + 'bias'] = torch.zeros(1000)
    torch.save(official, path)
    model = models.load('midas-dpt-hybrid', path, device='cpu', backend='torch',
                        precision='fp32', input_size=64)
    assert model.net.recipe is MIDAS_V3 and model.output_kind == 'relative_disparity'
    loaded = model.net.network.state_dict()
    assert loaded.keys() == tiny_hybrid.state_dict().keys()
    for key, value in tiny_hybrid.state_dict().items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    image = np.random.default_rng(5).integers(0, 256, (40, 72, 3), np.uint8)
    depth = model.infer(image)
    assert model.input_size == (32, 64)  # 64/72 is closer to 1 than 64/40
    assert depth.shape == (40, 72) and np.isfinite(depth).all() and depth.std() > 0
    exported = export_onnx(model, tmp_path / 'hybrid.onnx', 40, 72)
    onnx_model = models.load('midas-dpt-hybrid', exported, backend='onnxruntime', device='cpu')
    np.testing.assert_allclose(onnx_model.infer(image), depth, rtol=1e-4,
                               atol=1e-4 * float(np.abs(depth).max()))


@pytest.mark.usefixtures('tiny_hybrid_as_full_size')
def test_each_midas_file_under_the_other_midas_name_names_the_right_one(
    tiny: torch.nn.Module, tiny_hybrid: torch.nn.Module, tmp_path: Path,
) -> None:
    large, hybrid = tmp_path / 'dpt_large_384.pt', tmp_path / 'dpt_hybrid_384.pt'
    torch.save(midas.hf_to_official(tiny.state_dict()), large)
    torch.save(midas.hf_to_official(tiny_hybrid.state_dict()), hybrid)
    with pytest.raises(ModelLoadError, match=r'DPT-Hybrid .*not .midas-dpt-large.; '
                                             r'use midas-dpt-hybrid'):
        models.load('midas-dpt-large', hybrid, device='cpu')
    with pytest.raises(ModelLoadError, match=r'DPT-Large checkpoint, not .midas-dpt-hybrid.; '
                                             r'use midas-dpt-large'):
        models.load('midas-dpt-hybrid', large, device='cpu')
    for name in ('dav2-s', 'dpt-hybrid'):
        with pytest.raises(ModelLoadError, match='use midas-dpt-hybrid'):
            models.load(name, hybrid, device='cpu')


def test_hybrid_hf_folder_loads_under_both_names(
    tiny_hybrid: torch.nn.Module, tmp_path: Path,
) -> None:
    tiny_hybrid.save_pretrained(tmp_path)
    image = np.random.default_rng(6).integers(0, 256, (56, 88, 3), np.uint8)
    loaded = {name: models.load(name, tmp_path, device='cpu', backend='torch', input_size=64,
                                input_resize='official')
              for name in ('midas-dpt-hybrid', 'dpt-hybrid')}
    # MiDaS run.py keeps the aspect ratio; the Hugging Face processor squares the input.
    assert loaded['midas-dpt-hybrid'].network_size(56, 88) == (64, 96)
    assert loaded['dpt-hybrid'].network_size(56, 88) == (64, 64)
    for model in loaded.values():
        assert model.infer(image).shape == (56, 88)
    with pytest.raises(ModelLoadError, match='holds a dpt-hybrid model'):
        models.load('midas-dpt-large', tmp_path, device='cpu')


@pytest.mark.parametrize(('height', 'width', 'expected'), [
    (480, 640, (384, 512)),    # 384/480 is closer to 1 than 384/640: fit the height
    (1080, 1920, (384, 672)),  # 682.7 -> nearest multiple of 32
    (384, 384, (384, 384)),
    (300, 400, (288, 384)),    # 384/400 = 0.96 is closer to 1 than 384/300: fit the width
])
def test_midas_resize_rule(height: int, width: int, expected: tuple[int, int]) -> None:
    assert recipe_size(MIDAS_V3, height, width, 384) == expected


def test_midas_model_uses_the_official_recipe(tiny: torch.nn.Module, tmp_path: Path) -> None:
    model = da.TorchDepthModel(tiny, name='midas-dpt-large', output_kind='relative_disparity',
                               device='cpu', input_size=64)
    assert model.net.recipe is MIDAS_V3
    assert model.network_size(40, 72) == (32, 64)  # 64/72 is closer to 1 than 64/40
    out = model.infer(np.random.default_rng(0).integers(0, 256, (40, 72, 3), np.uint8))
    assert out.shape == (40, 72) and np.isfinite(out).all()


@pytest.mark.parametrize(('name', 'mode', 'align_corners', 'native'), [
    ('dav2-s', 'bilinear', True, 518),     # Depth-Anything-V2 infer_image
    ('dav2-metric', 'bilinear', True, 518),
    ('dav1-b', 'bilinear', False, 518),    # Depth-Anything (V1) run.py
    ('midas-dpt-large', 'bicubic', False, 384),  # MiDaS run.py
    ('midas-dpt-hybrid', 'bicubic', False, 384),
    ('dpt-large', 'bilinear', True, 384),  # Hugging Face DPT processor
])
def test_each_family_restores_the_output_as_its_official_code(
    name: str, mode: str, align_corners: bool, native: int,
) -> None:
    recipe = da.parse_name(name).recipe
    assert (recipe.output_mode, recipe.output_align_corners, recipe.native_size) == (
        mode, align_corners, native)
