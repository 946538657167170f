"""Original MiDaS v3 checkpoints (isl-org/MiDaS ``dpt_large_384.pt``) as transformers' DPT.

The official files hold a timm ViT (``pretrained.model.*``), the reassemble blocks
(``pretrained.act_postprocess{1-4}``) and the fusion decoder (``scratch.*``). They map
one to one onto ``DPTForDepthEstimation`` (the fused ``attn.qkv`` is split), except
timm's ImageNet classifier (``pretrained.model.head``), which MiDaS never runs and
which is dropped. The ViT's LayerNorms use timm's eps 1e-6 (transformers' DPT
default is 1e-12).

``MidasDPT`` runs the network at any aspect ratio: transformers' plain-ViT DPT
reshapes tokens to a square grid, the official code to the input's
``(h / 16) x (w / 16)``. Preprocessing is ``preprocessing.MIDAS_V3`` (the official
``run.py``: aspect kept, the side nearest to 384 scaled to it, multiples of 32,
bicubic; mean = std = 0.5; bicubic output upsampling).

DPT-Hybrid (``dpt_hybrid_384.pt``: a timm ResNet50-BiT stem before the ViT) is not
converted; its Hugging Face folder loads as ``dpt-hybrid``.
"""

from __future__ import annotations

from collections.abc import Mapping
import re
from typing import Any

import torch
from torch import nn

#: Official key prefix of the timm classifier that MiDaS never uses.
UNUSED_PREFIX = 'pretrained.model.head.'


def midas_config(size: str) -> Any:
    """The ``DPTConfig`` of the official MiDaS v3 ``'large'`` network (ViT-L/16, 384)."""
    from transformers import DPTConfig

    if size != 'large':
        from endo_depth_ros.errors import ModelLoadError
        raise ModelLoadError(
            f'Original MiDaS checkpoints of size {size!r} are not supported; only dpt_large_384 '
            '(midas-dpt-large). Load a DPT-Hybrid Hugging Face folder as dpt-hybrid.')
    return DPTConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        backbone_out_indices=[5, 11, 17, 23], neck_hidden_sizes=[256, 512, 1024, 1024],
        reassemble_factors=[4, 2, 1, 0.5], readout_type='project', image_size=384,
        patch_size=16, layer_norm_eps=1e-6)


def _pairs(num_layers: int) -> list[tuple[str, str]]:
    """(official key, transformers key) for every tensor except the fused ``attn.qkv``."""
    vit, emb = 'pretrained.model', 'dpt.embeddings'
    pairs = [
        (f'{vit}.cls_token', f'{emb}.cls_token'),
        (f'{vit}.pos_embed', f'{emb}.position_embeddings'),
        (f'{vit}.patch_embed.proj.weight', f'{emb}.patch_embeddings.projection.weight'),
        (f'{vit}.patch_embed.proj.bias', f'{emb}.patch_embeddings.projection.bias'),
        (f'{vit}.norm.weight', 'dpt.layernorm.weight'),
        (f'{vit}.norm.bias', 'dpt.layernorm.bias'),
    ]
    block = {'norm1': 'layernorm_before', 'norm2': 'layernorm_after',
             'attn.proj': 'attention.output.dense', 'mlp.fc1': 'intermediate.dense',
             'mlp.fc2': 'output.dense'}
    for i in range(num_layers):
        pairs += [(f'{vit}.blocks.{i}.{a}.{p}', f'dpt.encoder.layer.{i}.{b}.{p}')
                  for a, b in block.items() for p in ('weight', 'bias')]
    stage = 'neck.reassemble_stage'
    for i in range(4):
        post = f'pretrained.act_postprocess{i + 1}'
        pairs += [(f'{post}.0.project.0.{p}', f'{stage}.readout_projects.{i}.0.{p}')
                  for p in ('weight', 'bias')]
        pairs += [(f'{post}.3.{p}', f'{stage}.layers.{i}.projection.{p}')
                  for p in ('weight', 'bias')]
        if i != 2:  # the third stage keeps its resolution (no resize layer)
            pairs += [(f'{post}.4.{p}', f'{stage}.layers.{i}.resize.{p}')
                      for p in ('weight', 'bias')]
        pairs.append((f'scratch.layer{i + 1}_rn.weight', f'neck.convs.{i}.weight'))
    for n in range(1, 5):
        # refinenet4 fuses the coarsest features first: fusion layers run in reverse order.
        src, dst = f'scratch.refinenet{n}', f'neck.fusion_stage.layers.{4 - n}'
        convs = [('out_conv', 'projection')] + [
            (f'resConfUnit{u}.conv{c}', f'residual_layer{u}.convolution{c}')
            for u in (1, 2) for c in (1, 2)]
        pairs += [(f'{src}.{a}.{p}', f'{dst}.{b}.{p}')
                  for a, b in convs for p in ('weight', 'bias')]
    pairs += [(f'scratch.output_conv.{i}.{p}', f'head.head.{i}.{p}')
              for i in (0, 2, 4) for p in ('weight', 'bias')]
    return pairs


def _num_blocks(keys: Any, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r'(\d+)\.')
    indices = [int(m[1]) for k in keys if (m := pattern.match(k))]
    return max(indices) + 1 if indices else 0


def is_official_midas(keys: Any) -> bool:
    """Whether a state dict's keys are the official MiDaS DPT layout."""
    keys = list(keys)
    return any(k.startswith('pretrained.model.') for k in keys) and any(
        k.startswith('scratch.') for k in keys)


def is_hybrid(keys: Any) -> bool:
    """Whether official MiDaS keys hold the ResNet50 stem of DPT-Hybrid."""
    return any(k.startswith('pretrained.model.patch_embed.backbone.') for k in keys)


def official_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official MiDaS v3 DPT keys -> transformers ``DPTForDepthEstimation`` keys.

    ``attn.qkv`` is split into query/key/value; the unused classifier is dropped; keys
    that match no rule pass through unchanged, so the strict check reports them.
    """
    remaining = {k: v for k, v in state_dict.items() if not k.startswith(UNUSED_PREFIX)}
    num_layers = _num_blocks(remaining, 'pretrained.model.blocks.')
    converted: dict[str, torch.Tensor] = {}
    for src, dst in _pairs(num_layers):
        if src in remaining:
            converted[dst] = remaining.pop(src)
    for i in range(num_layers):
        for p in ('weight', 'bias'):
            qkv = remaining.pop(f'pretrained.model.blocks.{i}.attn.qkv.{p}', None)
            if qkv is None:
                continue
            prefix = f'dpt.encoder.layer.{i}.attention.attention'
            for part, name in zip(qkv.chunk(3, dim=0), ('query', 'key', 'value'), strict=True):
                converted[f'{prefix}.{name}.{p}'] = part.contiguous()
    converted.update(remaining)
    return converted


def hf_to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers DPT keys -> official MiDaS keys (inverse of ``official_to_hf``).

    The classifier, which ``official_to_hf`` drops, is not recreated.
    """
    remaining = dict(state_dict)
    num_layers = _num_blocks(remaining, 'dpt.encoder.layer.')
    converted: dict[str, torch.Tensor] = {}
    for src, dst in _pairs(num_layers):
        if dst in remaining:
            converted[src] = remaining.pop(dst)
    for i in range(num_layers):
        for p in ('weight', 'bias'):
            prefix = f'dpt.encoder.layer.{i}.attention.attention'
            names = [f'{prefix}.{n}.{p}' for n in ('query', 'key', 'value')]
            if all(n in remaining for n in names):
                converted[f'pretrained.model.blocks.{i}.attn.qkv.{p}'] = torch.cat(
                    [remaining.pop(n) for n in names], dim=0)
    converted.update(remaining)
    return converted


def _forward_any_aspect(self: nn.Module, pixel_values: torch.Tensor, **_: Any) -> Any:
    """``DPTForDepthEstimation.forward`` with the token grid of the input's aspect ratio."""
    from transformers.modeling_outputs import DepthEstimatorOutput

    config: Any = self.config
    outputs: Any = self.dpt(pixel_values, output_hidden_states=True)  # type: ignore[operator]
    # hidden_states[0] is the embedding output; blocks follow.
    hidden = [h for i, h in enumerate(outputs.hidden_states[1:])
              if i in config.backbone_out_indices]
    height, width = int(pixel_values.shape[-2]), int(pixel_values.shape[-1])
    grid = (height // config.patch_size, width // config.patch_size)
    features = self.neck(hidden, *grid)  # type: ignore[operator]
    return DepthEstimatorOutput(predicted_depth=self.head(features))  # type: ignore[operator]


_CLASSES: dict[type, type] = {}


def use_any_aspect(network: nn.Module) -> nn.Module:
    """Make a plain-ViT ``DPTForDepthEstimation`` accept non-square inputs (as MiDaS).

    Only the forward changes (no parameters): state dicts and exports are unaffected.
    """
    base = type(network)
    if base not in _CLASSES:
        _CLASSES[base] = type(f'AnyAspect{base.__name__}', (base,), {
            'forward': _forward_any_aspect,
            '__doc__': f'{base.__name__} with a token grid of the input aspect ratio.'})
    network.__class__ = _CLASSES[base]
    return network
