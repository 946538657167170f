"""Depth Anything V1/V2 (relative and metric) and DPT (MiDaS v3) through transformers.

Architectures are built locally from configs that mirror the official repositories
(nothing is ever fetched from the Hugging Face Hub):

============  ======  ======  =====  ========  =========================  ===============
ViT size      hidden  layers  heads  features  DPT-head out channels      V2 layers
============  ======  ======  =====  ========  =========================  ===============
vits (``s``)  384     12      6      64        48, 96, 192, 384           2, 5, 8, 11
vitb (``b``)  768     12      12     128       96, 192, 384, 768          2, 5, 8, 11
vitl (``l``)  1024    24      16     256       256, 512, 1024, 1024       4, 11, 17, 23
============  ======  ======  =====  ========  =========================  ===============

V1 feeds the DPT head with the last four blocks. The metric V2 heads end in a
sigmoid scaled by ``max_depth``: the largest depth (metres) the network can output.
The official metric models use 20 m (indoor, Hypersim) and 80 m (outdoor, VKITTI);
a ``.pth`` does not store it, a Hugging Face folder does (``config.json``). Pass it
with ``load(..., max_depth=...)``; when it is neither given nor stored, 20 m is
assumed with a ``MaxDepthAssumedWarning``.

Weights come from a Hugging Face folder (``config.json`` + safetensors), an official
Depth Anything ``.pth`` state dict (converted by ``official_to_hf``), or a single
file in Hugging Face key layout. Loading is strict: missing, unexpected or
mis-shaped tensors raise ``ModelLoadError`` listing them, named as in the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
import json
from pathlib import Path
import re
from typing import Any
import warnings

import numpy as np
import torch
from torch import nn

from endo_depth_ros.errors import ConfigError, ModelLoadError
from endo_depth_ros.models import midas
from endo_depth_ros.models.base import DepthModel, OutputKind
from endo_depth_ros.models.dinov2 import use_official_position_embeddings
from endo_depth_ros.models.midas import midas_config, use_any_aspect
from endo_depth_ros.models.preprocessing import (
    DEPTH_ANYTHING_V1,
    DEPTH_ANYTHING_V2,
    HF_DPT,
    MIDAS_V3,
    DepthNet,
    InputRecipe,
    resolve_device,
    resolve_precision,
)


@dataclass(frozen=True)
class VitSize:
    """One official ViT size of Depth Anything (see module table)."""

    hidden: int
    layers: int
    heads: int
    features: int
    out_channels: tuple[int, int, int, int]
    v2_layers: tuple[int, int, int, int]


VIT_SIZES: dict[str, VitSize] = {
    's': VitSize(384, 12, 6, 64, (48, 96, 192, 384), (2, 5, 8, 11)),
    'b': VitSize(768, 12, 12, 128, (96, 192, 384, 768), (2, 5, 8, 11)),
    'l': VitSize(1024, 24, 16, 256, (256, 512, 1024, 1024), (4, 11, 17, 23)),
}
#: ``max_depth`` (m) assumed for a metric checkpoint that does not store it: the value
#: of the official indoor (Hypersim) metric V2 models; the outdoor (VKITTI) ones use 80.
DEFAULT_MAX_DEPTH = 20
#: Largest accepted ``max_depth`` (m): far beyond any endoscope, catches unit mistakes.
MAX_DEPTH_LIMIT = 1000.0


class MaxDepthAssumedWarning(UserWarning):
    """A metric checkpoint did not say its ``max_depth``; the default was assumed."""
_PATCH = 14


@dataclass(frozen=True)
class NameSpec:
    """What a registry name asks for: family, size (None: read from the checkpoint)."""

    family: str  # 'dav1' | 'dav2' | 'dpt' (HF folders) | 'midas' (official MiDaS files)
    size: str | None  # 's' | 'b' | 'l' | 'hybrid' | 'large' | None
    metric: bool

    @property
    def output_kind(self) -> OutputKind:
        return 'metric_depth' if self.metric else 'relative_disparity'

    @property
    def is_dpt(self) -> bool:
        """Whether the network is transformers' DPT (MiDaS v3) rather than Depth Anything."""
        return self.family in ('dpt', 'midas')

    @property
    def recipe(self) -> InputRecipe:
        """The official pre/post-processing of the family (``preprocessing`` table)."""
        return {'dav1': DEPTH_ANYTHING_V1, 'dav2': DEPTH_ANYTHING_V2, 'dpt': HF_DPT,
                'midas': MIDAS_V3}[self.family]


def parse_name(name: str) -> NameSpec:
    """Split a network name (``dav2-metric-s``, ``dpt-large``, ``dav1``) into a spec.

    Raises:
        ModelLoadError: not a network name of the registry.
    """
    if name in ('dpt-hybrid', 'dpt-large'):
        return NameSpec('dpt', name[4:], False)
    if name in ('midas-dpt-large', 'midas-dpt-hybrid'):
        return NameSpec('midas', name[10:], False)
    match = re.fullmatch(r'(dav1|dav2)(-metric)?(?:-([sbl]))?', name)
    if match is None or (match[1] == 'dav1' and match[2]):
        raise ModelLoadError(f'{name!r} is not a Depth Anything or DPT model name.')
    return NameSpec(match[1], match[3], bool(match[2]))


# --------------------------------------------------------------------------- configs


def depth_anything_config(
    version: int,
    *,
    hidden_size: int,
    num_layers: int,
    features: int,
    out_channels: tuple[int, ...] | list[int],
    num_heads: int | None = None,
    image_size: int = 518,
    mlp_ratio: int = 4,
    head_hidden_size: int = 32,
    metric: bool = False,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """A ``DepthAnythingConfig`` for any ViT size (also tiny ones for tests).

    Args:
        version: 1 (last four blocks feed the head) or 2 (official V2 block indices).
        hidden_size, num_layers: DINOv2 width and depth.
        features: DPT fusion width; out_channels: the four reassemble widths.
        num_heads: attention heads (default ``hidden_size // 64``, as in DINOv2).
        image_size: pre-training size (sets the position-embedding grid).
        metric: sigmoid head scaled by ``max_depth`` metres instead of ReLU.
    """
    from transformers import DepthAnythingConfig, Dinov2Config

    layers = intermediate_layers(version, hidden_size, num_layers)
    backbone_args: dict[str, Any] = {
        'hidden_size': hidden_size,
        'num_hidden_layers': num_layers,
        'num_attention_heads': num_heads or max(1, hidden_size // 64),
        'mlp_ratio': mlp_ratio,
        'image_size': image_size,
        'patch_size': _PATCH,
        # HF hidden_states[0] is the embedding output, so block i is index i + 1.
        'out_indices': [i + 1 for i in layers],
        'apply_layernorm': True,
        'reshape_hidden_states': False,
    }
    backbone = Dinov2Config(**backbone_args)
    return DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=hidden_size,
        patch_size=_PATCH,
        fusion_hidden_size=features,
        neck_hidden_sizes=list(out_channels),
        head_hidden_size=head_hidden_size,
        depth_estimation_type='metric' if metric else 'relative',
        max_depth=max_depth if metric else 1,
    )


def intermediate_layers(version: int, hidden_size: int, num_layers: int) -> list[int]:
    """0-based indices of the four ViT blocks feeding the DPT head."""
    if num_layers < 4:
        raise ModelLoadError(f'Depth Anything needs at least 4 ViT blocks, got {num_layers}.')
    if version == 1:
        return list(range(num_layers - 4, num_layers))
    for size in VIT_SIZES.values():
        if (size.hidden, size.layers) == (hidden_size, num_layers):
            return list(size.v2_layers)
    # Non-standard depth: the end of each quarter, as the official s/b indices.
    return [round((i + 1) * num_layers / 4) - 1 for i in range(4)]


def dpt_config(size: str) -> Any:
    """The MiDaS v3 ``DPTConfig`` of ``'large'`` (ViT-L/16) or ``'hybrid'`` (ResNet50+ViT-B/16)."""
    from transformers import DPTConfig

    if size == 'large':
        return DPTConfig(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
            intermediate_size=4096, backbone_out_indices=[5, 11, 17, 23],
            neck_hidden_sizes=[256, 512, 1024, 1024], reassemble_factors=[4, 2, 1, 0.5],
            readout_type='project', image_size=384, patch_size=16)
    if size == 'hybrid':
        return DPTConfig(
            is_hybrid=True, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, backbone_out_indices=[2, 5, 8, 11],
            neck_hidden_sizes=[256, 512, 768, 768], reassemble_factors=[1, 1, 1, 0.5],
            readout_type='project', image_size=384, patch_size=16,
            backbone_featmap_shape=[1, 1024, 24, 24], neck_ignore_stages=[0, 1])
    raise ModelLoadError(f'Unknown DPT size {size!r}; expected hybrid or large.')


def make_config(name: str) -> Any:
    """The standard config of a sized registry name (``dav2-s``, ``dpt-large``, ...).

    Raises:
        ModelLoadError: unknown name, or a size-free name (``dav2``) that needs a checkpoint.
    """
    spec = parse_name(name)
    if spec.family == 'dpt':
        return dpt_config(spec.size or '')
    if spec.family == 'midas':
        return midas_config(spec.size or '')
    if spec.size is None:
        raise ModelLoadError(f'{name!r} takes its size from a checkpoint; use {name}-s|b|l.')
    vit = VIT_SIZES[spec.size]
    return depth_anything_config(
        1 if spec.family == 'dav1' else 2, hidden_size=vit.hidden, num_layers=vit.layers,
        num_heads=vit.heads, features=vit.features, out_channels=vit.out_channels,
        metric=spec.metric)


def tiny_config(family: str = 'dav2', *, metric: bool = False) -> Any:
    """A few-thousand-parameter config of ``family``.

    ``family``: ``'dav1'``, ``'dav2'``, ``'dpt'``, ``'midas'`` or ``'midas-hybrid'``. For
    smoke tests and examples: same code paths as the real sizes, milliseconds per frame.
    Depth Anything: ViT width 64, 4 blocks, 98-pixel pre-training grid; DPT: ViT width 32,
    4 blocks, patch 16; the hybrid adds a BiT stem of one bottleneck per stage (16, 32,
    64 channels, 4 groups).
    """
    if family in ('dav1', 'dav2'):
        return depth_anything_config(
            1 if family == 'dav1' else 2, hidden_size=64, num_layers=4, features=16,
            out_channels=(8, 16, 32, 64), image_size=98, head_hidden_size=8, metric=metric)
    if family in ('dpt', 'midas', 'midas-hybrid'):
        from transformers import DPTConfig

        common: dict[str, Any] = {
            'hidden_size': 32, 'num_hidden_layers': 4, 'num_attention_heads': 2,
            'intermediate_size': 64, 'backbone_out_indices': [0, 1, 2, 3],
            'fusion_hidden_size': 16, 'readout_type': 'project', 'image_size': 64,
            'patch_size': 16, 'layer_norm_eps': 1e-12 if family == 'dpt' else 1e-6}
        if family == 'midas-hybrid':
            return DPTConfig(
                is_hybrid=True, neck_hidden_sizes=[16, 32, 32, 32],
                reassemble_factors=[1, 1, 1, 0.5], backbone_featmap_shape=[1, 64, 4, 4],
                neck_ignore_stages=[0, 1],
                backbone_config=midas.bit_config(8, (16, 32, 64), (1, 1, 1), 4),
                **common)
        return DPTConfig(neck_hidden_sizes=[8, 16, 32, 32], **common)
    raise ModelLoadError(
        f"Unknown family {family!r}; expected 'dav1', 'dav2', 'dpt', 'midas' or 'midas-hybrid'.")


def build_network(config: Any, *, device: str | torch.device = 'cpu') -> nn.Module:
    """Instantiate the transformers model of ``config`` (random weights; ``'meta'``: none).

    On ``device='meta'`` nothing is allocated: use it to count parameters or as the
    target of ``load_state_dict(..., assign=True)``. Depth Anything networks resize
    their position embeddings as the official code (``models.dinov2``); DPT networks
    (plain ViT and hybrid) accept any aspect ratio as MiDaS (``models.midas``).
    """
    from transformers import DepthAnythingForDepthEstimation, DPTForDepthEstimation

    cls = DPTForDepthEstimation if config.model_type == 'dpt' else DepthAnythingForDepthEstimation
    with torch.device(device):
        network = cls(config)
    use_official_position_embeddings(network)
    if config.model_type == 'dpt':
        use_any_aspect(network)
    return network.eval()


# ------------------------------------------------------------ official key conversion


def _official_pairs(num_layers: int) -> list[tuple[str, str]]:
    """(official key, Hugging Face key) for every tensor except the fused ``attn.qkv``."""
    pairs = [
        ('pretrained.cls_token', 'backbone.embeddings.cls_token'),
        ('pretrained.mask_token', 'backbone.embeddings.mask_token'),
        ('pretrained.pos_embed', 'backbone.embeddings.position_embeddings'),
        ('pretrained.patch_embed.proj.weight',
         'backbone.embeddings.patch_embeddings.projection.weight'),
        ('pretrained.patch_embed.proj.bias',
         'backbone.embeddings.patch_embeddings.projection.bias'),
        ('pretrained.norm.weight', 'backbone.layernorm.weight'),
        ('pretrained.norm.bias', 'backbone.layernorm.bias'),
    ]
    block = {
        'norm1': 'norm1', 'norm2': 'norm2', 'mlp.fc1': 'mlp.fc1', 'mlp.fc2': 'mlp.fc2',
        'attn.proj': 'attention.o_proj',
    }
    for i in range(num_layers):
        src, dst = f'pretrained.blocks.{i}', f'backbone.encoder.layer.{i}'
        pairs += [(f'{src}.ls1.gamma', f'{dst}.layer_scale1.lambda1'),
                  (f'{src}.ls2.gamma', f'{dst}.layer_scale2.lambda1')]
        pairs += [(f'{src}.{a}.{p}', f'{dst}.{b}.{p}')
                  for a, b in block.items() for p in ('weight', 'bias')]
    head = 'depth_head'
    for i in range(4):
        pairs += [(f'{head}.projects.{i}.{p}', f'neck.reassemble_stage.layers.{i}.projection.{p}')
                  for p in ('weight', 'bias')]
        if i != 2:  # the third reassemble stage keeps its resolution (Identity)
            pairs += [(f'{head}.resize_layers.{i}.{p}',
                       f'neck.reassemble_stage.layers.{i}.resize.{p}') for p in ('weight', 'bias')]
        pairs.append((f'{head}.scratch.layer{i + 1}_rn.weight', f'neck.convs.{i}.weight'))
    for n in range(1, 5):
        # refinenet4 fuses the coarsest features first: fusion layers run in reverse order.
        src, dst = f'{head}.scratch.refinenet{n}', f'neck.fusion_stage.layers.{4 - n}'
        convs = [('out_conv', 'projection')] + [
            (f'resConfUnit{u}.conv{c}', f'residual_layer{u}.convolution{c}')
            for u in (1, 2) for c in (1, 2)]
        pairs += [(f'{src}.{a}.{p}', f'{dst}.{b}.{p}')
                  for a, b in convs for p in ('weight', 'bias')]
    output_convs = (('output_conv1', 'conv1'), ('output_conv2.0', 'conv2'),
                    ('output_conv2.2', 'conv3'))
    for a, b in output_convs:
        pairs += [(f'{head}.scratch.{a}.{p}', f'head.{b}.{p}') for p in ('weight', 'bias')]
    return pairs


def _num_blocks(keys: Any, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r'(\d+)\.')
    indices = [int(m[1]) for k in keys if (m := pattern.match(k))]
    return max(indices) + 1 if indices else 0


def official_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Depth Anything V1/V2 keys -> transformers keys.

    ``attn.qkv`` is split into ``q_proj``/``k_proj``/``v_proj``; keys that match no
    rule are passed through unchanged, so the strict check reports them as unexpected.
    """
    remaining = dict(state_dict)
    num_layers = _num_blocks(remaining, 'pretrained.blocks.')
    converted: dict[str, torch.Tensor] = {}
    for src, dst in _official_pairs(num_layers):
        if src in remaining:
            converted[dst] = remaining.pop(src)
    for i in range(num_layers):
        for p in ('weight', 'bias'):
            qkv = remaining.pop(f'pretrained.blocks.{i}.attn.qkv.{p}', None)
            if qkv is None:
                continue
            prefix = f'backbone.encoder.layer.{i}.attention'
            for part, name in zip(qkv.chunk(3, dim=0), ('q', 'k', 'v'), strict=True):
                converted[f'{prefix}.{name}_proj.{p}'] = part.contiguous()
    converted.update(remaining)
    return converted


def hf_to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers Depth Anything keys -> official keys (inverse of ``official_to_hf``).

    ``q_proj``/``k_proj``/``v_proj`` are concatenated back into ``attn.qkv``. Keys that
    match no rule are passed through unchanged.
    """
    remaining = dict(_rename_legacy_hf(state_dict))
    num_layers = _num_blocks(remaining, 'backbone.encoder.layer.')
    converted: dict[str, torch.Tensor] = {}
    for src, dst in _official_pairs(num_layers):
        if dst in remaining:
            converted[src] = remaining.pop(dst)
    for i in range(num_layers):
        for p in ('weight', 'bias'):
            names = [f'backbone.encoder.layer.{i}.attention.{n}_proj.{p}' for n in 'qkv']
            if all(n in remaining for n in names):
                converted[f'pretrained.blocks.{i}.attn.qkv.{p}'] = torch.cat(
                    [remaining.pop(n) for n in names], dim=0)
    converted.update(remaining)
    return converted


_LEGACY_HF = [  # transformers < 5 names of the DINOv2 attention in Depth Anything folders
    (re.compile(r'^(backbone\.encoder\.layer\.\d+\.attention)\.attention\.(query|key|value)\.'),
     lambda m: f'{m[1]}.{m[2][0]}_proj.'),
    (re.compile(r'^(backbone\.encoder\.layer\.\d+\.attention)\.output\.dense\.'),
     lambda m: f'{m[1]}.o_proj.'),
]


def _rename_legacy_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in _LEGACY_HF:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


# ------------------------------------------------------------------------- loading


def load_network(
    name: str, path: str | Path, *, max_depth: float | None = None,
) -> tuple[nn.Module, OutputKind]:
    """Build the network of ``name`` and load the weights at ``path`` strictly.

    Args:
        name: a Depth Anything / DPT registry name.
        path: Hugging Face folder, official ``.pth``, or single HF-layout file.
        max_depth: metric models only: largest output depth (m), the scale of the
            sigmoid head. None: the folder's ``config.json`` value, else
            ``DEFAULT_MAX_DEPTH`` with a ``MaxDepthAssumedWarning``.

    Returns:
        The network (CPU, fp32, eval mode; ``network.config.max_depth`` holds the
        metric scale) and its output kind.

    Raises:
        ModelLoadError: missing/unreadable file, unknown layout, architecture or keys
            not matching (the message names the file and lists the offending keys).
        ConfigError: ``max_depth`` out of (0, ``MAX_DEPTH_LIMIT``] or given for a
            relative model.
    """
    spec = parse_name(name)
    path = Path(path)
    check_max_depth(name, spec.metric, max_depth)
    if path.is_dir():
        config, state_dict = _read_folder(path)
        _check_folder_config(spec, name, config, path)
        layout = 'folder'
    elif path.is_file():
        state_dict = read_state_dict(path)
        layout = _detect_layout(state_dict, path)
        config = _config_for_file(spec, name, state_dict, layout, path)
    else:
        raise ModelLoadError(f'Checkpoint of {name!r} not found: {path}')
    if (config.model_type == 'dpt') != spec.is_dpt:
        raise ModelLoadError(
            f'{path} holds a {config.model_type} model, which does not fit name {name!r}.')
    if _is_metric(config):
        # Only a folder's config.json stores max_depth; a state dict never does.
        stored = config.max_depth if layout == 'folder' else None
        set_max_depth(config, _metric_scale(name, path, max_depth, stored))
    network = build_network(config, device='meta')
    expected = {k: v.shape for k, v in network.state_dict().items()}
    if layout == 'official':
        _check_keys(path, name, dict(state_dict),
                    {k: v.shape for k, v in hf_to_official(network.state_dict()).items()})
        state_dict = official_to_hf(state_dict)
    elif layout == 'midas':
        used = {k: v for k, v in state_dict.items() if not k.startswith(midas.UNUSED_PREFIX)}
        _check_keys(path, name, used,
                    {k: v.shape for k, v in midas.hf_to_official(network.state_dict()).items()})
        state_dict = midas.official_to_hf(used)
    else:
        if config.model_type != 'dpt':
            state_dict = _rename_legacy_hf(state_dict)
        _check_keys(path, name, dict(state_dict), expected)
    network.load_state_dict(state_dict, strict=True, assign=True)
    network = network.float().eval()
    return network, 'metric_depth' if _is_metric(config) else 'relative_disparity'


def check_max_depth(name: str, metric: bool, max_depth: float | None) -> None:
    """Refuse a ``max_depth`` for a relative model or outside (0, ``MAX_DEPTH_LIMIT``] m.

    Raises:
        ConfigError: naming the value.
    """
    if max_depth is None:
        return
    if not metric:
        raise ConfigError(
            f'max_depth applies to metric models only; {name!r} outputs relative disparity.')
    if isinstance(max_depth, bool) or not 0 < max_depth <= MAX_DEPTH_LIMIT:
        raise ConfigError(
            f'max_depth must be in (0, {MAX_DEPTH_LIMIT:g}] metres, got {max_depth!r}.')


def set_max_depth(config: Any, max_depth: float | None) -> None:
    """Set a ``DepthAnythingConfig``'s ``max_depth`` (m), fractional values included.

    transformers types the field ``int`` and validates assignments, but the head only
    multiplies by it and endoscope scenes need fractions of a metre, so the value is
    stored without that check (``save_pretrained`` writes it to ``config.json`` as is).
    """
    value = None if max_depth is None else float(max_depth)
    if value is not None and value.is_integer():
        value = int(value)
    object.__setattr__(config, 'max_depth', value)


def _metric_scale(
    name: str, path: Path, requested: float | None, stored: float | None,
) -> float:
    """The ``max_depth`` (m) of a metric network: asked for, stored, or assumed."""
    if requested is not None:
        return float(requested)
    if stored is not None:
        return float(stored)
    warnings.warn(
        f'{path} does not store the max_depth of metric model {name!r}; assuming '
        f'{DEFAULT_MAX_DEPTH} m (official indoor/Hypersim models; outdoor/VKITTI ones use '
        '80). Set it explicitly: load(max_depth=...), model.max_depth_m, --max-depth.',
        MaxDepthAssumedWarning, stacklevel=3)
    return float(DEFAULT_MAX_DEPTH)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.pt``/``.bin`` (weights only) or ``.safetensors`` state dict.

    Unwraps ``{'model': ...}``/``{'state_dict': ...}`` containers and DataParallel's
    ``module.`` prefix.

    Raises:
        ModelLoadError: one line naming the file: not a regular file, unreadable (any
            bytes that are not a weights-only pickle, zip or safetensors: text, random
            bytes, a pickled module, truncated or empty files, ONNX), or not a mapping
            of names to tensors.
    """
    if not path.is_file():
        kind = 'a directory' if path.is_dir() else 'not a regular file'
        raise ModelLoadError(f'{path} is not a PyTorch/safetensors checkpoint ({kind}).')
    try:
        if path.stat().st_size == 0:
            raise EOFError('the file is empty')
        if path.suffix == '.safetensors':
            from safetensors.torch import load_file
            loaded: Any = load_file(str(path))
        else:
            loaded = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # unpicklers raise any exception type on foreign bytes
        hint = " (an ONNX file: use backend 'onnxruntime')" if path.suffix == '.onnx' else ''
        raise ModelLoadError(
            f'{path} is not a PyTorch/safetensors checkpoint{hint}: {first_line(err)}') from None
    for wrapper in ('model', 'state_dict'):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not loaded or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        raise ModelLoadError(
            f'{path} is not a PyTorch/safetensors checkpoint: it holds a '
            f'{type(loaded).__name__}, not a state dict (names -> tensors).')
    if all(k.startswith('module.') for k in loaded):
        loaded = {k[len('module.'):]: v for k, v in loaded.items()}
    return loaded


_ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')
#: Longest cause quoted in a loading error (characters).
_CAUSE_CHARS = 160


def first_line(err: BaseException) -> str:
    """``'Type: first line of the message'``, without colour codes, at most ~160 chars.

    torch's weights-only unpickler wraps the actual cause in a paragraph of advice;
    only the cause (``Unsupported operand 220``, ``Unsupported global: ...``) is kept.
    """
    text = _ANSI.sub('', str(err)).strip()
    marker = 'WeightsUnpickler error:'
    if marker in text:
        text = text.split(marker, 1)[1].strip()
        text = text.split('. ', 1)[0].split(' was not an allowed global', 1)[0]
    line = text.splitlines()[0].strip() if text else ''
    if len(line) > _CAUSE_CHARS:
        line = line[:_CAUSE_CHARS].rstrip() + '...'
    return f'{type(err).__name__}: {line}' if line else type(err).__name__


def _read_folder(path: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    """Config and weights of a Hugging Face model folder, without any network access."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import DepthAnythingConfig, DPTConfig

    config_file = path / 'config.json'
    if not config_file.is_file():
        raise ModelLoadError(
            f'{path} is not a PyTorch/safetensors checkpoint (a directory without '
            'config.json, so not a Hugging Face model folder either).')
    try:
        raw = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f'{config_file} is not valid JSON: {err}') from err
    model_type = raw.get('model_type') if isinstance(raw, dict) else None
    if model_type not in ('depth_anything', 'dpt'):
        raise ModelLoadError(
            f"{config_file} has model_type {model_type!r}; expected 'depth_anything' or 'dpt'.")
    if model_type == 'depth_anything':
        # Older relative checkpoints store null (the head multiplies by it); a metric
        # config without it must not get transformers' default of 1 m.
        metric = raw.get('depth_estimation_type') == 'metric'
        stored_max_depth = raw.pop('max_depth', None) if metric else 1
        raw['max_depth'] = 1
    cls = DPTConfig if model_type == 'dpt' else DepthAnythingConfig
    try:
        config = cls.from_dict(raw)
    except (TypeError, ValueError, KeyError, StrictDataclassError) as err:
        raise ModelLoadError(f'{config_file} is not a valid {model_type} config: {err}') from err
    if model_type == 'depth_anything':
        if stored_max_depth is not None and not (
                isinstance(stored_max_depth, (int, float)) and stored_max_depth > 0):
            raise ModelLoadError(
                f'{config_file} has max_depth {stored_max_depth!r}; expected metres > 0.')
        set_max_depth(config, stored_max_depth)
    index = path / 'model.safetensors.index.json'
    if (path / 'model.safetensors').is_file():
        state_dict = read_state_dict(path / 'model.safetensors')
    elif index.is_file():
        shards = sorted(set(json.loads(index.read_text())['weight_map'].values()))
        state_dict = {}
        for shard in shards:
            state_dict.update(read_state_dict(path / shard))
    elif (path / 'pytorch_model.bin').is_file():
        state_dict = read_state_dict(path / 'pytorch_model.bin')
    else:
        raise ModelLoadError(
            f'{path} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin.')
    return config, state_dict


def _detect_layout(state_dict: Mapping[str, torch.Tensor], path: Path) -> str:
    keys = list(state_dict)
    if midas.is_official_midas(keys):
        return 'midas'
    if any(k.startswith('pretrained.') for k in keys) and any(
            k.startswith('depth_head.') for k in keys):
        if any(k.startswith('depth_head.readout_projects.') for k in keys):
            raise ModelLoadError(
                f'{path} uses class-token readout (use_clstoken=True), which transformers\' '
                'Depth Anything does not implement.')
        return 'official'
    if any(k.startswith('backbone.') for k in keys) and any(k.startswith('neck.') for k in keys):
        return 'hf'
    if any(k.startswith('dpt.') for k in keys) and any(k.startswith('neck.') for k in keys):
        return 'hf'
    raise ModelLoadError(
        f'{path} is not a Depth Anything or DPT checkpoint (unknown key layout, e.g. '
        f'{", ".join(keys[:5])}).')


def _config_for_file(
    spec: NameSpec, name: str, state_dict: Mapping[str, torch.Tensor], layout: str, path: Path,
) -> Any:
    if layout == 'midas':
        size = 'hybrid' if midas.is_hybrid(state_dict) else 'large'
        if spec.family != 'midas' or spec.size != size:
            kind = 'DPT-Hybrid (ResNet-50 + ViT-B/16)' if size == 'hybrid' else 'DPT-Large'
            raise ModelLoadError(
                f'{path} is an original MiDaS {kind} checkpoint, not {name!r}; '
                f'use midas-dpt-{size}.')
    if spec.family == 'midas':
        if layout == 'midas':
            return midas_config(spec.size or '')
        if not any(k.startswith('dpt.') for k in state_dict):
            raise ModelLoadError(f'{path} holds a Depth Anything model, not {name!r}.')
        return dpt_config(spec.size or '')
    if spec.family == 'dpt':
        if not any(k.startswith('dpt.') for k in state_dict):
            raise ModelLoadError(f'{path} holds a Depth Anything model, not {name!r}.')
        return dpt_config(spec.size or '')
    if any(k.startswith('dpt.') for k in state_dict):
        raise ModelLoadError(f'{path} holds a DPT model, not {name!r}; use dpt-large|dpt-hybrid.')
    arch = _infer_architecture(state_dict, layout, path)
    version = 1 if spec.family == 'dav1' else 2
    if spec.size is not None:
        standard = VIT_SIZES[spec.size]
        if arch['hidden_size'] != standard.hidden or arch['num_layers'] != standard.layers:
            found = [s for s, v in VIT_SIZES.items()
                     if (v.hidden, v.layers) == (arch['hidden_size'], arch['num_layers'])]
            stem = name[:-2]
            hint = f'; use {stem}-{found[0]}' if found else f'; use {stem} for a custom size'
            raise ModelLoadError(
                f'{path} holds a ViT with hidden size {arch["hidden_size"]} and '
                f'{arch["num_layers"]} blocks, not the vit{spec.size} ({standard.hidden}, '
                f'{standard.layers}) of {name!r}{hint}.')
        return make_config(name)
    return depth_anything_config(version, metric=spec.metric, **arch)


def _infer_architecture(
    state_dict: Mapping[str, torch.Tensor], layout: str, path: Path,
) -> dict[str, Any]:
    """Read ViT width/depth and DPT-head widths from tensor shapes."""
    if layout == 'official':
        names = {
            'cls': 'pretrained.cls_token', 'pos': 'pretrained.pos_embed',
            'fc1': 'pretrained.blocks.0.mlp.fc1.weight',
            'features': 'depth_head.scratch.layer1_rn.weight',
            'head': 'depth_head.scratch.output_conv2.0.weight',
        }
        blocks, project = 'pretrained.blocks.', 'depth_head.projects.{}.weight'
    else:
        names = {
            'cls': 'backbone.embeddings.cls_token',
            'pos': 'backbone.embeddings.position_embeddings',
            'fc1': 'backbone.encoder.layer.0.mlp.fc1.weight',
            'features': 'neck.convs.0.weight', 'head': 'head.conv2.weight',
        }
        blocks = 'backbone.encoder.layer.'
        project = 'neck.reassemble_stage.layers.{}.projection.weight'
    needed = list(names.values()) + [project.format(i) for i in range(4)]
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise ModelLoadError(
            f'{path} lacks tensors needed to read its architecture: {", ".join(missing)}.')
    hidden = int(state_dict[names['cls']].shape[-1])
    grid = round((state_dict[names['pos']].shape[1] - 1) ** 0.5)
    return {
        'hidden_size': hidden,
        'num_layers': _num_blocks(state_dict, blocks),
        'features': int(state_dict[names['features']].shape[0]),
        'out_channels': [int(state_dict[project.format(i)].shape[0]) for i in range(4)],
        'image_size': grid * _PATCH,
        'mlp_ratio': int(state_dict[names['fc1']].shape[0]) // hidden,
        'head_hidden_size': int(state_dict[names['head']].shape[0]),
    }


def _check_folder_config(spec: NameSpec, name: str, config: Any, path: Path) -> None:
    if config.model_type == 'depth_anything':
        if _is_metric(config) != spec.metric:
            kind = 'metric' if _is_metric(config) else 'relative'
            raise ModelLoadError(f'{path} holds a {kind} Depth Anything model, not {name!r}.')
        if spec.size is not None:
            hidden = config.backbone_config.hidden_size
            if hidden != VIT_SIZES[spec.size].hidden:
                raise ModelLoadError(
                    f'{path} holds a ViT with hidden size {hidden}, not the vit{spec.size} '
                    f'({VIT_SIZES[spec.size].hidden}) of {name!r}.')
    elif spec.size is not None and bool(config.is_hybrid) != (spec.size == 'hybrid'):
        kind = 'dpt-hybrid' if config.is_hybrid else 'dpt-large'
        raise ModelLoadError(f'{path} holds a {kind} model, not {name!r}.')


def _is_metric(config: Any) -> bool:
    return getattr(config, 'depth_estimation_type', 'relative') == 'metric'


def _check_keys(
    path: Path, name: str, found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size],
) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [f'{k} (file {tuple(found[k].shape)}, model {tuple(expected[k])})'
                  for k in expected if k in found and found[k].shape != expected[k]]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    for label, keys in (('missing keys', missing), ('unexpected keys', unexpected),
                        ('shape mismatches', mismatched)):
        if keys:
            more = f', ... ({len(keys) - 12} more)' if len(keys) > 12 else ''
            shown = ', '.join(keys[:12]) + more
            parts.append(f'{label} [{len(keys)}]: {shown}')
    raise ModelLoadError(f'Weights in {path} do not fit {name!r}: ' + '; '.join(parts))


# ------------------------------------------------------------------------ torch model


class TorchDepthModel(DepthModel):
    """A transformers depth network run by PyTorch, pre/post-processing on its device.

    Args:
        network: ``DepthAnythingForDepthEstimation`` or ``DPTForDepthEstimation`` (CPU).
        name: registry name reported by ``name``.
        output_kind: what the network emits.
        device: ``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:N'`` (never a silent fallback).
        precision: ``'auto'`` (fp16 on CUDA), ``'fp32'``, ``'fp16'`` (CUDA autocast only),
            ``'bf16'`` (CPU autocast where the CPU has native bf16; CUDA autocast).
        input_size: target size of the network input (pixels; the short side for Depth
            Anything, rounded to a multiple of 14; the side nearest to it for MiDaS, the
            square side for DPT folders, multiples of 32). None: the family's official
            size (518 Depth Anything, 384 MiDaS/DPT).
        warmup: run one inference on a square ``input_size`` image now, so the first
            real frame does not pay for lazy initialisation.
        resize: ``'official'`` or ``'auto'`` (``preprocessing.RESIZE_MODES``).
        compile: ``torch.compile`` the forward (``torch_runtime``; opt-in, slow first call).

    Pre/post-processing follows the official code of the family named by ``name``
    (``preprocessing.InputRecipe``).
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        name: str,
        output_kind: OutputKind,
        device: str = 'auto',
        precision: str = 'auto',
        input_size: int | None = None,
        warmup: bool = True,
        resize: str = 'official',
        compile: bool = False,
    ) -> None:
        from endo_depth_ros.models.torch_runtime import TorchRunner

        self.name = name
        self.output_kind = output_kind
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.backend = 'torch'
        if hasattr(network, 'network_size'):
            # A network that already maps uint8 frames (FrameNetwork, ZoeDepth) runs as is.
            net: Any = network
            input_size = input_size or int(net.input_size)
        else:
            recipe = parse_name(name).recipe
            input_size = input_size or recipe.native_size
            net = DepthNet(network, input_size, recipe, resize)
        if output_kind == 'metric_depth':
            config: Any = getattr(network, 'config', None)
            self.max_depth = (float(config.max_depth) if getattr(config, 'max_depth', None)
                              else None)
        self.net = net.to(self.device).eval()
        self.runner = TorchRunner(self.net, self.device, self.precision, compile=compile)
        self._last_size = self.net.network_size(input_size, input_size)
        if warmup:
            self.infer(np.zeros((input_size, input_size, 3), np.uint8))

    @property
    def input_size(self) -> tuple[int, int]:
        return self._last_size

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        return self.net.network_size(height, width)

    def _infer_batch(self, batch: np.ndarray) -> np.ndarray:
        self._last_size = self.net.network_size(batch.shape[1], batch.shape[2])
        return self.runner(batch)
