"""``TemporalAligner``: the public entry point of the temporal alignment."""

from __future__ import annotations

import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.temporal.disparity import apply_affine, disparity_to_depth, to_disparity
from endo_depth_ros.temporal.results import AlignedFrame
from endo_depth_ros.temporal.ring_buffer import FitGrid
from endo_depth_ros.temporal.stream import StreamMode
from endo_depth_ros.temporal.window import WindowMode


class TemporalAligner(StreamMode, WindowMode):
    """Aligns a stream of per-frame depth predictions over time.

    See ``endo_depth_ros.temporal`` for the modes and the metric conversion. Not
    thread-safe: one producer pushes frames in order.
    """

    def push(
        self,
        raw: np.ndarray,
        *,
        output_kind: str = 'relative_disparity',
        pose: np.ndarray | None = None,
        intrinsics: Intrinsics | None = None,
        mask: np.ndarray | None = None,
        stamp_ns: int = 0,
    ) -> list[AlignedFrame]:
        """Add one raw prediction; return the frames whose alignment is final.

        Args:
            raw: (H, W) relative disparity or metric depth (metres), NaN invalid.
            output_kind: 'relative_disparity' or 'metric_depth' (``DepthModel.output_kind``).
            pose: optional (4, 4) ``T_world_camera`` of this frame (metres); references
                with a pose are reprojected into this view before fitting.
            intrinsics: the camera (needed with ``pose``); its size must be W x H.
            mask: optional (H, W) bool, True where a pixel may be used for fitting
                (False on instruments, specular highlights). The output keeps those pixels.
            stamp_ns: the frame's stamp, carried to the output.

        Returns:
            'none'/'stream': exactly one frame (this one). 'window': 0..n frames in
            order, with a latency of about one window stride (see ``window.py``).

        Raises:
            BadInputError: raw not a numeric 2-D array (reason 'shape'), unknown
                output_kind ('output_kind'), mask or intrinsics of another size
                ('size_mismatch'), mask not bool ('mask'), pose not a finite 4x4 or given
                without intrinsics ('pose').
            ConfigError: ``scale_source='model'`` with a relative (non-metric) model.
        """
        inp = self._validate(raw, output_kind, pose, intrinsics, mask, stamp_ns)
        out: list[AlignedFrame] = []
        key = (inp.disparity.shape, output_kind)
        if self._key is not None and key != self._key:
            # A new image size or model: the buffer no longer describes these frames.
            if self.config.mode == 'window':
                out.extend(self._window_flush())
            self._clear()
            self._stats.resets += 1
        if self._key is None:
            self._start(key, inp.disparity.shape)
        if intrinsics is not None:
            self._camera = intrinsics
        self._stats.frames += 1
        index = self._next_index
        self._next_index += 1
        if self.config.mode == 'none':
            out.append(self._passthrough(inp, index))
        elif self.config.mode == 'stream':
            out.append(self._stream(inp, index))
        else:
            out.extend(self._window_push(inp, index))
        return out

    def flush(self) -> list[AlignedFrame]:
        """Return every frame still held (window mode; [] otherwise), oldest first.

        The stream may continue afterwards: the next window fits on the flushed frames.
        """
        if self.config.mode != 'window' or self._ring is None:
            return []
        return self._window_flush()

    def preview(self, raw: np.ndarray, *,
                output_kind: str = 'relative_disparity') -> np.ndarray:
        """Depth (H, W) float32 of ``raw`` under the last good scale and shift (no fit).

        Nothing is stored. Before any scale is known, the first-frame policy of
        ``scale_source`` is applied to ``raw`` alone (all-NaN when it has no usable pixel).
        """
        disparity = to_disparity(np.asarray(raw), output_kind)
        if self._last_good is not None and self._key == (disparity.shape, output_kind):
            scale, shift = self._last_good
        else:
            height, width = disparity.shape[:2]
            grid = FitGrid.for_size(height, width, self.config.max_fit_pixels)
            scale, shift, _ = self._initial_params(grid.sample(disparity))
        return disparity_to_depth(apply_affine(disparity, scale, shift))

    def reset(self) -> None:
        """Forget the stream (buffers, keyframes, scale); frame indices restart at 0."""
        self._clear()
        self._next_index = 0
        self._stats.resets += 1

