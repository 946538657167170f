"""What the temporal alignment returns: aligned frames and counters."""

from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np


@dataclass(frozen=True, eq=False)
class AlignedFrame:
    """One temporally aligned frame.

    Attributes:
        index: position of the frame among the frames pushed since construction or the
            last ``reset()`` (0-based).
        stamp_ns: the stamp given to ``push`` (int nanoseconds).
        depth: (H, W) float32 depth in metres (relative units when
            ``scale_source='none'``), NaN invalid.
        disparity: (H, W) float32 aligned disparity ``1 / depth`` (1/m), NaN invalid,
            0 where the aligned disparity was clamped (depth NaN there).
        scale: scale applied to the raw disparity (NaN before any scale was known).
        shift: shift applied to the raw disparity (1/m).
        fallback: the frame's own fit was not usable and the last good scale and shift
            (or, at the start of a stream, a scale from this frame alone) were used.
        fallback_reason: why (``''`` when ``fallback`` is False): 'too_few_pixels',
            'constant', 'non_finite', 'non_positive_scale' or 'no_reference'.
    """

    index: int
    stamp_ns: int
    depth: np.ndarray
    disparity: np.ndarray
    scale: float
    shift: float
    fallback: bool = False
    fallback_reason: str = ''


@dataclass
class AlignmentStats:
    """Counters of a ``TemporalAligner`` (``aligner.stats`` returns a copy).

    Attributes:
        frames: frames pushed.
        emitted: frames returned by ``push``/``flush``.
        fits: fits accepted.
        rejected_fits: fits rejected (too few pixels, constant, non-finite, scale <= 0).
        fallbacks: frames returned with a fallback scale and shift.
        resets: buffer resets (frame size or output kind changes, ``reset()`` calls).
        reanchors: re-anchorings after ``max_fallbacks`` consecutive fallbacks.
        keyframes_added: keyframes taken (stream mode).
        windows: windows processed (window mode).
        last_scale, last_shift: the last good scale and shift.
        last_fit_pixels: pixel pairs in the last accepted fit.
        last_residual: robust standard deviation of that fit's residuals (disparity).
    """

    frames: int = 0
    emitted: int = 0
    fits: int = 0
    rejected_fits: int = 0
    fallbacks: int = 0
    resets: int = 0
    reanchors: int = 0
    keyframes_added: int = 0
    windows: int = 0
    last_scale: float = math.nan
    last_shift: float = math.nan
    last_fit_pixels: int = 0
    last_residual: float = math.nan

