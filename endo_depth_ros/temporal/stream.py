"""Stream mode: each frame is fitted at once against recent frames and keyframes.

Zero added latency: a frame comes out of ``push`` at once. Its scale and shift are a
robust fit of its raw disparity against references: the ``reference_frames`` last aligned
frames and up to ``keyframes`` keyframes that anchor the scale over long sequences (frame
0 first). When the new frame and a reference both have a pose, the reference is first
reprojected into the new view (see ``AlignmentConfig.reproject``); without poses the fit
is direct (endoscope motion between frames is small).

A reference *explains* a pixel when it agrees with the new frame about as well as the
most recent frame does (within ``AGREEMENT_SIGMAS`` robust standard deviations of that
frame's residuals); a keyframe's *overlap* is the fraction of pixels it explains relative
to the most recent frame. When the newest keyframe's overlap drops below
``keyframe_overlap`` the current frame becomes a keyframe, replacing the one that
overlaps least; keyframes below the threshold are left out of the fits until the view
returns to them. Pixels that no reference explains (outliers) are never references.

A fit that is not usable (too few pixels, constant, non-finite, scale <= 0) falls back to
the last good scale and shift; after ``max_fallbacks`` consecutive fallbacks the next
usable frame re-anchors the buffer with the last good scale and shift.
"""

from __future__ import annotations

import numpy as np

from endo_depth_ros.temporal.core import AlignerCore, Reference
from endo_depth_ros.temporal.disparity import apply_affine
from endo_depth_ros.temporal.results import AlignedFrame
from endo_depth_ros.temporal.ring_buffer import FrameInput
from endo_depth_ros.temporal.robust_fit import NO_REFERENCE


class StreamMode(AlignerCore):
    """Zero-latency alignment (``mode='stream'``; see ``endo_depth_ros.temporal``).

    Keyframes (``keyframes`` of them) anchor the scale over long sequences; each keeps
    its aligned fitting image, pose and overlap with the current view.
    """

    @property
    def buffer_nbytes(self) -> int:
        """Bytes held by the preallocated buffers (constant for a given frame size)."""
        return super().buffer_nbytes + sum(
            a.nbytes for a in (self._kf_grid, self._kf_pose, self._kf_has_pose,
                               self._kf_pos, self._kf_overlap))

    def _clear(self) -> None:
        super()._clear()
        self._kf_grid = np.zeros(0, np.float32)
        self._kf_pose = np.zeros(0)
        self._kf_has_pose = np.zeros(0, bool)
        self._kf_pos = np.zeros(0, np.int64)
        self._kf_overlap = np.zeros(0)

    def _start(self, key: tuple[tuple[int, ...], str], shape: tuple[int, ...]) -> None:
        super()._start(key, shape)
        if self.config.mode == 'stream':
            k, grid = self.config.keyframes, self._grid.shape
            self._kf_grid = np.full((k, *grid), np.nan, np.float32)
            self._kf_pose = np.zeros((k, 4, 4))
            self._kf_has_pose = np.zeros(k, bool)
            self._kf_pos = np.full(k, -1, np.int64)
            self._kf_overlap = np.zeros(k)

    def _stream(self, inp: FrameInput, index: int) -> AlignedFrame:
        cfg = self.config
        ring = self._buffer()
        pos = self._length
        slot = pos % ring.capacity
        trusted = np.ones(inp.grid.shape, bool)
        anchor = False  # this frame (re)starts the keyframes
        new_keyframe = False
        if self._last_good is None:
            scale, shift, reason = self._initial_params(inp.grid)
            anchor = not reason
        else:
            refs, kf_rows = self._stream_references(inp, pos)
            fit, trusted, overlap, recent = self._fit(inp, refs)
            if fit.ok:
                posed = inp.pose is not None and self._fit_camera() is not None
                scale, shift = self._prior.apply((fit.scale, fit.shift), self._last_good,
                                                 inp.grid, posed, recent)
                reason = ''
                self._accept(fit)
                new_keyframe = self._update_keyframes(kf_rows, overlap)
            else:
                self._stats.rejected_fits += int(fit.reason != NO_REFERENCE)
                scale, shift = self._last_good
                reason = fit.reason
                if (self._consecutive_fallbacks + 1 >= cfg.max_fallbacks
                        and self._can_anchor(inp.grid)):
                    # The buffer no longer matches the scene: restart it from this frame.
                    anchor = True
                    self._stats.reanchors += 1
        good = not reason or anchor
        self._consecutive_fallbacks = 0 if good else self._consecutive_fallbacks + 1
        if good:
            self._set_last_good(scale, shift)

        aligned = apply_affine(inp.disparity, scale, shift)
        self._store(slot, index, inp)
        self._set_result(slot, aligned, trusted, scale, shift, good, reason)
        self._length += 1
        if cfg.keyframes and (anchor or new_keyframe):
            if anchor:
                self._kf_pos[:] = -1
            self._add_keyframe(slot, pos)
        return self._emit(index, inp.stamp_ns, aligned, scale, shift, reason, inp.pose,
                          mix=good and pos > 0)

    def _stream_references(self, inp: FrameInput, pos: int) -> tuple[list[Reference], list[int]]:
        """Previous good frames, then every keyframe (weight 0 while its overlap is low).

        Returns:
            The references and, per keyframe slot, its row in them (-1: empty slot).
        """
        cfg = self.config
        ring = self._buffer()
        refs: list[Reference] = []
        row_of_pos: dict[int, int] = {}
        p = pos - 1
        while p >= max(0, pos - ring.capacity) and len(refs) < cfg.reference_frames:
            slot = p % ring.capacity
            if ring.good[slot]:
                row_of_pos[p] = len(refs)
                ref_pose = ring.pose[slot] if ring.has_pose[slot] else None
                refs.append(self._reference(ring.grid_aligned[slot], ref_pose, inp))
            p -= 1
        kf_rows = []
        for k in range(cfg.keyframes):
            kpos = int(self._kf_pos[k])
            if kpos < 0:
                kf_rows.append(-1)
            elif kpos in row_of_pos:
                kf_rows.append(row_of_pos[kpos])  # already a reference as a recent frame
            else:
                in_view = self._kf_overlap[k] >= cfg.keyframe_overlap
                kf_pose = self._kf_pose[k] if self._kf_has_pose[k] else None
                kf_rows.append(len(refs))
                refs.append(self._reference(self._kf_grid[k], kf_pose, inp,
                                            cfg.keyframe_weight if in_view else 0.0))
        return refs, kf_rows

    def _update_keyframes(self, kf_rows: list[int], overlap: np.ndarray) -> bool:
        """Record each keyframe's overlap; True when the current frame must become one."""
        for k, row in enumerate(kf_rows):
            if row >= 0:
                self._kf_overlap[k] = overlap[row]
        present = self._kf_pos >= 0
        if not present.any():
            return bool(self.config.keyframes)
        newest = int(np.argmax(np.where(present, self._kf_pos, -1)))
        return bool(self._kf_overlap[newest] < self.config.keyframe_overlap)

    def _add_keyframe(self, slot: int, pos: int) -> None:
        """Copy the frame of ring ``slot`` into a free keyframe or the one overlapping least."""
        empty = np.flatnonzero(self._kf_pos < 0)
        if empty.size:
            k = int(empty[0])
        else:
            k = int(np.lexsort((self._kf_pos, self._kf_overlap))[0])  # least overlap, oldest
        ring = self._buffer()
        self._kf_grid[k] = ring.grid_aligned[slot]
        self._kf_pose[k] = ring.pose[slot]
        self._kf_has_pose[k] = ring.has_pose[slot]
        self._kf_pos[k] = pos
        self._kf_overlap[k] = 1.0
        self._stats.keyframes_added += 1
