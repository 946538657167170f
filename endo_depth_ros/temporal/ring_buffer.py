"""Preallocated per-frame storage of the aligner and the fitting subsample of a frame."""

from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np

from endo_depth_ros.camera import Intrinsics


@dataclass(frozen=True)
class FitGrid:
    """The fitting image of a frame size: every ``step``-th pixel in both directions,
    starting at ``(row0, col0)``, at most ``max_pixels`` pixels.

    Point samples rather than block averages: averaging would smear isolated outliers
    into noise that no robust loop can reject.
    """

    step: int
    row0: int
    col0: int
    shape: tuple[int, int]

    @classmethod
    def for_size(cls, height: int, width: int, max_pixels: int) -> FitGrid:
        """The grid of an H x W frame with at most ``max_pixels`` points."""
        step = max(1, math.ceil(math.sqrt(height * width / max_pixels)))
        row0 = min(step // 2, height - 1)
        col0 = min(step // 2, width - 1)
        shape = (len(range(row0, height, step)), len(range(col0, width, step)))
        return cls(step, row0, col0, shape)

    @property
    def size(self) -> int:
        """Points of the fitting image."""
        return self.shape[0] * self.shape[1]

    def sample(self, image: np.ndarray) -> np.ndarray:
        """The (h, w) fitting image of an (H, W) image (a copy)."""
        return image[self.row0::self.step, self.col0::self.step].copy()

    def intrinsics(self, camera: Intrinsics) -> Intrinsics:
        """The camera of the fitting image: its pixel u is ``col0 + step * u`` of ``camera``."""
        s = self.step
        return Intrinsics(
            width=self.shape[1], height=self.shape[0], fx=camera.fx / s, fy=camera.fy / s,
            cx=(camera.cx - self.col0) / s, cy=(camera.cy - self.row0) / s,
            distortion_model=camera.distortion_model, distortion=camera.distortion)


@dataclass(frozen=True, eq=False)
class FrameInput:
    """A validated pushed frame."""

    disparity: np.ndarray  # (H, W) float32, NaN invalid
    usable: np.ndarray  # (H, W) bool: finite and not masked out
    grid: np.ndarray  # (h, w) float32 fitting image, NaN where not usable
    pose: np.ndarray | None
    stamp_ns: int


class RingBuffer:
    """Preallocated per-frame storage; frame at sequence position p lives in slot p % C."""

    def __init__(self, capacity: int, height: int, width: int, grid: tuple[int, int]) -> None:
        c = capacity
        self.capacity = c
        self.raw = np.full((c, height, width), np.nan, np.float32)
        self.aligned = np.full((c, height, width), np.nan, np.float32)
        self.usable = np.zeros((c, height, width), bool)
        self.grid_raw = np.full((c, *grid), np.nan, np.float32)
        # Aligned subsample, NaN where not usable or not trusted (outlier of its fit).
        self.grid_aligned = np.full((c, *grid), np.nan, np.float32)
        self.pose = np.zeros((c, 4, 4))
        self.has_pose = np.zeros(c, bool)
        self.index = np.full(c, -1, np.int64)
        self.stamp = np.zeros(c, np.int64)
        self.scale = np.full(c, np.nan)
        self.shift = np.full(c, np.nan)
        self.good = np.zeros(c, bool)  # usable as a reference
        self.fallback = np.zeros(c, bool)
        self.reason = np.full(c, '', dtype=object)

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated arrays."""
        arrays = (self.raw, self.aligned, self.usable, self.grid_raw, self.grid_aligned,
                  self.pose, self.has_pose, self.index, self.stamp, self.scale, self.shift,
                  self.good, self.fallback, self.reason)
        return sum(a.nbytes for a in arrays)


def make_input(disparity: np.ndarray, mask: np.ndarray | None, pose: np.ndarray | None,
               stamp_ns: int, grid: FitGrid) -> FrameInput:
    """Bundle a frame's disparity with its usable pixels and fitting image."""
    usable = np.isfinite(disparity)
    if mask is None:
        masked = disparity
    else:
        usable &= mask
        masked = np.where(usable, disparity, np.float32(np.nan))
    return FrameInput(disparity, usable, grid.sample(masked), pose, stamp_ns)

