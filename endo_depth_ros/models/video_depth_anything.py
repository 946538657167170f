"""Video Depth Anything (VDA) and EndoDAV: Depth Anything with a temporal DPT head.

The network is the Depth Anything V2 network of ``depth_anything.py`` (the same
transformers DINOv2 backbone, reassemble/fusion neck and output head) with four
*motion modules* inserted into the neck, as the official ``DPTHeadTemporal``:
after reassemble stages 3 and 4 and after fusion layers 4 and 3. A motion module is
a residual temporal transformer: GroupNorm -> linear -> one block of two temporal
self-attentions (each pixel attends over the frames at its position, sinusoidal
frame-position encoding added to the attention input) and a GEGLU feed-forward ->
linear.

Two ways to run it, as its authors do:

- *window* (``run_windows``, the official ``infer_video_depth``): windows of
  ``WINDOW`` = 32 frames with a stride of 22; the first ``OVERLAP`` = 10 inputs of a
  window are keyframes of the previous window, the first two of which fit a scale and
  shift (least squares) that carries the new window into the previous one's units,
  and ``INTERP`` = 8 overlapping frames are blended linearly;
- *streaming* (``StreamingCache`` + ``VideoDepthNet.forward(..., cache)``, the official
  ``video_depth_stream.py``): one frame in, its depth out; the attention of the new
  frame reads the *cached* normalised attention inputs of 31 earlier frames (the
  first frame, the frame 41 steps back and the last 29), so no frame is ever
  recomputed. The cache lives outside the network, in preallocated storage.

EndoDAV (Zanue/EndoDAV) checkpoints are this network with low-rank adapters in the
ViT MLPs (and optionally in the motion modules' feed-forward output); they are merged
into plain weights at load time. EndoDAV feeds a fixed 224x280 input and uses its own
keyframes and overlap fit (``ENDODAV_SCHEDULE``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import contextlib
from dataclasses import dataclass
import math
from pathlib import Path
import re
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from endo_depth_ros.errors import BadInputError, ConfigError, ModelLoadError
from endo_depth_ros.models import depth_anything as da
from endo_depth_ros.models.base import DepthModel, OutputKind, as_batch
from endo_depth_ros.models.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    network_size,
    resolve_device,
    resolve_precision,
)

#: Frames per window (offline) and in the attention of a streaming step.
WINDOW = 32
#: Frames a window shares with the previous one (keyframes fed again).
OVERLAP = 10
#: Overlapping frames blended linearly between two windows.
INTERP = 8
#: Streaming keeps the first frame and the last ``STREAM_GAP`` frames' states.
STREAM_GAP = 41
#: Number of attention blocks per motion module and motion modules per network.
ATTENTION_BLOCKS = 2
MOTION_MODULES = 4
#: Hidden states one frame contributes to the streaming cache (one per attention block).
STATES_PER_FRAME = ATTENTION_BLOCKS * MOTION_MODULES
#: Attention heads of every motion module (official constant).
MOTION_HEADS = 8
#: Aspect ratio above which the official code reduces the input size (16:9).
MAX_RATIO = 1.78
#: Fixed network input (height, width) of EndoDAV.
ENDODAV_INPUT = (224, 280)
_PATCH = 14


@dataclass(frozen=True)
class WindowSchedule:
    """How consecutive windows are stitched (official constants of each family).

    Attributes:
        keyframes: indices (into the previous window) of the ``OVERLAP`` frames fed
            again at the start of the next window.
        fit: ``'keyframes'`` (VDA: the first ``OVERLAP - INTERP`` keyframes' raw new
            predictions fitted to the previous window's aligned keyframes) or
            ``'interp'`` (EndoDAV: the ``INTERP`` overlapping raw predictions fitted to
            the last ``INTERP`` aligned frames).
    """

    keyframes: tuple[int, ...]
    fit: str


VDA_SCHEDULE = WindowSchedule((0, 12, 24, 25, 26, 27, 28, 29, 30, 31), 'keyframes')
ENDODAV_SCHEDULE = WindowSchedule((6, 12, 24, 25, 26, 27, 28, 29, 30, 31), 'interp')


# ------------------------------------------------------------------ motion modules


class FramePositionEncoding(nn.Module):
    """Sinusoidal encoding of the frame index, added to the attention input.

    The table is a (persistent) buffer because the official checkpoints store it.
    """

    pe: torch.Tensor

    def __init__(self, dim: int, max_len: int = WINDOW) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(1e4) / dim))
        table = torch.zeros(1, max_len, dim)
        table[0, :, 0::2] = torch.sin(position * frequency)
        table[0, :, 1::2] = torch.cos(position * frequency)
        self.register_buffer('pe', table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (S, T, C) -> x + encoding of frames 0..T-1."""
        return x + self.pe[:, :x.shape[1]].to(x.dtype)


class TemporalAttention(nn.Module):
    """Self-attention over frames, for every pixel independently.

    Args:
        dim: channels; heads: attention heads (``dim`` must divide by it).
        max_len: longest frame sequence (the position table's length).
    """

    def __init__(self, dim: int, heads: int, max_len: int = WINDOW) -> None:
        super().__init__()
        if dim % heads:
            raise ModelLoadError(f'Motion module width {dim} is not divisible by {heads} heads.')
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.pos_encoder = FramePositionEncoding(dim, max_len)

    def forward(self, x: torch.Tensor, cached: torch.Tensor | None) -> torch.Tensor:
        """Attend from the frames of ``x`` to ``cached`` frames followed by ``x``.

        Args:
            x: (S, T, C) normalised inputs, S sequences (pixels) of T frames.
            cached: (S, Tc, C) normalised inputs of Tc earlier frames, or None.

        Returns:
            (S, T, C) attention output for the frames of ``x``.
        """
        sequence = x if cached is None else torch.cat([cached, x], dim=1)
        sequence = self.pos_encoder(sequence)
        frames = x.shape[1]
        q = self._split(self.to_q(sequence[:, sequence.shape[1] - frames:]))
        k = self._split(self.to_k(sequence))
        v = self._split(self.to_v(sequence))
        out = functional.scaled_dot_product_attention(q, k, v)  # (S, heads, T, C / heads)
        out = out.transpose(1, 2).reshape(x.shape)
        return self.to_out[0](out)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)


class GEGLU(nn.Module):
    """Gated GELU projection: ``a * gelu(b)`` with ``[a, b] = proj(x)``."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * functional.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward with 4x expansion (``net``: proj in, no-op, proj out)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList(
            [GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TemporalBlock(nn.Module):
    """Two pre-norm temporal attentions and a pre-norm feed-forward, all residual."""

    def __init__(self, dim: int, heads: int, max_len: int = WINDOW) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalAttention(dim, heads, max_len) for _ in range(ATTENTION_BLOCKS)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(ATTENTION_BLOCKS)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, cached: Sequence[torch.Tensor] | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x``: (S, T, C); ``cached``: one (S, Tc, C) tensor per attention or None.

        Returns:
            The block output (S, T, C) and each attention's normalised input (S, T, C),
            which is what later streaming steps read as cache.
        """
        states = []
        for i, (attention, norm) in enumerate(zip(self.attention_blocks, self.norms, strict=True)):
            normed = norm(x)
            states.append(normed)
            x = x + attention(normed, None if cached is None else cached[i])
        return x + self.ff(self.ff_norm(x)), states


class TemporalTransformer(nn.Module):
    """GroupNorm -> linear -> temporal block -> linear, added to the input."""

    def __init__(self, channels: int, heads: int = MOTION_HEADS, max_len: int = WINDOW) -> None:
        super().__init__()
        if channels % 32:
            raise ModelLoadError(
                f'Motion module width {channels} is not divisible by its 32 norm groups.')
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalBlock(channels, heads, max_len)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(
        self, x: torch.Tensor, frames: int, cached: Sequence[torch.Tensor] | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mix features over time.

        Args:
            x: (B * T, C, h, w) features, frames of one clip consecutive.
            frames: T.
            cached: ``ATTENTION_BLOCKS`` tensors (B * h * w, Tc, C), or None.

        Returns:
            (B * T, C, h, w) features and the ``ATTENTION_BLOCKS`` new states
            (B * h * w, T, C).
        """
        n, channels, height, width = x.shape
        batch = n // frames
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(n, height * width, channels)
        tokens = self.proj_in(tokens)
        # (B * T, hw, C) -> (B * hw, T, C): one sequence of frames per pixel.
        tokens = tokens.reshape(batch, frames, height * width, channels).transpose(1, 2)
        tokens = tokens.reshape(batch * height * width, frames, channels)
        states: list[torch.Tensor] = []
        for block in self.transformer_blocks:
            tokens, block_states = block(tokens, cached)
            states += block_states
        tokens = self.proj_out(tokens)
        tokens = tokens.reshape(batch, height * width, frames, channels).transpose(1, 2)
        out = tokens.reshape(n, height, width, channels).permute(0, 3, 1, 2)
        return out + x, states


class MotionModule(nn.Module):
    """One temporal transformer (the official wrapper level, kept for the key names)."""

    def __init__(self, channels: int, heads: int = MOTION_HEADS, max_len: int = WINDOW) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, heads, max_len)

    def forward(
        self, x: torch.Tensor, frames: int, cached: Sequence[torch.Tensor] | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.temporal_transformer(x, frames, cached)


# ------------------------------------------------------------------------- network


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
        ph, pw = height // _PATCH, width // _PATCH
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


# ----------------------------------------------------------------- preprocessing


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
        input_size = round(int(input_size * 1.777 / ratio) / _PATCH) * _PATCH
    return network_size(height, width, max(input_size, _PATCH), _PATCH)


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
        y = round(x / _PATCH) * _PATCH
        if y < minimum:
            y = math.ceil(x / _PATCH) * _PATCH
        return int(y)

    return constrain(height * scale, target[0]), constrain(width * scale, target[1])


# ------------------------------------------------------------------ streaming cache


class StreamingCache:
    """The fixed ring of hidden states a streaming step attends to.

    Keeps, like the official ``video_depth_stream.py``, the first frame's states
    (repeated to fill the window until enough frames arrived) and the last
    ``STREAM_GAP`` frames'; a step reads the first frame, the frame ``STREAM_GAP``
    steps back and the last ``WINDOW - 3`` frames (``WINDOW - 1`` in all). Storage is
    allocated once, on the first frame, for ``STREAM_GAP + 1`` frames: memory does not
    grow with the stream.
    """

    def __init__(self) -> None:
        self._storage: list[torch.Tensor] = []
        self._order: list[int] = []  # slot of each logical entry (the official list)
        self._slot_frame: list[int] = []  # stream index of the frame held by each slot
        self._frames = 0

    @property
    def frames(self) -> int:
        """Frames pushed since the last reset."""
        return self._frames

    @property
    def empty(self) -> bool:
        return self._frames == 0

    @property
    def fill(self) -> int:
        """Distinct earlier frames the next step attends to (0 .. ``WINDOW - 1``)."""
        return len(set(self._context_slots())) if self._order else 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated storage."""
        return sum(t.numel() * t.element_size() for t in self._storage)

    def reset(self) -> None:
        """Forget every frame (the storage is freed; the next frame starts a stream)."""
        self._storage = []
        self._order = []
        self._slot_frame = []
        self._frames = 0

    def context_frames(self) -> list[int]:
        """Stream indices (0-based) of the ``WINDOW - 1`` entries the next step reads."""
        return [self._slot_frame[slot] for slot in self._context_slots()] if self._order else []

    def context(self) -> list[torch.Tensor]:
        """The ``STATES_PER_FRAME`` tensors (S_i, WINDOW - 1, C_i) the next step reads."""
        if not self._order:
            raise RuntimeError('The streaming cache is empty: run the first frame without it.')
        index = torch.tensor(self._context_slots(), device=self._storage[0].device)
        return [t.index_select(1, index) for t in self._storage]

    def push(self, states: Sequence[torch.Tensor]) -> None:
        """Store one frame's states (each (S_i, 1, C_i)) as the newest entry."""
        if len(states) != STATES_PER_FRAME:
            raise ValueError(f'Expected {STATES_PER_FRAME} states, got {len(states)}.')
        if not self._order:
            capacity = STREAM_GAP + 1
            self._storage = [s.new_empty((s.shape[0], capacity, s.shape[2])) for s in states]
            self._slot_frame = [-1] * capacity
            self._write(0, states)
            self._order = [0] * WINDOW  # the first frame stands in for a whole window
        else:
            if self._frames + WINDOW > STREAM_GAP + 1:
                # The official code drops this entry right after appending the new one;
                # dropping it first lets the new frame reuse its slot.
                del self._order[1]
            slot = self._free_slot()
            self._write(slot, states)
            self._order.append(slot)
        self._frames += 1

    def _context_slots(self) -> list[int]:
        return self._order[:2] + self._order[-(WINDOW - 3):]

    def _free_slot(self) -> int:
        # A slot is free when no logical entry refers to it (at most STREAM_GAP are).
        used = set(self._order)
        return next(i for i in range(self._storage[0].shape[1]) if i not in used)

    def _write(self, slot: int, states: Sequence[torch.Tensor]) -> None:
        self._slot_frame[slot] = self._frames
        for store, state in zip(self._storage, states, strict=True):
            if state.shape[0] != store.shape[0] or state.shape[2] != store.shape[2]:
                raise ValueError(
                    f'Hidden state of shape {tuple(state.shape)} does not fit the cache '
                    f'{tuple(store.shape)}; reset the stream when the image size changes.')
            store[:, slot] = state[:, -1]


# --------------------------------------------------------------- window inference


def fit_scale_shift(prediction: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Least-squares ``scale, shift`` with ``scale * prediction + shift ~ target``.

    As the official ``compute_scale_and_shift`` (every pixel counts; a singular system
    gives 1, 0).
    """
    p = prediction.astype(np.float64).ravel()
    t = target.astype(np.float64).ravel()
    a00, a01, a11 = float(p @ p), float(p.sum()), float(p.size)
    b0, b1 = float(p @ t), float(t.sum())
    det = a00 * a11 - a01 * a01
    if det == 0:
        return 1.0, 0.0
    return (a11 * b0 - a01 * b1) / det, (-a01 * b0 + a00 * b1) / det


class WindowStitcher:
    """Joins window predictions into one sequence, as the official ``infer_video_depth``.

    Push the raw (network-unit) predictions of each window in turn; ``aligned`` holds
    the finished frames.

    Args:
        schedule: keyframes and fit rule of the family.
        fit_affine: fit scale and shift (relative models); False keeps 1, 0 (metric VDA).
    """

    def __init__(self, schedule: WindowSchedule, *, fit_affine: bool = True) -> None:
        self.schedule = schedule
        self.fit_affine = fit_affine
        self.aligned: list[np.ndarray] = []
        self._references: list[np.ndarray] = []

    def push(self, window: Sequence[np.ndarray]) -> None:
        """Add one window's ``WINDOW`` raw frames (each (H, W) float32)."""
        align = OVERLAP - INTERP
        keys = self.schedule.keyframes[:align]
        if not self.aligned:
            self.aligned = list(window)
            self._references = [window[k] for k in keys]
            return
        blend_new = [window[i] for i in range(align, OVERLAP)]
        blend_old = self.aligned[-INTERP:]
        scale, shift = 1.0, 0.0
        if self.fit_affine and self.schedule.fit == 'keyframes':
            scale, shift = fit_scale_shift(np.concatenate(window[:align]),
                                           np.concatenate(self._references))
        elif self.fit_affine:
            scale, shift = fit_scale_shift(np.concatenate(blend_new), np.concatenate(blend_old))

        def carry(frame: np.ndarray) -> np.ndarray:
            out = (frame * np.float32(scale) + np.float32(shift)).astype(np.float32)
            out[out < 0] = 0
            return out

        weights = np.linspace(0.0, 1.0, INTERP)
        self.aligned[-INTERP:] = [
            (old * np.float32(1 - w) + carry(new) * np.float32(w)).astype(np.float32)
            for old, new, w in zip(blend_old, blend_new, weights, strict=True)]
        self.aligned += [carry(window[i]) for i in range(OVERLAP, WINDOW)]
        self._references = self._references[:1] + [carry(window[k]) for k in keys[1:]]


def window_starts(frames: int) -> list[int]:
    """First frame of each window of a sequence of ``frames`` frames (stride 22)."""
    return list(range(0, frames, WINDOW - OVERLAP))


def padded_length(frames: int) -> int:
    """Frames after the official padding with copies of the last frame."""
    step = WINDOW - OVERLAP
    return frames + (step - frames % step) % step + OVERLAP


# ------------------------------------------------------------- official key layout


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
        'image_size': grid * _PATCH,
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


# ------------------------------------------------------------------------ the model


class VideoDepthModel(DepthModel):
    """A video depth network behind ``DepthModel``: ``infer`` streams, ``infer_video`` windows.

    ``infer(rgb)`` is the live path: each frame is one streaming step (its depth out at
    once, its hidden states into the cache); a batch is streamed frame by frame, in
    order. ``reset()`` forgets the stream; a change of image size resets it too.
    ``infer_video(frames)`` runs the offline windows over a whole clip and does not
    touch the stream.

    Args:
        network: the loaded ``VideoDepthNet`` (CPU).
        name: registry name; output_kind: what the network emits.
        schedule: window keyframes and fit rule (``VDA_SCHEDULE``/``ENDODAV_SCHEDULE``).
        fixed_size: EndoDAV's fixed network input, or None (VDA: ``input_size`` rule).
        device, precision: as ``load()``; input_size: short side of the VDA input.
        warmup: run (and then forget) one streaming step now.
    """

    #: Video models carry their own temporal state (the pipeline and node check this).
    is_video = True

    def __init__(
        self,
        network: VideoDepthNet,
        *,
        name: str,
        output_kind: OutputKind,
        schedule: WindowSchedule = VDA_SCHEDULE,
        fixed_size: tuple[int, int] | None = None,
        device: str = 'auto',
        precision: str = 'auto',
        input_size: int = 518,
        warmup: bool = True,
    ) -> None:
        self.name = name
        self.output_kind = output_kind
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.backend = 'torch'
        self.schedule = schedule
        self.net = VideoFrameNet(network, input_size, fixed_size).to(self.device).eval()
        self.cache = StreamingCache()
        self._stream_size: tuple[int, int] | None = None
        self._last_size = self.net.network_size(input_size, input_size)
        if warmup:
            self.infer(np.zeros((input_size, input_size, 3), np.uint8))
            self.reset()

    @property
    def input_size(self) -> tuple[int, int]:
        return self._last_size

    @property
    def cache_fill(self) -> tuple[int, int]:
        """(earlier frames the next step attends to, most it can: ``WINDOW - 1``)."""
        return self.cache.fill, WINDOW - 1

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        return self.net.network_size(height, width)

    def reset(self) -> None:
        """Forget the stream: the next frame is a first frame."""
        self.cache.reset()
        self._stream_size = None

    def _infer_batch(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self._stream_step(frame) for frame in batch])

    def _stream_step(self, frame: np.ndarray) -> np.ndarray:
        size = (int(frame.shape[0]), int(frame.shape[1]))
        if size != self._stream_size:
            self.reset()
            self._stream_size = size
        self._last_size = self.network_size(*size)
        with torch.inference_mode():
            context = None if self.cache.empty else self.cache.context()
            depth, states = self._run_step(frame, context)
            self.cache.push(states)
        return depth

    def _run_step(
        self, frame: np.ndarray, context: list[torch.Tensor] | None,
    ) -> tuple[np.ndarray, list[torch.Tensor]]:
        """One streaming step: (H, W) depth and the frame's ``STATES_PER_FRAME`` states."""
        with self._autocast():
            rgb = torch.from_numpy(np.ascontiguousarray(frame[None])).to(self.device)
            depth, states = self.net(rgb, context)
        return depth[0].float().cpu().numpy(), states

    def infer_video(self, frames: np.ndarray) -> np.ndarray:
        """Offline window inference over a whole clip (the official ``infer_video_depth``).

        Args:
            frames: (N, H, W, 3) uint8 RGB, N >= 1.

        Returns:
            (N, H, W) float32 in the units of ``output_kind``; relative models in the
            scale of the first window.

        Raises:
            BadInputError: not a uint8 (N, H, W, 3) array.
        """
        frames = as_batch(frames)
        count = frames.shape[0]
        padded = list(range(count)) + [count - 1] * (padded_length(count) - count)
        stitcher = WindowStitcher(self.schedule,
                                  fit_affine=self.output_kind == 'relative_disparity')
        self._last_size = self.net.network_size(frames.shape[1], frames.shape[2])
        previous: list[int] | None = None
        for start in window_starts(count):
            index = padded[start:start + WINDOW]
            if previous is not None:
                index[:OVERLAP] = [previous[k] for k in self.schedule.keyframes]
            with torch.inference_mode(), self._autocast():
                clip = torch.from_numpy(np.ascontiguousarray(frames[index])).to(self.device)
                depth, _ = self.net(clip)
                raw = depth.float().cpu().numpy()
            stitcher.push(list(raw))
            previous = index
        return np.stack(stitcher.aligned[:count])

    def _autocast(self) -> Any:
        if self.precision == 'fp16':
            return torch.autocast('cuda', dtype=torch.float16)
        return contextlib.nullcontext()


def load_video_model(
    name: str, path: str | Path, *, device: str = 'auto', precision: str = 'auto',
    input_size: int = 518,
) -> VideoDepthModel:
    """``load()``'s branch for video names (see ``load_video_network``)."""
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    spec = parse_video_name(name)
    network = load_video_network(name, path)
    endodav = spec.family == 'endodav'
    return VideoDepthModel(
        network, name=name, output_kind='metric_depth' if spec.metric else 'relative_disparity',
        schedule=ENDODAV_SCHEDULE if endodav else VDA_SCHEDULE,
        fixed_size=ENDODAV_INPUT if endodav else None, device=device, precision=precision,
        input_size=input_size)


# ------------------------------------------------------------- ONNX streaming step


class StreamStepNet(nn.Module):
    """The streaming step as one graph: ``(rgb, *cache) -> (depth, *states)``.

    ``rgb`` (1, H, W, 3) uint8; each cache input (S_i, Tc, C_i) float32 with Tc = 0
    (first frame) or ``WINDOW - 1``; ``depth`` (1, H, W); each state (S_i, 1, C_i).
    The ring of states stays outside the graph (``StreamingCache``).
    """

    def __init__(self, frame_net: VideoFrameNet) -> None:
        super().__init__()
        self.frame_net = frame_net

    def forward(self, rgb: torch.Tensor, *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        context = list(cache) if cache and cache[0].shape[1] > 0 else None
        depth, states = self.frame_net(rgb, context)
        return (depth, *states)


#: Names of the streaming graph's inputs and outputs.
ONNX_IMAGE = 'image'
ONNX_DEPTH = 'depth'
ONNX_CACHE = tuple(f'cache_{i}' for i in range(STATES_PER_FRAME))
ONNX_STATES = tuple(f'state_{i}' for i in range(STATES_PER_FRAME))


def export_video_onnx(
    model: VideoDepthModel, path: str | Path, height: int, width: int, *, opset: int = 17,
) -> Path:
    """Export a video model's streaming step to ONNX for ``height x width`` images.

    One graph serves every step: the cache inputs' frame axis is dynamic, empty (0
    frames) for the first frame of a stream and ``WINDOW - 1`` frames afterwards.

    Raises:
        ConfigError: size below one patch or opset outside 16..21.
    """
    import copy
    import warnings

    import onnx

    if height < _PATCH or width < _PATCH:
        raise ConfigError(f'Export size must be at least 14x14 pixels, got {height}x{width}.')
    if not 16 <= opset <= 21:
        raise ConfigError(f'opset must be in 16..21, got {opset}.')
    step = StreamStepNet(copy.deepcopy(model.net).to('cpu').float()).eval()
    rgb = torch.zeros((1, height, width, 3), dtype=torch.uint8)
    with torch.inference_mode():
        _, first = step.frame_net(rgb)
    # Trace with a full cache; the frame axis stays free so that 0 frames work too.
    cache = tuple(s.repeat(1, WINDOW - 1, 1).clone() for s in first)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the tracer warns about every baked-in size
        torch.onnx.export(
            step, (rgb, *cache), str(path), input_names=[ONNX_IMAGE, *ONNX_CACHE],
            output_names=[ONNX_DEPTH, *ONNX_STATES],
            dynamic_axes={name: {1: 'cached_frames'} for name in ONNX_CACHE},
            opset_version=opset, dynamo=False)
    graph = onnx.load(str(path))
    metadata = {'name': model.name, 'output_kind': model.output_kind,
                'image_height': str(height), 'image_width': str(width),
                'video_stream_step': '1'}
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))
    return path


class OnnxVideoDepthModel(VideoDepthModel):
    """A video model's streaming step run by onnxruntime (``export_video_onnx`` files).

    ``infer`` streams exactly as the torch model (same cache); window mode
    (``infer_video``) needs the torch backend (the export holds the one-frame step).

    Raises:
        ModelLoadError: not a streaming-step export of ``name``.
    """

    backend = 'onnxruntime'

    def __init__(self, path: str | Path, *, name: str, device: str = 'cpu') -> None:
        import onnxruntime

        if device not in ('auto', 'cpu'):
            raise ConfigError(f'The onnxruntime video step runs on the CPU here, not {device!r}.')
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), providers=['CPUExecutionProvider'])
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f'{path} is not a readable ONNX model ({err}).'[:300]) from err
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get('video_stream_step') != '1':
            raise ModelLoadError(f'{path} is not a video streaming-step export '
                                 '(endo-depth-export of a vda-* / endodav model).')
        self.name = name
        self.output_kind = 'metric_depth' if meta.get('output_kind') == 'metric_depth' \
            else 'relative_disparity'
        self.device, self.precision = 'cpu', 'fp32'
        self.schedule = VDA_SCHEDULE
        self._size = (int(meta['image_height']), int(meta['image_width']))
        self.cache = StreamingCache()
        self._stream_size = None
        self._last_size = self._size
        self._empty = {i.name: (i.shape[0], i.shape[2]) for i in self.session.get_inputs()
                       if i.name in ONNX_CACHE}

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        return self._size

    def _run_step(
        self, frame: np.ndarray, context: list[torch.Tensor] | None,
    ) -> tuple[np.ndarray, list[torch.Tensor]]:
        if tuple(frame.shape[:2]) != self._size:
            raise BadInputError(
                f'This ONNX export takes {self._size[1]}x{self._size[0]} images, got '
                f'{frame.shape[1]}x{frame.shape[0]}.', 'image_shape')
        feed: dict[str, np.ndarray] = {ONNX_IMAGE: np.ascontiguousarray(frame[None])}
        for i, name in enumerate(ONNX_CACHE):
            if context is None:
                rows, channels = self._empty[name]
                feed[name] = np.zeros((rows, 0, channels), np.float32)
            else:
                feed[name] = context[i].numpy()
        depth, *states = self.session.run(None, feed)
        return depth[0], [torch.from_numpy(s) for s in states]

    def infer_video(self, frames: np.ndarray) -> np.ndarray:
        raise ConfigError('Window mode (infer_video) needs the torch backend: the ONNX '
                          'export holds the one-frame streaming step.')
