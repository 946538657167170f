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
``save_pretrained`` folders are unaffected. The resize is written as two matrix products
built from the input size (not as a Resize operator), so every runtime an exported graph
goes to (onnxruntime, OpenVINO, TensorRT) computes the same embeddings.
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
    side = int(math.sqrt(num_positions))
    dim = position_embeddings.shape[-1]
    patch = position_embeddings[:, 1:].float().reshape(side, side, dim)
    rows = bicubic_matrix(side, grid_height, (grid_height + INTERPOLATE_OFFSET) / side)
    cols = bicubic_matrix(side, grid_width, (grid_width + INTERPOLATE_OFFSET) / side)
    # out[i, j] = sum_k,l rows[i, k] * cols[j, l] * patch[k, l]: two matrix products.
    patch = torch.einsum('ik,kld,jl->ijd', rows, patch, cols)
    patch = patch.reshape(1, grid_height * grid_width, dim)
    out = torch.cat((position_embeddings[:, :1].float(), patch), dim=1)
    return out.to(position_embeddings.dtype)


def bicubic_matrix(in_size: int, out_size: int, scale: float) -> torch.Tensor:
    """``(out_size, in_size)`` weights of torch's bicubic resize along one axis.

    The same sampling as ``interpolate(mode='bicubic', align_corners=False,
    antialias=False, scale_factor=scale)``: half-pixel centres stepped by ``1 / scale``,
    Keys' cubic kernel with a = -0.75, neighbours clamped to the border. Written as a
    matrix because runtimes disagree on a Resize given scales (OpenVINO's bicubic
    samples by the ratio of the sizes: 6 % off here), while a matrix product is exact
    everywhere, and traced graphs keep it for any input size.
    """
    a = -0.75
    source = (torch.arange(out_size, dtype=torch.float32) + 0.5) / scale - 0.5
    base = torch.floor(source)
    t = (source - base)[:, None]
    offsets = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    distance = (t - offsets).abs()  # (out, 4): distance to each of the 4 neighbours
    near = ((a + 2) * distance - (a + 3)) * distance * distance + 1
    far = ((a * distance - 5 * a) * distance + 8 * a) * distance - 4 * a
    weights = torch.where(distance <= 1, near, far)
    neighbours = (base[:, None] + offsets).clamp(0, in_size - 1)
    positions = torch.arange(in_size, dtype=torch.float32)
    # Sum the weights of neighbours that land on the same (clamped) input position.
    return (weights[:, :, None] * (neighbours[:, :, None] == positions)).sum(dim=1)


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
