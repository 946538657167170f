"""Window mode: the offline overlapping windows of Video Depth Anything / EndoDAV.

Windows of ``W = window`` frames: ``T = window_keyframes`` keyframes (already aligned,
taken from the previous window), ``L = overlap`` overlapped frames (the last ``L`` frames
of the previous window, aligned there but not yet returned) and ``S = W - T - L`` new
frames. Each frame of the window is first brought into the window's common scale by a
robust fit against the previous frame of the window and the window's first ``T`` frames.
Then one scale and shift for the whole window is fitted on the overlapped frames against
their already aligned values; the overlapped frames are blended linearly with the
previous window's result (weight of the new window ``(j + 1) / (L + 1)`` for the j-th
overlapped frame), the new frames are appended. The first window holds ``W`` frames and
has no keyframes or overlap.

**Latency**: ``push`` returns frames in bursts of ``S`` once per window (the first burst,
``W - L`` frames, after ``W`` pushes); a frame comes out ``L`` to ``S + L - 1`` pushes
after its own (up to ``W - 1`` in the first window). ``flush()`` returns every frame
still held; the stream may continue after it.
"""

from __future__ import annotations

import math

import numpy as np

from endo_depth_ros.temporal.core import AlignerCore, Reference
from endo_depth_ros.temporal.disparity import apply_affine, mix_frames
from endo_depth_ros.temporal.results import AlignedFrame
from endo_depth_ros.temporal.ring_buffer import FrameInput
from endo_depth_ros.temporal.robust_fit import NO_REFERENCE, TOO_FEW_PIXELS, fit_scale_shift


class WindowMode(AlignerCore):
    """Overlapping windows (``mode='window'``; see ``endo_depth_ros.temporal``).

    The window scratch holds each window frame's consolidated fitting image and
    parameters; frames are returned once their window is final.
    """

    @property
    def buffer_nbytes(self) -> int:
        """Bytes held by the preallocated buffers (constant for a given frame size)."""
        return super().buffer_nbytes + sum(
            a.nbytes for a in (self._win_grid, self._win_scale, self._win_shift,
                               self._win_good, self._win_reason))

    def _clear(self) -> None:
        super()._clear()
        self._win_grid = np.zeros((0, 0, 0), np.float32)
        self._win_scale = np.zeros(0)
        self._win_shift = np.zeros(0)
        self._win_good = np.zeros(0, bool)
        self._win_reason = np.zeros(0, dtype=object)  # fallback reason per window frame
        self._win_start = 0  # position of the current window's first frame
        self._aligned_end = 0  # positions before this were aligned by a window
        self._emit_next = 0  # next position to return

    def _start(self, key: tuple[tuple[int, ...], str], shape: tuple[int, ...]) -> None:
        super()._start(key, shape)
        if self.config.mode == 'window':
            w, grid = self.config.window, self._grid.shape
            self._win_grid = np.full((w, *grid), np.nan, np.float32)
            self._win_scale = np.full(w, np.nan)
            self._win_shift = np.full(w, np.nan)
            self._win_good = np.zeros(w, bool)
            self._win_reason = np.full(w, '', dtype=object)

    def _window_push(self, inp: FrameInput, index: int) -> list[AlignedFrame]:
        ring = self._buffer()
        slot = self._length % ring.capacity
        self._store(slot, index, inp)
        ring.aligned[slot].fill(np.nan)  # aligned when its window completes
        ring.grid_aligned[slot].fill(np.nan)
        ring.good[slot] = ring.fallback[slot] = False
        ring.reason[slot] = ''
        self._length += 1
        if self._length == self._win_start + self.config.window:
            return self._run_window(final=False)
        return []

    def _window_flush(self) -> list[AlignedFrame]:
        if self._length > self._aligned_end:
            return self._run_window(final=True)
        return self._emit_range(self._emit_next, self._length)

    def _run_window(self, *, final: bool) -> list[AlignedFrame]:
        """Align the window [win_start, length) and return the frames that are final."""
        cfg = self.config
        ring = self._buffer()
        cap = ring.capacity
        start, end = self._win_start, self._length
        prior_end = self._aligned_end  # frames before this were aligned by earlier windows
        overlap_start = max(start, prior_end - cfg.overlap)
        anchors = range(start, min(start + cfg.window_keyframes, end))
        self._stats.windows += 1

        # 1. Bring every frame of the window into one scale, chained from the keyframes
        #    (or from the first usable frame), which keep their earlier alignment.
        last: int | None = None  # window offset of the last good consolidated frame
        last_params = self._last_good
        for p in range(start, end):
            j, slot = p - start, p % cap
            if p < overlap_start:  # a keyframe: already aligned, kept as it is
                self._win_grid[j] = ring.grid_aligned[slot]
                params = (float(ring.scale[slot]), float(ring.shift[slot]))
                good, reason = bool(ring.good[slot]), ''
            else:
                sources = ([] if last is None else [last]) + [
                    a - start for a in anchors
                    if a < p and a - start != last and self._win_good[a - start]]
                refs = [self._window_ref(start + i, slot) for i in sources]
                previous = (None if last is None else
                            (float(self._win_scale[last]), float(self._win_shift[last])))
                found, reason, good, trusted = self._consolidate(p, slot, refs, prior_end,
                                                                 previous)
                if not good and last_params is not None:
                    found = last_params  # fall back to the last good scale and shift
                params = (math.nan, math.nan) if found is None else found
                grid = self._win_grid[j]
                grid[...] = apply_affine(ring.grid_raw[slot], *params)
                grid[~trusted] = np.nan
            self._win_scale[j], self._win_shift[j] = params
            self._win_good[j] = good
            self._win_reason[j] = reason
            if good:
                last, last_params = j, params

        # 2. One scale and shift for the window: overlapped frames vs their earlier result.
        #    A stable model keeps its own scale (see ``policy.py``): no window fit either.
        s_w, t_w = 1.0, 0.0
        pairs = [p for p in range(overlap_start, min(prior_end, end))
                 if self._win_good[p - start] and ring.good[p % cap]]
        if pairs and not self._prior.holds_parameters:
            fit = fit_scale_shift(
                np.stack([self._win_grid[p - start] for p in pairs]),
                np.stack([ring.grid_aligned[p % cap] for p in pairs]),
                estimator=cfg.estimator, robust=cfg.robust, iterations=cfg.robust_iterations,
                trim_fraction=cfg.trim_fraction, huber_k=cfg.huber_k,
                with_shift=cfg.scale_source != 'model', min_pixels=cfg.min_valid_pixels)
            if fit.ok:
                self._accept(fit)
                s_w, t_w = fit.scale, fit.shift
            else:
                # The consolidation is already in the aligned scale: keep it unchanged.
                self._stats.rejected_fits += 1

        # 3. Blend the overlapped frames not yet returned, append the new ones.
        for p in range(max(overlap_start, self._emit_next), end):
            j, slot = p - start, p % cap
            scale = s_w * float(self._win_scale[j])
            shift = s_w * float(self._win_shift[j]) + t_w
            aligned = apply_affine(ring.raw[slot], scale, shift)
            good = bool(self._win_good[j])
            reason = str(self._win_reason[j])
            if p < prior_end:
                # Weight of the new window ramps over the overlap: 1/(L+1) ... L/(L+1).
                weight = (p - (prior_end - cfg.overlap) + 1) / (cfg.overlap + 1)
                aligned = mix_frames(ring.aligned[slot], aligned, weight)
                # Both are affine maps of the same raw frame, so is their blend.
                scale = (1.0 - weight) * float(ring.scale[slot]) + weight * scale
                shift = (1.0 - weight) * float(ring.shift[slot]) + weight * shift
                reason = reason or str(ring.reason[slot])
                good = good or bool(ring.good[slot])
            trusted = np.isfinite(self._win_grid[j]) if good else np.ones(self._grid.shape, bool)
            self._set_result(slot, aligned, trusted, scale, shift, good, reason)
            if good and not reason:
                self._set_last_good(scale, shift)

        self._aligned_end = end
        out = self._emit_range(self._emit_next, end if final else end - cfg.overlap)
        self._win_start = max(0, end - cfg.window_keyframes - cfg.overlap)
        return out

    def _consolidate(
        self, p: int, slot: int, refs: list[Reference], prior_end: int,
        previous: tuple[float, float] | None,
    ) -> tuple[tuple[float, float] | None, str, bool, np.ndarray]:
        """Scale and shift of window frame ``p`` in the window's common scale.

        Returns:
            (params or None, fallback reason, usable as a reference, (h, w) trust mask).
        """
        ring = self._buffer()
        sub = ring.grid_raw[slot]
        trusted = np.ones(sub.shape, bool)
        if refs:
            fit, trusted, _, recent = self._fit(self._ring_frame(slot), refs)
            if fit.ok:
                self._accept(fit)
                posed = bool(ring.has_pose[slot]) and self._fit_camera() is not None
                params = self._prior.apply((fit.scale, fit.shift), previous, sub, posed,
                                           recent if previous is not None else None)
                return params, '', True, trusted
            self._stats.rejected_fits += 1
            return None, fit.reason, False, trusted
        if p < prior_end and ring.good[slot]:
            return (float(ring.scale[slot]), float(ring.shift[slot])), '', True, trusted
        if self._last_good is None:
            scale, shift, reason = self._initial_params(sub)
            return (scale, shift), reason, not reason, trusted
        if self._can_anchor(sub):
            # Nothing in the window to fit against: chain on from the last good scale.
            return self._last_good, NO_REFERENCE, True, trusted
        return None, TOO_FEW_PIXELS, False, trusted

    def _window_ref(self, ref_pos: int, slot: int) -> Reference:
        """Consolidated window frame at position ``ref_pos`` as a reference for ``slot``."""
        ring = self._buffer()
        ref_slot = ref_pos % ring.capacity
        return self._reference(self._win_grid[ref_pos - self._win_start],
                               ring.pose[ref_slot] if ring.has_pose[ref_slot] else None,
                               self._ring_frame(slot))

    def _emit_range(self, begin: int, end: int) -> list[AlignedFrame]:
        ring = self._buffer()
        out = []
        for p in range(begin, end):
            slot = p % ring.capacity
            reason = str(ring.reason[slot]) if ring.fallback[slot] else ''
            out.append(self._emit(int(ring.index[slot]), int(ring.stamp[slot]),
                                  ring.aligned[slot].copy(), float(ring.scale[slot]),
                                  float(ring.shift[slot]), reason,
                                  ring.pose[slot].copy() if ring.has_pose[slot] else None,
                                  mix=not reason and p > 0))
        self._emit_next = max(self._emit_next, end)
        return out

