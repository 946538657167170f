"""Official VDA/EndoDAV checkpoint layouts, names and loading (adapters merged)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
import re
from typing import Any

import torch

from endo_depth_ros.errors import ModelLoadError
from endo_depth_ros.models import depth_anything as da
from endo_depth_ros.models.video_depth_anything.network import (
    PATCH,
    VideoDepthNet,
    build_video_network,
)

_MOTION = 'motion_modules.'


def official_to_ours(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official VDA keys (``pretrained.*``, ``head.*``) -> ``VideoDepthNet`` keys."""
    motion = {k[len('head.'):]: v for k, v in state_dict.items()
              if k.startswith('head.' + _MOTION)}
    rest = {('depth_' + k if k.startswith('head.') else k): v
            for k, v in state_dict.items() if not k.startswith('head.' + _MOTION)}
    converted = da.official_to_hf(rest)
    converted.update(motion)
    return converted


def ours_to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``VideoDepthNet`` keys -> official VDA keys (inverse of ``official_to_ours``)."""
    motion = {'head.' + k: v for k, v in state_dict.items() if k.startswith(_MOTION)}
    rest = da.hf_to_official({k: v for k, v in state_dict.items() if not k.startswith(_MOTION)})
    converted = {('head.' + k[len('depth_head.'):] if k.startswith('depth_head.') else k): v
                 for k, v in rest.items()}
    converted.update(motion)
    return converted


def _architecture(state_dict: Mapping[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """ViT and head widths of an official-layout (merged) VDA state dict."""
    needed = ['pretrained.cls_token', 'pretrained.pos_embed', 'pretrained.blocks.0.mlp.fc1.weight',
              'head.scratch.layer1_rn.weight', 'head.scratch.output_conv2.0.weight'] + [
        f'head.projects.{i}.weight' for i in range(4)]
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise ModelLoadError(
            f'{path} is not a Video Depth Anything / EndoDAV checkpoint; it lacks '
            f'{", ".join(missing[:5])}.')
    hidden = int(state_dict['pretrained.cls_token'].shape[-1])
    grid = round((state_dict['pretrained.pos_embed'].shape[1] - 1) ** 0.5)
    return {
        'hidden_size': hidden,
        'num_layers': da._num_blocks(state_dict, 'pretrained.blocks.'),
        'features': int(state_dict['head.scratch.layer1_rn.weight'].shape[0]),
        'out_channels': [int(state_dict[f'head.projects.{i}.weight'].shape[0]) for i in range(4)],
        'image_size': grid * PATCH,
        'mlp_ratio': int(state_dict['pretrained.blocks.0.mlp.fc1.weight'].shape[0]) // hidden,
        'head_hidden_size': int(state_dict['head.scratch.output_conv2.0.weight'].shape[0]),
    }


#: Scaling ``lora_alpha / r`` of EndoDAV's adapter kinds (its constructor: alpha = 2r
#: for LoRA and Dash, alpha = r for DV-LoRA); SSB has none.
ENDODAV_SCALING = {'lora': 2.0, 'dv-lora': 1.0, 'dash': 2.0, 'ssb': 1.0}


def merge_endodav(state_dict: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Fold EndoDAV's adapters (SSB, LoRA, DV-LoRA or Dash; ViT MLPs and optionally the
    motion modules' feed-forward output) into plain weights: a VDA state dict.

    Raises:
        ModelLoadError: incomplete or mis-shaped adapters, or the multi-scale sigmoid
            head variant (``disable_conv_head=False``), which the released models do not use.
    """
    from endo_depth_ros.models import adapters

    if any(k.startswith('head.conv_depth_') for k in state_dict):
        raise ModelLoadError(
            f'{path} uses EndoDAV\'s multi-scale sigmoid head (trained without '
            '--disable_conv_head), which is not supported; the released models use the VDA head.')
    rules = (adapters.SSB,) if adapters.is_ssb(state_dict) else adapters.ENDODAV_RULES
    kinds = adapters.find_adapters(state_dict, rules)
    return adapters.merge_adapters(
        state_dict, scaling=lambda prefix, rank: ENDODAV_SCALING.get(kinds[prefix], 1.0),
        rules=rules, source=str(path))


@dataclass(frozen=True)
class VideoSpec:
    """What a video registry name asks for."""

    family: str  # 'vda' | 'endodav'
    size: str | None
    metric: bool


def parse_video_name(name: str) -> VideoSpec:
    """``vda-s``, ``vda-metric-l``, ``vda`` (size from the checkpoint), ``endodav`` -> spec.

    Raises:
        ModelLoadError: not a video model name.
    """
    if name == 'endodav':
        return VideoSpec('endodav', None, False)
    match = re.fullmatch(r'vda(-metric)?(?:-([sbl]))?', name)
    if match is None:
        raise ModelLoadError(f'{name!r} is not a video depth model name.')
    return VideoSpec('vda', match[2], bool(match[1]))


def is_video_name(name: str) -> bool:
    """Whether ``name`` is a video model (``vda-*``, ``endodav``)."""
    return name == 'endodav' or re.fullmatch(r'vda(-metric)?(-[sbl])?', name) is not None


def load_video_network(name: str, path: str | Path) -> VideoDepthNet:
    """Build the network of a video model name and load an official checkpoint strictly.

    Args:
        name: ``vda-s|b|l``, ``vda-metric-s|b|l``, ``vda``, ``vda-metric`` or ``endodav``.
        path: official ``video_depth_anything_*.pth`` / ``metric_video_depth_anything_*.pth``,
            or EndoDAV's ``depth_model.pth`` (adapters are merged here).

    Returns:
        The network (CPU, fp32, eval mode).

    Raises:
        ModelLoadError: unreadable file, wrong family or size, missing, unexpected or
            mis-shaped keys (listed with the file name).
    """
    spec = parse_video_name(name)
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f'Checkpoint of {name!r} not found (or not a file): {path}')
    state_dict = da.read_state_dict(path)
    if spec.family == 'endodav':
        state_dict = merge_endodav(state_dict, path)
    elif any('lora_' in k for k in state_dict):
        raise ModelLoadError(
            f'{path} holds low-rank adapters (an EndoDAV checkpoint?); load it as endodav.')
    if not any(k.startswith('head.' + _MOTION) for k in state_dict):
        raise ModelLoadError(
            f'{path} has no motion modules (head.motion_modules.*): not a Video Depth '
            f'Anything checkpoint (a per-frame Depth Anything file loads as dav2-*).')
    arch = _architecture(state_dict, path)
    if spec.size is not None:
        vit = da.VIT_SIZES[spec.size]
        if (arch['hidden_size'], arch['num_layers']) != (vit.hidden, vit.layers):
            found = [s for s, v in da.VIT_SIZES.items()
                     if (v.hidden, v.layers) == (arch['hidden_size'], arch['num_layers'])]
            hint = f'; use {name[:-1]}{found[0]}' if found else ''
            raise ModelLoadError(
                f'{path} holds a ViT with hidden size {arch["hidden_size"]} and '
                f'{arch["num_layers"]} blocks, not the vit{spec.size} of {name!r}{hint}.')
    config = da.depth_anything_config(2, **arch)
    network = build_video_network(config, device='meta')
    expected = {k: v.shape for k, v in ours_to_official(network.state_dict()).items()}
    da._check_keys(path, name, dict(state_dict), expected)
    network.load_state_dict(official_to_ours(state_dict), strict=True, assign=True)
    # Buffers built on 'meta' that the file does not carry would stay unallocated.
    return network.float().eval()
