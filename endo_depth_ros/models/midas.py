"""Original MiDaS v3 checkpoints (``dpt_large_384.pt``, ``dpt_hybrid_384.pt``) as transformers DPT.

The official files hold a timm ViT (``pretrained.model.*``), the reassemble blocks
(``pretrained.act_postprocess{1-4}``) and the fusion decoder (``scratch.*``). They map
one to one onto ``DPTForDepthEstimation`` (the fused ``attn.qkv`` is split), except
timm's ImageNet classifier (``pretrained.model.head``), which MiDaS never runs and
which is dropped. The ViT's LayerNorms use timm's eps 1e-6 (transformers' DPT
default is 1e-12).

DPT-Hybrid (timm ``vit_base_resnet50_384``) puts a BiT ResNet-50 stem before a ViT-B/16:
weight-standardised convolutions (eps 1e-8) with GroupNorm, "same" padding, stages of
3, 4 and 9 bottlenecks, and a 1x1 projection of the 1024-channel 1/16 feature map to
the tokens. transformers' ``BitBackbone`` is the same network under other names
(``patch_embed.backbone.stem.conv`` -> ``bit.embedder.convolution``,
``stages.S.blocks.B`` -> ``bit.encoder.stages.S.layers.B``). Its first two reassemble
inputs are the outputs of ResNet stages 1 and 2 (no parameters in
``act_postprocess1/2``), the last two ViT blocks 9 and 12 (MiDaS hooks ``[0, 1, 8, 11]``).

``use_any_aspect`` makes both run at any aspect ratio: transformers' DPT reshapes tokens
to a square grid (and its hybrid embeddings refuse any size but 384 x 384), the official
code uses the input's ``(h / 16) x (w / 16)`` grid with bilinearly resized position
embeddings. Preprocessing is ``preprocessing.MIDAS_V3`` for both (the official
``run.py``: aspect kept, the side nearest to 384 scaled to it, multiples of 32,
bicubic; mean = std = 0.5; bicubic output upsampling).
"""

from __future__ import annotations

from collections.abc import Mapping
import re
from typing import Any

import torch
from torch import nn

#: Official key prefix of the timm classifier that MiDaS never uses.
UNUSED_PREFIX = 'pretrained.model.head.'
#: Official key prefix of DPT-Hybrid's ResNet stem (timm ``ResNetV2``).
OFFICIAL_RESNET = 'pretrained.model.patch_embed.backbone.'
#: The same network in transformers (``BitBackbone`` inside the hybrid embeddings).
HF_RESNET = 'dpt.embeddings.backbone.bit.'


def midas_config(size: str) -> Any:
    """The ``DPTConfig`` of an official MiDaS v3 network: ``'large'`` or ``'hybrid'``.

    ``'large'``: ViT-L/16 at 384. ``'hybrid'``: BiT ResNet-50 (3, 4, 9 blocks) + ViT-B/16
    at 384, reassembling ResNet stages 1-2 and ViT blocks 9 and 12. Both with timm's
    LayerNorm eps (1e-6).
    """
    from transformers import DPTConfig

    if size == 'large':
        return DPTConfig(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
            intermediate_size=4096, backbone_out_indices=[5, 11, 17, 23],
            neck_hidden_sizes=[256, 512, 1024, 1024], reassemble_factors=[4, 2, 1, 0.5],
            readout_type='project', image_size=384, patch_size=16, layer_norm_eps=1e-6)
    if size == 'hybrid':
        # transformers reads only backbone_out_indices[2:] (ViT blocks); the first two
        # reassemble inputs are ResNet stages, as MiDaS's hooks [0, 1, 8, 11] say.
        return DPTConfig(
            is_hybrid=True, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, backbone_out_indices=[0, 1, 8, 11],
            neck_hidden_sizes=[256, 512, 768, 768], reassemble_factors=[1, 1, 1, 0.5],
            readout_type='project', image_size=384, patch_size=16,
            backbone_featmap_shape=[1, 1024, 24, 24], neck_ignore_stages=[0, 1],
            backbone_config=bit_config(), layer_norm_eps=1e-6)
    from endo_depth_ros.errors import ModelLoadError
    raise ModelLoadError(
        f'Original MiDaS checkpoints of size {size!r} are not supported; only dpt_large_384 '
        '(midas-dpt-large) and dpt_hybrid_384 (midas-dpt-hybrid).')


def bit_config(embedding_size: int = 64, hidden_sizes: tuple[int, ...] = (256, 512, 1024),
               depths: tuple[int, ...] = (3, 4, 9), num_groups: int = 32) -> dict[str, Any]:
    """The ``BitConfig`` fields of timm's hybrid-ViT ResNet (``ResNetV2``, ``preact=False``).

    Non-pre-activation bottlenecks, "same" padding (dynamic for strided layers, as timm's
    ``StdConv2dSame``/``MaxPool2dSame``), and all three stages as outputs. Defaults: the
    ResNet-50 stem of ``vit_base_resnet50_384``.
    """
    return {'model_type': 'bit', 'layer_type': 'bottleneck', 'global_padding': 'same',
            'embedding_dynamic_padding': True, 'embedding_size': embedding_size,
            'hidden_sizes': list(hidden_sizes), 'depths': list(depths),
            'num_groups': num_groups, 'hidden_act': 'relu',
            'out_features': [f'stage{i + 1}' for i in range(len(depths))]}


def _pairs(num_layers: int, hybrid: bool) -> list[tuple[str, str]]:
    """(official key, transformers key) for the ViT and DPT tensors (not ``attn.qkv``, not
    the ResNet stem, whose names follow ``_RESNET_RULES``)."""
    vit, emb = 'pretrained.model', 'dpt.embeddings'
    patch = f'{emb}.projection' if hybrid else f'{emb}.patch_embeddings.projection'
    pairs = [
        (f'{vit}.cls_token', f'{emb}.cls_token'),
        (f'{vit}.pos_embed', f'{emb}.position_embeddings'),
        (f'{vit}.patch_embed.proj.weight', f'{patch}.weight'),
        (f'{vit}.patch_embed.proj.bias', f'{patch}.bias'),
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
        # Hybrid: the first two reassemble inputs are ResNet feature maps, used as they are.
        if not (hybrid and i < 2):
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


#: ResNet stem renames after the prefixes ``OFFICIAL_RESNET`` -> ``HF_RESNET`` and back;
#: the tensors inside a block (conv1-3, norm1-3, downsample.conv/norm) keep their names.
_RESNET_TO_HF: tuple[tuple[str, str], ...] = (
    (r'stem\.conv\.', 'embedder.convolution.'),
    (r'stem\.norm\.', 'embedder.norm.'),
    (r'stages\.(\d+)\.blocks\.(\d+)\.', r'encoder.stages.\1.layers.\2.'),
)
_RESNET_TO_OFFICIAL: tuple[tuple[str, str], ...] = (
    (r'embedder\.convolution\.', 'stem.conv.'),
    (r'embedder\.norm\.', 'stem.norm.'),
    (r'encoder\.stages\.(\d+)\.layers\.(\d+)\.', r'stages.\1.blocks.\2.'),
)


def _rename_resnet(key: str, to_hf: bool) -> str | None:
    """The other side's name of a ResNet-stem key, or None if ``key`` is not one."""
    src, dst, rules = ((OFFICIAL_RESNET, HF_RESNET, _RESNET_TO_HF) if to_hf
                       else (HF_RESNET, OFFICIAL_RESNET, _RESNET_TO_OFFICIAL))
    if not key.startswith(src):
        return None
    for pattern, replacement in rules:
        renamed, count = re.subn('^' + pattern, replacement, key[len(src):])
        if count:
            return dst + renamed
    return None


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
    """Whether official MiDaS keys hold the ResNet-50 stem of DPT-Hybrid."""
    return any(k.startswith(OFFICIAL_RESNET) for k in keys)


def _convert(
    state_dict: Mapping[str, torch.Tensor], *, to_hf: bool,
) -> dict[str, torch.Tensor]:
    remaining = dict(state_dict)
    hybrid = any(k.startswith(OFFICIAL_RESNET if to_hf else HF_RESNET) for k in remaining)
    blocks = 'pretrained.model.blocks.' if to_hf else 'dpt.encoder.layer.'
    num_layers = _num_blocks(remaining, blocks)
    converted: dict[str, torch.Tensor] = {}
    for official, hf in _pairs(num_layers, hybrid):
        src, dst = (official, hf) if to_hf else (hf, official)
        if src in remaining:
            converted[dst] = remaining.pop(src)
    for key in list(remaining):
        renamed = _rename_resnet(key, to_hf)
        if renamed is not None:
            converted[renamed] = remaining.pop(key)
    for i in range(num_layers):
        for p in ('weight', 'bias'):
            fused = f'pretrained.model.blocks.{i}.attn.qkv.{p}'
            prefix = f'dpt.encoder.layer.{i}.attention.attention'
            parts = [f'{prefix}.{n}.{p}' for n in ('query', 'key', 'value')]
            if to_hf and fused in remaining:
                qkv = remaining.pop(fused)
                for name, part in zip(parts, qkv.chunk(3, dim=0), strict=True):
                    converted[name] = part.contiguous()
            elif not to_hf and all(n in remaining for n in parts):
                converted[fused] = torch.cat([remaining.pop(n) for n in parts], dim=0)
    converted.update(remaining)
    return converted


def official_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official MiDaS v3 DPT keys (large or hybrid) -> transformers ``DPTForDepthEstimation``.

    ``attn.qkv`` is split into query/key/value; the unused classifier is dropped; keys
    that match no rule pass through unchanged, so the strict check reports them.
    """
    return _convert({k: v for k, v in state_dict.items() if not k.startswith(UNUSED_PREFIX)},
                    to_hf=True)


def hf_to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers DPT keys -> official MiDaS keys (inverse of ``official_to_hf``).

    The classifier, which ``official_to_hf`` drops, is not recreated.
    """
    return _convert(state_dict, to_hf=False)


def _forward_any_aspect(self: nn.Module, pixel_values: torch.Tensor, **_: Any) -> Any:
    """``DPTForDepthEstimation.forward`` with the token grid of the input's aspect ratio."""
    from transformers.modeling_outputs import DepthEstimatorOutput

    config: Any = self.config
    outputs: Any = self.dpt(pixel_values, output_hidden_states=True)  # type: ignore[operator]
    # hidden_states[0] is the embedding output; blocks follow.
    blocks = outputs.hidden_states[1:]
    if config.is_hybrid:
        # ResNet stages 1 and 2 (feature maps), then the last two hooked ViT blocks.
        hidden = list(outputs.intermediate_activations) + [
            h for i, h in enumerate(blocks) if i in config.backbone_out_indices[2:]]
    else:
        hidden = [h for i, h in enumerate(blocks) if i in config.backbone_out_indices]
    height, width = int(pixel_values.shape[-2]), int(pixel_values.shape[-1])
    grid = (height // config.patch_size, width // config.patch_size)
    features = self.neck(hidden, *grid)  # type: ignore[operator]
    return DepthEstimatorOutput(predicted_depth=self.head(features))  # type: ignore[operator]


def _any_size_hybrid_embeddings(self: nn.Module, pixel_values: torch.Tensor,
                                interpolate_pos_encoding: bool = True) -> Any:
    """``DPTViTHybridEmbeddings.forward`` that resizes position embeddings for any size.

    transformers refuses inputs other than ``image_size`` unless told to interpolate
    (and ``DPTModel`` never tells it); MiDaS always interpolates (bilinear, to the
    token grid), which at 384 x 384 is the identity. ``interpolate_pos_encoding`` is
    accepted for transformers' signature and ignored.
    """
    from transformers.models.dpt.modeling_dpt import DPTViTHybridEmbeddings

    return DPTViTHybridEmbeddings.forward(
        self, pixel_values, interpolate_pos_encoding=True)  # type: ignore[arg-type]


_CLASSES: dict[type, type] = {}


def _subclass(base: type, prefix: str, methods: dict[str, Any], doc: str) -> type:
    # One subclass per transformers class, created once: only methods change.
    if base not in _CLASSES:
        _CLASSES[base] = type(f'{prefix}{base.__name__}', (base,), {**methods, '__doc__': doc})
    return _CLASSES[base]


def use_any_aspect(network: nn.Module) -> nn.Module:
    """Make a ``DPTForDepthEstimation`` (plain ViT or hybrid) accept any input size, as MiDaS.

    Sides must be multiples of the patch size (16). Only methods change (no parameters):
    state dicts and exports are unaffected; square inputs give transformers' own output.
    """
    from transformers.models.dpt.modeling_dpt import DPTViTHybridEmbeddings

    base = type(network)
    network.__class__ = _subclass(
        base, 'AnyAspect', {'forward': _forward_any_aspect},
        f'{base.__name__} with a token grid of the input aspect ratio.')
    for module in network.modules():
        if type(module) is DPTViTHybridEmbeddings:
            module.__class__ = _subclass(
                DPTViTHybridEmbeddings, 'AnySize', {'forward': _any_size_hybrid_embeddings},
                'DPTViTHybridEmbeddings that resize position embeddings for any input size.')
    return network
