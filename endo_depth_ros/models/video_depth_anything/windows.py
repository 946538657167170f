"""Overlapping windows: the official schedules, scale-shift fit and linear blending."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Frames per window (offline) and in the attention of a streaming step.
WINDOW = 32
#: Frames a window shares with the previous one (keyframes fed again).
OVERLAP = 10
#: Overlapping frames blended linearly between two windows.
INTERP = 8
#: Streaming keeps the first frame and the last ``STREAM_GAP`` frames' states.
STREAM_GAP = 41


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
