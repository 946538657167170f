"""DINOv2 position embeddings resized as the official DINOv2 / Depth Anything code does.

The pre-training grid of position embeddings (37 x 37 for 518-pixel inputs) must be
resized to the token grid of every other input size. The official code (DINOv2, and
the copies in Depth Anything V1/V2 and Video Depth Anything) resizes with bicubic
interpolation (no antialiasing) given a *scale factor* of ``(grid + 0.1) / sqrt(N)``
per axis, where ``N`` is the number of pre-training patches; the output size is the
floor of ``sqrt(N) * scale`` = the token grid, and the sampling positions follow the
scale factor, not the ratio of the sizes. transformers resizes to a target *size*,
which samples at slightly different positions: a relative difference of about 1e-3
in the depth of every non-square input. The official code keeps the embeddings as
they are when the input is square and has the pre-training number of patches.

``use_official_position_embeddings`` switches a transformers network to the official
rule. Only a method changes (no parameter, no buffer), so state dicts and
``save_pretrained`` folders are unaffected, and the rule uses only Python numbers
derived from the input size, so traced/exported graphs bake the same scale factors in.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Offset added to the token grid before computing the scale (the official value).
INTERPOLATE_OFFSET = 0.1


def resize_position_embeddings(
    position_embeddings: torch.Tensor, grid_height: int, grid_width: int,
) -> torch.Tensor:
    """Resize class + patch position embeddings to a token grid, as the official code.

    Args:
        position_embeddings: ``(1, 1 + N, C)``: class token first, then a square
            ``sqrt(N) x sqrt(N)`` grid in row-major order.
        grid_height, grid_width: token grid of the input (pixels // patch size).

    Returns:
        ``(1, 1 + grid_height * grid_width, C)`` in the input's dtype (the resize
        itself runs in float32).
    """
    num_positions = position_embeddings.shape[1] - 1
    side = math.sqrt(num_positions)
    dim = position_embeddings.shape[-1]
    patch = position_embeddings[:, 1:].float().reshape(1, int(side), int(side), dim)
    scale = ((grid_height + INTERPOLATE_OFFSET) / side, (grid_width + INTERPOLATE_OFFSET) / side)
    patch = nn.functional.interpolate(
        patch.permute(0, 3, 1, 2), scale_factor=scale, mode='bicubic', align_corners=False,
        antialias=False)
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid_height * grid_width, dim)
    out = torch.cat((position_embeddings[:, :1].float(), patch), dim=1)
    return out.to(position_embeddings.dtype)


def _official_interpolate_pos_encoding(
    self: nn.Module, embeddings: torch.Tensor, height: int, width: int,
) -> torch.Tensor:
    """Drop-in for transformers' ``Dinov2Embeddings.interpolate_pos_encoding``."""
    position_embeddings: torch.Tensor = self.position_embeddings  # type: ignore[assignment]
    patch_size: tuple[int, int] = self.patch_embeddings.patch_size  # type: ignore[union-attr,assignment]
    patch_height, patch_width = patch_size
    num_patches = embeddings.shape[1] - 1
    if num_patches == position_embeddings.shape[1] - 1 and height == width:
        return position_embeddings
    return resize_position_embeddings(
        position_embeddings, int(height) // patch_height, int(width) // patch_width)


def use_official_position_embeddings(network: nn.Module) -> int:
    """Make every DINOv2 embedding module inside ``network`` resize as the official code.

    Args:
        network: any module containing transformers ``Dinov2Embeddings`` (Depth
            Anything, Video Depth Anything, a bare ``Dinov2Model``/``Dinov2Backbone``).

    Returns:
        How many embedding modules were switched (0: none found).
    """
    from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings

    count = 0
    for module in network.modules():
        if isinstance(module, Dinov2Embeddings) and not isinstance(module, _OfficialEmbeddings):
            module.__class__ = _official_class(type(module))
            count += 1
    return count


class _OfficialEmbeddings:
    """Marker mixed into the switched embedding classes."""


_CLASSES: dict[type, type] = {}


def _official_class(base: type) -> type:
    # One subclass per transformers class, created once: it only overrides the resize.
    if base not in _CLASSES:
        _CLASSES[base] = type(f'Official{base.__name__}', (_OfficialEmbeddings, base), {
            'interpolate_pos_encoding': _official_interpolate_pos_encoding,
            '__doc__': f'{base.__name__} with the official DINOv2 position-embedding resize.',
        })
    return _CLASSES[base]
