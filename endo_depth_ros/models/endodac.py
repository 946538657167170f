"""EndoDAC (BeileiCui/EndoDAC): Depth Anything adapted to endoscopy, as a plain network.

EndoDAC fine-tunes Depth Anything (DINOv2 ViT-S/B + DPT head) with

- DV-LoRA adapters in every ViT MLP (``fc1``, ``fc2``; plain LoRA with ``lora_type=lora``),
  merged into the weights at load time (``adapters.py``; DV-LoRA scaling
  ``lora_alpha / r = 1``, LoRA ``1 / r``, as the authors' layers construct them);
- a convolutional neck: after ViT blocks 2, 5, 8, 11 a residual bottleneck (1x1 -> 3x3 ->
  1x1 convolutions, channel LayerNorms, GELU) added to the patch tokens (``ConvNeck``);
- a sigmoid disparity head whose upsampling doubles the fused map (instead of Depth
  Anything's resize to the patch grid x 14), so a 224x280 ViT input predicts 256x320.

The rest is Depth Anything's architecture (the DPT head reads the last four ViT blocks,
as in V1), so it is built on transformers'
``DepthAnythingForDepthEstimation`` (head: sigmoid x 1, upsampling to the grid x 16).

Checkpoint: the trainer's ``depth_model.pth`` (a state dict with ``encoder.*`` DINOv2
keys including the adapters and ``residual_`` necks, ``depth_head.*`` with four
``conv_depth_*`` heads, and the training ``height``/``width``). Only the finest head
(``conv_depth_1``) is used at inference; the three coarser training heads are dropped.
The ViT size, adapter kind and rank, and the neck blocks are read from the tensors.

Per frame, as the authors' ``test_simple.py``/``evaluate_depth.py``: Lanczos resize to
the training size (256x320), [0, 1] input without normalisation, bilinear
(``align_corners=True``) resize to the ViT input ``(height, width) * 14 / 16``, network,
``disp_to_depth(σ, 0.1, 150)`` scaled disparity (relative: median-scaled by the authors).
The class token is assumed present (``include_cls_token=True``, the authors' default;
checkpoints do not record it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
import re
from typing import Any

import torch
from torch import nn

from endo_depth_ros.errors import ModelLoadError
from endo_depth_ros.models.adapters import find_adapters, merge_adapters
from endo_depth_ros.models.frame_network import FrameNetwork, fixed_size

#: ``disp_to_depth`` range of EndoDAC's evaluation and test code.
MIN_DEPTH = 0.1
MAX_DEPTH = 150.0
#: EndoDAC's training-time output is the ViT input scaled by 16 / 14.
_OUTPUT_PATCH = 16
_PATCH = 14
_HEADS = {384: 6, 768: 12, 1024: 16}


class ConvNeck(nn.Module):
    """Residual bottleneck on the patch-token grid (EndoDAC's ``ResBottleneckBlock``).

    1x1 conv (C -> C/8) -> LayerNorm -> GELU -> 3x3 conv -> LayerNorm -> GELU -> 1x1 conv
    (-> C) -> LayerNorm; convolutions without bias, LayerNorms over channels (eps 1e-6).
    """

    def __init__(self, channels: int, bottleneck: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = grid
        self.conv1 = nn.Conv2d(channels, bottleneck, 1, bias=False)
        self.norm1 = ChannelNorm(bottleneck)
        self.conv2 = nn.Conv2d(bottleneck, bottleneck, 3, padding=1, bias=False)
        self.norm2 = ChannelNorm(bottleneck)
        self.conv3 = nn.Conv2d(bottleneck, channels, 1, bias=False)
        self.norm3 = ChannelNorm(channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.conv1(x)))
        x = self.act(self.norm2(self.conv2(x)))
        return self.norm3(self.conv3(x))


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of an ``(N, C, H, W)`` map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def attach_conv_neck(layer: Any, hidden_size: int, grid: tuple[int, int]) -> None:
    """Add a ``ConvNeck`` to a transformers ``Dinov2Layer``, applied to its patch tokens.

    The neck becomes the child ``conv_neck`` and runs in a forward hook placed before any
    other, so transformers' hidden-state capture (itself a forward hook on
    ``Dinov2Layer``) records the tokens after the neck, as EndoDAC's blocks return them.

    Args:
        layer: the ViT block.
        hidden_size: token width ``C`` (the neck's bottleneck is ``C / 8``).
        grid: ``(rows, cols)`` of the patch grid (fixed: EndoDAC runs at one ViT size).
    """
    layer.conv_neck = ConvNeck(hidden_size, hidden_size // 8, grid)
    layer.register_forward_hook(_apply_conv_neck, prepend=True)


def _apply_conv_neck(layer: Any, _args: Any, output: Any) -> Any:
    tokens = output[0] if isinstance(output, tuple) else output
    batch, _, channels = tokens.shape
    rows, cols = layer.conv_neck.grid
    patches = tokens[:, 1:].reshape(batch, rows, cols, channels).permute(0, 3, 1, 2)
    residual = layer.conv_neck(patches).permute(0, 2, 3, 1).reshape(batch, -1, channels)
    tokens = torch.cat([tokens[:, :1], tokens[:, 1:] + residual], dim=1)
    return (tokens, *output[1:]) if isinstance(output, tuple) else tokens


class EndoDACNetwork(nn.Module):
    """EndoDAC on transformers' Depth Anything: [0, 1] image in, scaled disparity out.

    Args:
        depth_anything: a ``DepthAnythingForDepthEstimation`` with a sigmoid head
            (``depth_estimation_type='metric'``, ``max_depth=1``), its neck blocks
            with ``attach_conv_neck`` on its neck blocks.
        vit_size: ``(height, width)`` the input is resized to (multiples of 14).
        min_depth, max_depth: ``disp_to_depth`` range.

    Input ``(N, 3, H, W)`` in [0, 1]; output ``(N, 1, h, w)`` with ``(h, w) = vit_size *
    16 / 14``.
    """

    def __init__(self, depth_anything: nn.Module, vit_size: tuple[int, int],
                 min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH) -> None:
        super().__init__()
        self.depth_anything = depth_anything
        self.vit_size = vit_size
        self.min_disp, self.max_disp = 1.0 / max_depth, 1.0 / min_depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(x, size=self.vit_size, mode='bilinear', align_corners=True)
        sigmoid = self.depth_anything(pixel_values=x, return_dict=True).predicted_depth
        return (self.min_disp + (self.max_disp - self.min_disp) * sigmoid)[:, None]


def build_endodac(
    *,
    hidden_size: int,
    features: int,
    out_channels: tuple[int, ...] | list[int],
    neck_blocks: tuple[int, ...] | list[int] = (2, 5, 8, 11),
    train_size: tuple[int, int] = (256, 320),
    num_layers: int = 12,
    num_heads: int | None = None,
    image_size: int = 518,
    head_hidden_size: int = 32,
    device: str = 'cpu',
) -> EndoDACNetwork:
    """An EndoDAC network with random weights (``device='meta'``: without storage).

    Args:
        hidden_size, num_layers, num_heads: DINOv2 width, depth, heads (ViT-S 384/12/6,
            ViT-B 768/12/12).
        features, out_channels: DPT fusion width and the four reassemble widths.
        neck_blocks: ViT blocks followed by a ``ConvNeck``.
        train_size: training ``(height, width)`` (multiples of 16); the ViT runs at
            ``train_size * 14 / 16``.
        image_size: DINOv2 pre-training size (position-embedding grid).
    """
    from endo_depth_ros.models.depth_anything import build_network, depth_anything_config

    if train_size[0] % _OUTPUT_PATCH or train_size[1] % _OUTPUT_PATCH:
        raise ModelLoadError(f'EndoDAC training size must be multiples of 16, got {train_size}.')
    vit_size = (train_size[0] * _PATCH // _OUTPUT_PATCH, train_size[1] * _PATCH // _OUTPUT_PATCH)
    # EndoDAC's head reads the last four ViT blocks (``get_intermediate_layers(x, 4)``),
    # as Depth Anything V1 does, not V2's blocks 2, 5, 8, 11.
    config = depth_anything_config(
        1, hidden_size=hidden_size, num_layers=num_layers, features=features,
        out_channels=tuple(out_channels), num_heads=num_heads or _HEADS.get(hidden_size),
        image_size=image_size, head_hidden_size=head_hidden_size, metric=True, max_depth=1)
    network: Any = build_network(config, device=device)
    grid = (vit_size[0] // _PATCH, vit_size[1] // _PATCH)
    layers = network.backbone.encoder.layer
    with torch.device(device):
        for index in neck_blocks:
            attach_conv_neck(layers[index], hidden_size, grid)
    network.head.patch_size = _OUTPUT_PATCH  # EndoDAC's head doubles the fused map
    return EndoDACNetwork(network.eval(), vit_size).eval()


# ------------------------------------------------------------ official key conversion

_HEAD_RENAMES = (
    ('depth_head.conv_depth_1.head.0.', 'depth_head.scratch.output_conv1.'),
    ('depth_head.conv_depth_1.head.2.', 'depth_head.scratch.output_conv2.0.'),
    ('depth_head.conv_depth_1.head.4.', 'depth_head.scratch.output_conv2.2.'),
)
_NECK = re.compile(r'^encoder\.blocks\.(\d+)\.residual_\.(.+)$')
_TRAINING_HEADS = re.compile(r'^depth_head\.conv_depth_[234]\.')


def official_to_hf(state_dict: Mapping[str, torch.Tensor], source: str = 'checkpoint',
                   ) -> dict[str, torch.Tensor]:
    """EndoDAC ``depth_model.pth`` tensors -> keys of ``build_endodac``'s network.

    Adapters are merged; the coarse training heads (``conv_depth_2..4``) are dropped;
    other keys that match no rule pass through (the strict check reports them).
    """
    from endo_depth_ros.models import depth_anything

    kinds = find_adapters(state_dict)
    merged = merge_adapters(
        state_dict, source=source,
        scaling=lambda prefix, rank: 1.0 if kinds[prefix] == 'dv-lora' else 1.0 / rank)
    renamed: dict[str, torch.Tensor] = {}
    necks: dict[str, torch.Tensor] = {}
    for key, value in merged.items():
        if _TRAINING_HEADS.match(key):
            continue
        if (match := _NECK.match(key)) is not None:
            necks[f'backbone.encoder.layer.{match[1]}.conv_neck.{match[2]}'] = value
            continue
        for old, new in _HEAD_RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
        if key.startswith('encoder.'):
            key = 'pretrained.' + key[len('encoder.'):]
        renamed[key] = value
    converted = depth_anything.official_to_hf(renamed)
    out = {'depth_anything.' + k: v for k, v in converted.items()}
    out.update({'depth_anything.' + k: v for k, v in necks.items()})
    return out


def hf_to_official(network: EndoDACNetwork, *, rank: int = 4, dv: bool = True,
                   seed: int = 0) -> dict[str, Any]:
    """A ``depth_model.pth`` content in EndoDAC's layout, for tests and parity checks.

    The plain MLP weights are split into a random base + adapters whose merge gives the
    network's weights back (so the result loads into the same network); coarse heads are
    random; the training size is stored as the trainer does.
    """
    from endo_depth_ros.models import depth_anything

    gen = torch.Generator().manual_seed(seed)
    state = {k[len('depth_anything.'):]: v for k, v in network.state_dict().items()}
    necks = {k: state.pop(k) for k in list(state) if '.conv_neck.' in k}
    official = depth_anything.hf_to_official(state)
    out: dict[str, Any] = {}
    for key, value in official.items():
        if key.startswith('pretrained.'):
            key = 'encoder.' + key[len('pretrained.'):]
        for new, old in _HEAD_RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    for key, value in necks.items():
        block = key.split('.')[3]
        out[f'encoder.blocks.{block}.residual_.{key.split(".conv_neck.")[1]}'] = value
    for key in [k for k in out if re.match(r'^encoder\.blocks\.\d+\.mlp\.fc[12]\.weight$', k)]:
        prefix, weight = key[:-len('.weight')], out[key]
        adapter = {'lora_A': torch.randn(rank, weight.shape[1], generator=gen) * 0.1,
                   'lora_B': torch.randn(weight.shape[0], rank, generator=gen) * 0.1}
        if dv:
            adapter['lora_U'] = torch.randn(rank, 1, generator=gen)
            adapter['lora_V'] = torch.randn(weight.shape[0], 1, generator=gen)
            delta = ((adapter['lora_B'] * adapter['lora_V'])
                     @ (adapter['lora_A'] * adapter['lora_U']))
        else:
            delta = adapter['lora_B'] @ adapter['lora_A'] / rank
        out[key] = weight - delta
        out.update({f'{prefix}.{s}': t for s, t in adapter.items()})
    for head in (2, 3, 4):
        for src, _ in _HEAD_RENAMES:
            for p in ('weight', 'bias'):
                like = out[f'{src}{p}']
                out[src.replace('conv_depth_1', f'conv_depth_{head}') + p] = torch.randn(
                    like.shape, generator=gen) * 0.01
    rows, cols = network.vit_size
    out.update(height=rows * _OUTPUT_PATCH // _PATCH, width=cols * _OUTPUT_PATCH // _PATCH,
               use_stereo=False)
    return out


# ------------------------------------------------------------------------- loading


def load_network(name: str, path: str | Path) -> tuple[FrameNetwork, str]:
    """Build EndoDAC from a ``depth_model.pth`` (or the folder holding it), strictly.

    Returns:
        The ``FrameNetwork`` (CPU, fp32, eval) and ``'relative_disparity'``.

    Raises:
        ModelLoadError: missing/unreadable file, or tensors that do not fit (listed).
    """
    from endo_depth_ros.models.monodepth2 import _tensors, _torch_load, load_strict

    path = Path(path)
    file = path / 'depth_model.pth' if path.is_dir() else path
    if not file.is_file():
        raise ModelLoadError(f'EndoDAC checkpoint not found: {file}')
    raw = _torch_load(file)
    state = _tensors(raw, file)
    height, width = raw.get('height', 256), raw.get('width', 320)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v % _OUTPUT_PATCH == 0
               and 32 <= v <= 4096 for v in (height, width)):
        raise ModelLoadError(
            f'{file} stores a training size height={height!r}, width={width!r}; EndoDAC '
            'needs integer multiples of 16.')
    arch = _architecture(state, file)
    network = build_endodac(train_size=(height, width), device='meta', **arch)
    converted = official_to_hf(state, source=str(file))
    network.to_empty(device='cpu')
    load_strict(network, converted, file, name)
    frame = FrameNetwork(network.float().eval(), fixed_size(height, width),
                         input_size=min(height, width))
    return frame.eval(), 'relative_disparity'


def _architecture(state: Mapping[str, torch.Tensor], file: Path) -> dict[str, Any]:
    needed = ['encoder.cls_token', 'encoder.pos_embed', 'depth_head.scratch.layer1_rn.weight',
              'depth_head.conv_depth_1.head.2.weight'] + [
                  f'depth_head.projects.{i}.weight' for i in range(4)]
    missing = [k for k in needed if k not in state]
    if missing:
        raise ModelLoadError(
            f'{file} is not an EndoDAC depth_model.pth (lacks {", ".join(missing[:4])}).')
    hidden = int(state['encoder.cls_token'].shape[-1])
    blocks = sorted({int(m[1]) for k in state if (m := re.match(r'^encoder\.blocks\.(\d+)\.', k))})
    necks = sorted({int(m[1]) for k in state if (m := _NECK.match(k))})
    grid = round((state['encoder.pos_embed'].shape[1] - 1) ** 0.5)
    return {
        'hidden_size': hidden, 'num_layers': len(blocks), 'num_heads': _HEADS.get(hidden),
        'features': int(state['depth_head.scratch.layer1_rn.weight'].shape[0]),
        'out_channels': [int(state[f'depth_head.projects.{i}.weight'].shape[0]) for i in range(4)],
        'neck_blocks': necks, 'image_size': grid * _PATCH,
        'head_hidden_size': int(state['depth_head.conv_depth_1.head.2.weight'].shape[0]),
    }
