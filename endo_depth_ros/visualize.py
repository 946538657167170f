"""Depth images for people: the turbo colour map.

Near surfaces are red, far ones blue, invalid pixels black, so a depth image reads
like the Depth Anything demos. Used by the node (``depth/colormap``) and the reports.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

#: Percentiles of the valid depths mapped to the ends of the colour map when no range is given;
#: robust to a few outliers (specular spots, far holes).
DEFAULT_PERCENTILES = (2.0, 98.0)


@lru_cache(maxsize=1)
def _turbo_lut() -> np.ndarray:
    """Turbo look-up table for ``cv2.LUT``, (1, 256, 3) uint8 RGB (0 dark blue, 255 dark red)."""
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    bgr = cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO).reshape(1, 256, 3)
    lut = np.ascontiguousarray(bgr[:, :, ::-1])
    lut.flags.writeable = False
    return lut


def turbo(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to turbo colours.

    Args:
        values: any shape, float; clipped to [0, 1]; NaN maps to black.

    Returns:
        ``values.shape + (3,)`` uint8 RGB.
    """
    values = np.asarray(values, dtype=np.float32)
    shape = values.shape
    if values.size == 0:
        return np.zeros((*shape, 3), dtype=np.uint8)
    flat = values.reshape(shape[0], -1) if values.ndim >= 2 else values.reshape(-1, 1)
    # +0.5 rounds to the nearest of the 256 colours; NaN is indexed 0, then blacked out.
    scaled = np.clip(flat, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)
    finite = np.isfinite(scaled)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    index = scaled.astype(np.uint8)
    # cv2.LUT on a 3-channel index image: ~10x faster than numpy fancy indexing.
    colours = cv2.LUT(cv2.merge([index, index, index]), _turbo_lut())
    if not finite.all():
        colours = cv2.bitwise_and(colours, colours, mask=finite.astype(np.uint8))
    return colours.reshape(*shape, 3)


def colorize_depth(
    depth: np.ndarray,
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Colour a depth image with turbo: near is red, far is blue, invalid is black.

    Args:
        depth: (H, W) depth in metres (or any positive unit), NaN / non-positive invalid.
        vmin: depth shown as the nearest colour; default the 2nd percentile of valid depths.
        vmax: depth shown as the farthest colour; default the 98th percentile.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    depth = np.asarray(depth, dtype=np.float32)
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return np.zeros((*depth.shape, 3), dtype=np.uint8)
    if vmin is None or vmax is None:
        low, high = _robust_range(depth, valid)
        vmin = low if vmin is None else vmin
        vmax = high if vmax is None else vmax
    span = max(vmax - vmin, 1e-12)
    # Reversed so that near (small depth) gets the warm end of the map.
    t = np.where(valid, (vmax - depth) / span, np.nan)
    return turbo(t)


def _robust_range(depth: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """The default percentiles of the valid depths, on a strided subsample of ~16k pixels.

    A percentile sorts its input; a subsample keeps this well below a millisecond for
    large images while estimating the same range.
    """
    step = max(1, int(np.sqrt(depth.size / _RANGE_SAMPLES)))
    sample = depth[::step, ::step][valid[::step, ::step]]
    if sample.size == 0:  # valid pixels too sparse for the grid
        sample = depth[valid]
    low, high = np.percentile(sample, DEFAULT_PERCENTILES)
    return float(low), float(high)


#: Pixels used to estimate the colour range of a depth image.
_RANGE_SAMPLES = 16384
