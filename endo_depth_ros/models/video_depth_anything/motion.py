"""Motion modules: the temporal transformers the video head inserts into the DPT neck."""

from __future__ import annotations

from collections.abc import Sequence
import math

import torch
from torch import nn
from torch.nn import functional

from endo_depth_ros.errors import ModelLoadError
from endo_depth_ros.models.video_depth_anything.windows import WINDOW

#: Number of attention blocks per motion module and motion modules per network.
ATTENTION_BLOCKS = 2
MOTION_MODULES = 4
#: Hidden states one frame contributes to the streaming cache (one per attention block).
STATES_PER_FRAME = ATTENTION_BLOCKS * MOTION_MODULES
#: Attention heads of every motion module (official constant).
MOTION_HEADS = 8


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
