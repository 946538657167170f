"""The video network (Depth Anything V2 with a temporal head) and its input size rule."""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from endo_depth_ros.models import depth_anything as da
from endo_depth_ros.models.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    network_size,
)
from endo_depth_ros.models.video_depth_anything.motion import (
    ATTENTION_BLOCKS,
    MotionModule,
)

#: Aspect ratio above which the official code reduces the input size (16:9).
MAX_RATIO = 1.78
#: Fixed network input (height, width) of EndoDAV.
ENDODAV_INPUT = (224, 280)
PATCH = 14


class VideoDepthNet(nn.Module):
    """Depth Anything V2 network with the temporal DPT head (normalised input).

    Args:
        config: a transformers ``DepthAnythingConfig`` (``depth_anything_config(2, ...)``);
            its backbone, neck and head are built by ``depth_anything.build_network``.
        device: where to build (``'meta'``: allocate nothing).
    """

    # transformers modules (DINOv2 backbone, reassemble/fusion neck, output head).
    backbone: Any
    neck: Any
    head: Any

    def __init__(self, config: Any, *, device: str | torch.device = 'cpu') -> None:
        super().__init__()
        base: Any = da.build_network(config, device=device)
        self.config = config
        self.backbone = base.backbone
        self.neck = base.neck
        self.head = base.head
        sizes = config.neck_hidden_sizes
        features = config.fusion_hidden_size
        with torch.device(device):
            self.motion_modules = nn.ModuleList(
                [MotionModule(c) for c in (sizes[2], sizes[3], features, features)])
        self.eval()

    def forward(
        self, pixel_values: torch.Tensor, frames: int,
        cache: Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Predict depth for clips of frames.

        Args:
            pixel_values: (B * T, 3, h, w) normalised frames, h and w multiples of 14.
            frames: T, frames per clip.
            cache: ``STATES_PER_FRAME`` tensors (B * h_i * w_i, Tc, C_i) of Tc earlier
                frames (streaming), or None (the T frames attend to each other only).

        Returns:
            Depth (B * T, h, w) and the ``STATES_PER_FRAME`` new hidden states
            (B * h_i * w_i, T, C_i), module by module.
        """
        height, width = int(pixel_values.shape[2]), int(pixel_values.shape[3])
        ph, pw = height // PATCH, width // PATCH
        hidden = self.backbone(pixel_values).feature_maps
        layers = list(self.neck.reassemble_stage(list(hidden), ph, pw))
        states: list[torch.Tensor] = []

        def temporal(i: int, x: torch.Tensor) -> torch.Tensor:
            part = None if cache is None else cache[i * ATTENTION_BLOCKS:(i + 1) * ATTENTION_BLOCKS]
            x, new = self.motion_modules[i](x, frames, part)
            states.extend(new)
            return x

        layers[2] = temporal(0, layers[2])
        layers[3] = temporal(1, layers[3])
        rn = [conv(x) for conv, x in zip(self.neck.convs, layers, strict=True)]
        fusion = self.neck.fusion_stage.layers
        path = temporal(2, fusion[0](rn[3], size=rn[2].shape[2:]))
        path = temporal(3, fusion[1](path, rn[2], size=rn[1].shape[2:]))
        path = fusion[2](path, rn[1], size=rn[0].shape[2:])
        path = fusion[3](path, rn[0])
        depth = self.head([path], ph, pw)
        return depth, states


def build_video_network(config: Any, *, device: str | torch.device = 'cpu') -> VideoDepthNet:
    """A ``VideoDepthNet`` of ``config`` with random weights (``'meta'``: none)."""
    return VideoDepthNet(config, device=device)


def video_config(size: str) -> Any:
    """The official VDA config of ViT size ``'s'``, ``'b'`` or ``'l'``."""
    vit = da.VIT_SIZES[size]
    return da.depth_anything_config(
        2, hidden_size=vit.hidden, num_layers=vit.layers, num_heads=vit.heads,
        features=vit.features, out_channels=vit.out_channels)


def tiny_video_config() -> Any:
    """A small VDA config for tests: ViT width 64, 4 blocks, motion modules 32 wide."""
    return da.depth_anything_config(
        2, hidden_size=64, num_layers=4, features=32, out_channels=(16, 32, 32, 64),
        image_size=98, head_hidden_size=8)


def video_network_size(
    height: int, width: int, input_size: int, fixed: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """Network input ``(h, w)`` for frames of ``height x width``, as the official code.

    VDA keeps the aspect ratio with the short side ``input_size`` (multiples of 14),
    after reducing ``input_size`` for frames wider than 16:9 (the official memory
    rule). EndoDAV (``fixed``) always feeds its training size.
    """
    if fixed is not None:
        return fixed
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_RATIO:
        input_size = round(int(input_size * 1.777 / ratio) / PATCH) * PATCH
    return network_size(height, width, max(input_size, PATCH), PATCH)


class VideoFrameNet(nn.Module):
    """uint8 frames in, depth at the frames' size out, preprocessing in the graph.

    Args:
        network: the ``VideoDepthNet``.
        input_size: short side of the network input (VDA; see ``video_network_size``).
        fixed_size: EndoDAV's fixed ``(h, w)`` input, or None.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, network: VideoDepthNet, input_size: int,
                 fixed_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.network = network
        self.input_size = input_size
        self.fixed_size = fixed_size
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input ``(h, w)`` for frames of ``height x width``."""
        return video_network_size(height, width, self.input_size, self.fixed_size)

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, h, w) normalised network input."""
        height, width = int(rgb.shape[1]), int(rgb.shape[2])
        x = rgb.permute(0, 3, 1, 2).to(self.mean.dtype) * (1.0 / 255.0)
        if self.fixed_size is not None:
            # EndoDAV: lower-bound bicubic resize, then bilinear onto its fixed size.
            scale = max(self.fixed_size[0] / height, self.fixed_size[1] / width)
            lower = _lower_bound_size(height, width, self.fixed_size, scale)
            if lower != (height, width):
                x = functional.interpolate(x, size=lower, mode='bicubic', align_corners=False)
            if lower != self.fixed_size:
                x = functional.interpolate(
                    x, size=self.fixed_size, mode='bilinear', align_corners=True)
        else:
            size = self.network_size(height, width)
            if size != (height, width):
                # Bicubic without antialiasing, as the official cv2.INTER_CUBIC resize.
                x = functional.interpolate(x, size=size, mode='bicubic', align_corners=False)
        return (x - self.mean) / self.std

    def forward(
        self, rgb: torch.Tensor, cache: Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Depth of one clip (window) or of one frame after cached ones (streaming).

        Args:
            rgb: (T, H, W, 3) uint8 frames of one clip, or (1, H, W, 3) with ``cache``.
            cache: ``STATES_PER_FRAME`` cached states (streaming), or None.

        Returns:
            (T, H, W) float32 depth (network units) and the new hidden states.
        """
        height, width = int(rgb.shape[1]), int(rgb.shape[2])
        depth, states = self.network(self.preprocess(rgb), int(rgb.shape[0]), cache)
        depth = depth[:, None]
        if tuple(depth.shape[-2:]) != (height, width):
            depth = functional.interpolate(
                depth, size=(height, width), mode='bilinear', align_corners=True)
        return depth[:, 0].float(), states


def _lower_bound_size(
    height: int, width: int, target: tuple[int, int], scale: float,
) -> tuple[int, int]:
    """Official ``Resize(lower_bound, ensure_multiple_of=14)`` onto ``target`` (h, w)."""

    def constrain(x: float, minimum: int) -> int:
        y = round(x / PATCH) * PATCH
        if y < minimum:
            y = math.ceil(x / PATCH) * PATCH
        return int(y)

    return constrain(height * scale, target[0]), constrain(width * scale, target[1])
