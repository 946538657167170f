"""Original MiDaS v3 (isl-org/MiDaS) checkpoints: key layout, strict loading, preprocessing.

Official-layout state dicts are built from the project's own definitions (random
weights); the key names and counts below are those of the official ``DPTDepthModel``
with a timm ViT-L/16 (``dpt_large_384.pt``).
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


def test_conversion_round_trip_is_lossless(tiny: torch.nn.Module) -> None:
    state = tiny.state_dict()
    official = midas.hf_to_official(state)
    assert not any(k.startswith(('dpt.', 'neck.', 'head.')) for k in official)
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


def test_hybrid_file_is_refused_with_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / 'dpt_hybrid_384.pt'
    torch.save({'pretrained.model.patch_embed.backbone.stem.conv.weight': torch.zeros(1),
                'pretrained.model.cls_token': torch.zeros(1),
                'scratch.layer1_rn.weight': torch.zeros(1)}, path)
    with pytest.raises(ModelLoadError, match=r'DPT-Hybrid.*dpt-hybrid'):
        models.load('midas-dpt-large', path, device='cpu')


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
    ('dpt-large', 'bilinear', True, 384),  # Hugging Face DPT processor
])
def test_each_family_restores_the_output_as_its_official_code(
    name: str, mode: str, align_corners: bool, native: int,
) -> None:
    recipe = da.parse_name(name).recipe
    assert (recipe.output_mode, recipe.output_align_corners, recipe.native_size) == (
        mode, align_corners, native)
