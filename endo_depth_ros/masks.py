"""The endoscope's field of view: which pixels see tissue and which the dark surround.

Endoscope video shows the scene through a circular (or cropped-circle, or rectangular)
window surrounded by black, which is not black at all after the sensor and the video
codec: noise, JPEG/H.264 blocks and ringing put grey levels of 5-20 there. Depth
networks still predict something for those pixels; without a mask they end up in the
point cloud, the odometry's features, the alignment fits and the metrics.

:func:`detect_field_of_view` finds the view in a brightness image (the per-pixel maximum
over a few frames, so that the dark lumen and shadows inside the view are filled by
other frames): a median filter removes the codec's speckles, an Otsu threshold gives a
first region, and the edge is then placed where the brightness crosses half-way between
the surround and the tissue next to the edge (the middle of the soft optical edge); the
convex hull of that region is the view (a circle, a circle cut by the image borders and a
rectangle are all convex, and the hull fills the dark lumen inside).

:class:`FieldOfView` keeps one mask per stream: it detects from the first
``detect_frames`` frames, then only checks every ``check_every`` frames that the mask
still fits (no bright pixels outside, no dark band inside the edge) and detects again on
a size change or after two failed checks. Set by hand (``mode='circle'``), given by a
recording (:meth:`FieldOfView.set_fixed`) or disabled (``mode='off'``).

Masks are (H, W) bool, True inside the view; ``None`` means "every pixel is in view".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
import math

import cv2
import numpy as np

from endo_depth_ros.errors import ConfigError

#: ``FieldOfViewConfig.mode`` values.
FOV_MODES = ('auto', 'circle', 'off')
#: A surround brighter than this (grey level, 90th percentile) is not a surround: the
#: region outside the detected view is then tissue (vignetting, shadow) and no mask is set.
SURROUND_MAX_LEVEL = 45
#: A view covering more than this fraction of the image is treated as the full image.
FULL_VIEW_FRACTION = 0.985
#: Fraction of the pixels outside the view that may be bright before the mask is refit.
MISFIT_FRACTION = 0.01


@dataclass(frozen=True)
class FieldOfViewConfig:
    """How the endoscope's field of view is found (node parameters ``field_of_view.*``).

    Attributes:
        mode: ``'auto'`` detects the view from the images; ``'circle'`` uses
            ``center_x``, ``center_y`` and ``radius``; ``'off'`` keeps every pixel.
        center_x: circle centre as a fraction of the image width (circle mode).
        center_y: circle centre as a fraction of the image height (circle mode).
        radius: circle radius as a fraction of the shorter image side (circle mode;
            0.5 touches the shorter sides).
        margin_px: shrink the view by this many pixels (its soft edge is unreliable).
        detect_frames: frames combined (per-pixel maximum) to detect the view.
        check_every: frames between checks that the view still fits the images.
    """

    mode: str = 'auto'
    center_x: float = 0.5
    center_y: float = 0.5
    radius: float = 0.5
    margin_px: int = 2
    detect_frames: int = 5
    check_every: int = 15

    def __post_init__(self) -> None:
        if self.mode not in FOV_MODES:
            raise ConfigError(f'field_of_view mode {self.mode!r} is not one of {FOV_MODES}.')
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == 'int' and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f'field_of_view {f.name} must be an integer, got {value!r}.')
            if f.type == 'float' and (isinstance(value, bool)
                                      or not isinstance(value, int | float)
                                      or not math.isfinite(value)):
                raise ConfigError(f'field_of_view {f.name} must be a number, got {value!r}.')
        if not (-0.5 <= self.center_x <= 1.5 and -0.5 <= self.center_y <= 1.5):
            raise ConfigError('field_of_view center_x/center_y must be in [-0.5, 1.5] '
                              f'(fractions of the image), got {self.center_x}, {self.center_y}.')
        if not 0.05 <= self.radius <= 2.0:
            raise ConfigError(f'field_of_view radius must be in [0.05, 2] (fraction of the '
                              f'shorter side), got {self.radius}.')
        if not 0 <= self.margin_px <= 64:
            raise ConfigError(f'field_of_view margin_px must be in 0..64, got {self.margin_px}.')
        if not 1 <= self.detect_frames <= 100:
            raise ConfigError(
                f'field_of_view detect_frames must be in 1..100, got {self.detect_frames}.')
        if not 1 <= self.check_every <= 10000:
            raise ConfigError(
                f'field_of_view check_every must be in 1..10000, got {self.check_every}.')


def brightness(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 brightness for detection: channel maximum, 5x5 median filtered.

    The median removes the isolated bright speckles that noise and compression leave in
    the surround without moving the view's edge.
    """
    grey = rgb.max(axis=2) if rgb.ndim == 3 else rgb
    return cv2.medianBlur(np.ascontiguousarray(grey, dtype=np.uint8), 5)


@dataclass(frozen=True)
class Detection:
    """A detected view.

    Attributes:
        mask: (H, W) bool view at the image size, None for the whole image.
        threshold: grey level separating the view from the surround.
        work_mask: the view at the reduced working size the detection ran at (for checks).
    """

    mask: np.ndarray | None
    threshold: float
    work_mask: np.ndarray | None = None


#: Detection runs on images whose shorter side is at most this (pixels): the view's
#: outline is then mapped back to the full size (cost independent of the resolution).
WORK_SIDE = 360


def working_level(level: np.ndarray) -> np.ndarray:
    """``level`` area-averaged down to a shorter side of at most ``WORK_SIDE`` pixels."""
    height, width = level.shape
    factor = min(height, width) / WORK_SIDE
    if factor <= 1.0:
        return level
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    return cv2.resize(level, size, interpolation=cv2.INTER_AREA)


def working_brightness(rgb: np.ndarray) -> np.ndarray:
    """:func:`brightness` of ``rgb`` area-averaged to the working size (cheap at any size)."""
    height, width = rgb.shape[:2]
    factor = min(height, width) / WORK_SIDE
    if factor > 1.0:
        size = (max(1, round(width / factor)), max(1, round(height / factor)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return brightness(rgb)


def detect_field_of_view(level: np.ndarray,
                         shape: tuple[int, int] | None = None) -> Detection:
    """Find the endoscope's view in a brightness image.

    Args:
        level: (h, w) uint8 brightness (:func:`brightness`, or its maximum over frames),
            at the image's size or reduced (:func:`working_brightness`).
        shape: (H, W) of the image the mask is for (default: ``level``'s).

    Returns:
        The view (``mask`` None when it fills the image or when there is no dark
        surround) and the threshold used (grey level).
    """
    level = np.asarray(level, dtype=np.uint8)
    shape = level.shape if shape is None else (int(shape[0]), int(shape[1]))
    work = working_level(level)
    hull, threshold = _detect_hull(work)
    if hull is None:
        return Detection(None, threshold)
    work_mask = _fill(hull, work.shape)
    if work.shape == shape:
        return Detection(work_mask, threshold, work_mask)
    sy, sx = shape[0] / work.shape[0], shape[1] / work.shape[1]
    # A boundary pixel of the working image covers half a working pixel beyond its centre.
    centre = hull.mean(axis=0)
    offset = hull - centre
    norm = np.maximum(np.linalg.norm(offset, axis=1, keepdims=True), 1e-9)
    grown = hull + 0.5 * offset / norm
    full = np.column_stack([(grown[:, 0] + 0.5) * sx - 0.5, (grown[:, 1] + 0.5) * sy - 0.5])
    return Detection(_fill(full, shape), threshold, work_mask)


def _detect_hull(level: np.ndarray) -> tuple[np.ndarray | None, float]:
    """(N, 2) float hull (x, y) of the view in ``level``'s pixels, or None; the threshold."""
    height, width = level.shape
    otsu, _ = cv2.threshold(level, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = float(np.clip(otsu, 8, SURROUND_MAX_LEVEL))
    hull = _largest_hull(level > threshold)
    if hull is None:
        return None, threshold
    coarse = _fill(hull, level.shape)
    if coarse.mean() >= FULL_VIEW_FRACTION:
        return None, threshold
    side = min(height, width)
    # The surround is measured away from the edge (whose optics blur it).
    far = _grow(coarse, max(2, side // 50))
    outside = level[~far]
    if outside.size < 0.01 * level.size or np.percentile(outside, 90) > SURROUND_MAX_LEVEL:
        return None, threshold
    dark = float(np.median(outside))
    # Tissue level next to the edge: a local mean of the view's inner pixels.
    inner = _shrink(coarse, max(2, side // 60)).astype(np.float32)
    box = (2 * max(2, side // 20) + 1,) * 2
    weight = cv2.blur(inner, box)
    tissue = cv2.blur(level.astype(np.float32) * inner, box)
    with np.errstate(invalid='ignore', divide='ignore'):
        tissue = np.where(weight > 1e-3, tissue / np.maximum(weight, 1e-6), np.nan)
    # Pixels far from any inner pixel take the median tissue level.
    tissue = np.where(np.isfinite(tissue), tissue, float(np.median(level[coarse])))
    half = dark + 0.5 * (tissue - dark)
    hull = _largest_hull((level > np.maximum(half, dark + 2.0)) & far)
    if hull is None or _fill(hull, level.shape).mean() >= FULL_VIEW_FRACTION:
        return None, threshold
    return hull, threshold


def circle_mask(width: int, height: int, center_x: float, center_y: float,
                radius: float) -> np.ndarray:
    """(H, W) bool circle; centre in fractions of the size, radius of the shorter side."""
    cx, cy = center_x * width - 0.5, center_y * height - 0.5
    r = radius * min(width, height)
    u = np.arange(width, dtype=np.float64) - cx
    v = np.arange(height, dtype=np.float64) - cy
    return (u[None, :] ** 2 + v[:, None] ** 2) <= r * r


def shrink(mask: np.ndarray | None, pixels: int) -> np.ndarray | None:
    """The mask eroded by ``pixels`` (None stays None: the whole image)."""
    if mask is None or pixels <= 0:
        return mask
    return _shrink(mask, pixels)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


class FieldOfView:
    """One stable field-of-view mask per stream (see the module docstring).

    Args:
        config: how to find the view.
    """

    def __init__(self, config: FieldOfViewConfig | None = None) -> None:
        self.config = config if config is not None else FieldOfViewConfig()
        self._fixed: np.ndarray | None = None
        #: Times the view was (re)detected since construction.
        self.detections = 0
        self.reset()

    def reset(self) -> None:
        """Forget the detected view (the next frames detect it again)."""
        self._size: tuple[int, int] | None = None
        self._accumulated: np.ndarray | None = None
        self._collected = 0
        self._since_check = 0
        self._misfits = 0
        self._detection = Detection(None, 0.0)
        self._mask: np.ndarray | None = None

    def set_fixed(self, mask: np.ndarray | None) -> None:
        """Use this (H, W) bool view for images of its size (None: back to the config)."""
        self._fixed = None if mask is None else np.asarray(mask, dtype=bool)

    @property
    def mask(self) -> np.ndarray | None:
        """The current view (after ``margin_px``), None for the whole image."""
        return self._mask

    def update(self, rgb: np.ndarray) -> np.ndarray | None:
        """The view for this frame (H, W) bool, or None when every pixel is in view.

        Args:
            rgb: (H, W, 3) uint8 image of the stream.
        """
        cfg = self.config
        size = rgb.shape[:2]
        if self._fixed is not None and self._fixed.shape == size:
            return self._fixed
        if cfg.mode == 'off':
            return None
        if size != self._size:
            self.reset()
            self._size = size
            if cfg.mode == 'circle':
                self._mask = shrink(circle_mask(size[1], size[0], cfg.center_x, cfg.center_y,
                                                cfg.radius), cfg.margin_px)
        if cfg.mode == 'circle':
            return self._mask
        # Brightness only when it is used (detection frames, periodic checks), at the
        # working size: the cost does not grow with the resolution.
        if self._collected < cfg.detect_frames:
            self._accumulate(working_brightness(rgb))
        else:
            self._since_check += 1
            if self._since_check >= cfg.check_every:
                self._since_check = 0
                self._check(working_brightness(rgb))
        return self._mask

    def _accumulate(self, level: np.ndarray) -> None:
        self._accumulated = (level if self._accumulated is None
                             else np.maximum(self._accumulated, level))
        self._collected += 1
        self._detection = detect_field_of_view(self._accumulated, self._size)
        self._mask = shrink(self._detection.mask, self.config.margin_px)
        if self._collected == self.config.detect_frames:
            self.detections += 1

    def _check(self, level: np.ndarray) -> None:
        """Start detecting again when the view no longer fits two checks in a row."""
        if _fits(self._detection, level):
            self._misfits = 0
            return
        self._misfits += 1
        if self._misfits >= 2:
            size = self._size
            self.reset()
            self._size = size
            self._accumulate(level)


def _fits(detection: Detection, level: np.ndarray) -> bool:
    """Whether the detected view still fits this frame (checked at the working size)."""
    level = working_level(level)
    mask = detection.work_mask
    side = min(level.shape)
    if mask is None:
        # A full view stops fitting when a dark surround appears.
        return detect_field_of_view(level).mask is None
    far = ~_grow(mask, max(3, side // 40))
    if far.any() and np.mean(level[far] > detection.threshold) > MISFIT_FRACTION:
        return False  # bright pixels outside: the view moved or grew
    band = _shrink(mask, max(3, side // 80)) & ~_shrink(mask, max(6, side // 40))
    # A dark band all along the inside of the edge: the view shrank.
    return not (band.any() and np.mean(level[band] <= detection.threshold) > 0.6)


def _largest_hull(binary: np.ndarray) -> np.ndarray | None:
    """(N, 2) float64 convex hull (x, y) of the largest connected region (None: none)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8),
                                                               connectivity=8)
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[largest, cv2.CC_STAT_AREA] < 0.01 * binary.size:
        return None
    contours, _ = cv2.findContours((labels == largest).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    hull = cv2.convexHull(np.concatenate(contours))
    return hull.reshape(-1, 2).astype(np.float64)


def _fill(hull: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) bool: pixels whose centre is inside the convex polygon ``hull`` (x, y)."""
    out = np.zeros(shape[:2], np.uint8)
    # Sub-pixel vertices (4 fractional bits) keep the scaled outline where it belongs.
    cv2.fillConvexPoly(out, np.round(hull * 16).astype(np.int32), 1, cv2.LINE_8, 4)
    return out.astype(bool)


# Erosion and dilation by a disk through distance transforms: linear time for any radius
# (a 40-pixel disk as a morphology kernel costs seconds at 1920x1080).


def _shrink(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Pixels at least ``pixels`` from the outside of ``mask`` (the image border does not
    count as outside, so a view cut by the image edge keeps that edge)."""
    inside = mask.astype(np.uint8)
    if not inside.any():
        return np.zeros(mask.shape, bool)
    distance = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return distance > pixels


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Pixels within ``pixels`` of ``mask``."""
    outside = (~mask.astype(bool)).astype(np.uint8)
    if not outside.any():
        return np.ones(mask.shape, bool)
    if outside.all():
        return np.zeros(mask.shape, bool)
    distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return distance <= pixels


def combine(*masks: np.ndarray | None) -> np.ndarray | None:
    """Logical AND of the given masks, ignoring None (None when all are None)."""
    present: Sequence[np.ndarray] = [m for m in masks if m is not None]
    if not present:
        return None
    out = np.asarray(present[0], dtype=bool)
    for m in present[1:]:
        out = out & m
    return out
