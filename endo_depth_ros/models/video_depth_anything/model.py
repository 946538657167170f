"""The video model behind ``DepthModel``: streaming live, windows offline."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from endo_depth_ros.models.base import DepthModel, OutputKind, as_batch
from endo_depth_ros.models.preprocessing import (
    resolve_device,
    resolve_precision,
)
from endo_depth_ros.models.video_depth_anything.checkpoints import (
    load_video_network,
    parse_video_name,
)
from endo_depth_ros.models.video_depth_anything.network import (
    ENDODAV_INPUT,
    VideoDepthNet,
    VideoFrameNet,
)
from endo_depth_ros.models.video_depth_anything.streaming import StreamingCache
from endo_depth_ros.models.video_depth_anything.windows import (
    ENDODAV_SCHEDULE,
    OVERLAP,
    VDA_SCHEDULE,
    WINDOW,
    WindowSchedule,
    WindowStitcher,
    padded_length,
    window_starts,
)


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
