"""``FrameNetwork``: uint8 camera frames in, one float32 map per frame out, for any network.

The Depth Anything/DPT networks get their per-frame work from ``DepthNet``
(preprocessing.py). The other families (monodepth2, SC-SfMLearner, EndoDAC,
ZoeDepth) were trained and evaluated with a PIL Lanczos resize to a fixed training
size and their own normalisation; ``FrameNetwork`` does that inside one traceable
graph, so the torch model and its ONNX export are the same computation:

uint8 ``(N, H, W, 3)`` -> float in [0, 1] -> Lanczos resize to the network size (as
``PIL.Image.resize(..., LANCZOS)``, as two constant matrices) -> optional
``(x - mean) / std`` -> network -> bilinear upsampling to ``(N, H, W)`` (half-pixel
centres, as the authors' ``cv2.resize``/``interpolate(align_corners=False)``).
"""

from __future__ import annotations

from collections.abc import Callable
import math

import numpy as np
import torch
from torch import nn

#: ``size_rule(height, width) -> (network_height, network_width)``.
SizeRule = Callable[[int, int], tuple[int, int]]
_LANCZOS_SUPPORT = 3.0


def lanczos_matrix(size_in: int, size_out: int) -> np.ndarray:
    """``(size_out, size_in)`` float64 weights of PIL's Lanczos resize along one axis.

    Same taps as Pillow's ``ImagingResample`` with ``Image.LANCZOS`` (a = 3 Lanczos,
    widened by the downscaling factor, each row normalised to sum 1); Pillow then
    rounds to uint8 after each axis, which this float version does not (<= 0.5/255 per
    axis).
    """
    scale = size_in / size_out
    filter_scale = max(scale, 1.0)
    support = _LANCZOS_SUPPORT * filter_scale
    matrix = np.zeros((size_out, size_in))
    for out in range(size_out):
        center = (out + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), size_in)
        x = (np.arange(lo, hi) - center + 0.5) / filter_scale
        weights = np.sinc(x) * np.sinc(x / _LANCZOS_SUPPORT)
        weights[np.abs(x) >= _LANCZOS_SUPPORT] = 0.0
        total = weights.sum()
        matrix[out, lo:hi] = weights / total if total != 0.0 else weights
    return matrix


def fixed_size(height: int, width: int) -> SizeRule:
    """A size rule that always answers ``(height, width)`` (the training size)."""
    def rule(_h: int, _w: int) -> tuple[int, int]:
        return height, width
    return rule


def aspect_size(short_side: int, multiple: int) -> SizeRule:
    """Keep the image aspect, short side ``short_side``, both sides multiples of ``multiple``."""
    def rule(h: int, w: int) -> tuple[int, int]:
        scale = short_side / min(h, w)
        return (max(multiple, round(h * scale / multiple) * multiple),
                max(multiple, round(w * scale / multiple) * multiple))
    return rule


class FrameNetwork(nn.Module):
    """uint8 RGB batch -> one float32 map per image, for a network with a fixed recipe.

    Args:
        network: maps ``(N, 3, h, w)`` float to ``(N, 1, h', w')`` or ``(N, h', w')``,
            already in the output units (e.g. scaled disparity).
        size_rule: network input ``(h, w)`` for an image ``(H, W)``.
        input_size: reported as ``input_size`` (ONNX metadata); the size rule decides.
        mean, std: per-channel normalisation after scaling to [0, 1]; ``None``: none.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        network: nn.Module,
        size_rule: SizeRule,
        *,
        input_size: int,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.size_rule = size_rule
        self.input_size = input_size
        self.normalise = mean is not None
        self.register_buffer('mean', torch.tensor(mean or (0.0, 0.0, 0.0)).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(std or (1.0, 1.0, 1.0)).view(1, 3, 1, 1),
                             persistent=False)
        self._matrices: dict[tuple[int, int], torch.Tensor] = {}

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input ``(h, w)`` for an image of ``height x width``."""
        return self.size_rule(height, width)

    def _matrix(self, size_in: int, size_out: int, like: torch.Tensor) -> torch.Tensor:
        key = (size_in, size_out)
        if key not in self._matrices:
            # Cached per size: a camera has one size, and tracing bakes it in as a constant.
            self._matrices[key] = torch.from_numpy(lanczos_matrix(size_in, size_out))
        return self._matrices[key].to(like.device, like.dtype)

    def resize(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Lanczos-resize ``(N, C, H, W)`` to ``(N, C, height, width)`` (PIL's taps)."""
        if (height, width) == tuple(x.shape[-2:]):
            return x
        rows = self._matrix(int(x.shape[-2]), height, x)
        cols = self._matrix(int(x.shape[-1]), width, x)
        return torch.matmul(torch.matmul(rows, x), cols.T)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``rgb``: (N, H, W, 3) uint8 -> (N, H, W) float32 network output."""
        height, width = int(rgb.shape[1]), int(rgb.shape[2])
        net_h, net_w = self.network_size(height, width)
        x = rgb.permute(0, 3, 1, 2).to(self.mean.dtype) * (1.0 / 255.0)
        x = self.resize(x, net_h, net_w)
        if self.normalise:
            x = (x - self.mean) / self.std
        pred = self.network(x)
        if pred.ndim == 3:
            pred = pred[:, None]
        if tuple(pred.shape[-2:]) != (height, width):
            pred = nn.functional.interpolate(
                pred, size=(height, width), mode='bilinear', align_corners=False)
        return pred[:, 0].float()


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (not buffers) of ``module``."""
    return sum(math.prod(p.shape) for p in module.parameters())
