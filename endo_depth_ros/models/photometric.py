"""A weight-free depth prior for endoscopes: the light travels with the camera.

With the light source at the optical centre, the irradiance of a Lambertian
surface point at range ``r`` is ``I ≈ albedo · cos(incidence) / r²``, so
``1/r ∝ sqrt(I)`` up to albedo and orientation. The estimate is therefore:

1. luminance (BT.601 grey) of the image;
2. specular highlights (near-saturated pixels, slightly dilated) and dark pixels
   get zero weight, then a normalised Gaussian convolution at low resolution both
   fills the holes and smooths away texture (albedo varies faster than depth);
3. the radial fall-off that is not depth (the light's and lens' ``cosⁿ`` vignetting
   and the range-vs-z factor) is divided out with a ``cosⁿ(angle)`` model of a
   nominal field of view;
4. ``sqrt`` of the compensated intensity is the disparity proxy; it is upsampled
   bilinearly to the input resolution.

The output is ``'relative_disparity'`` (affine-invariant inverse depth), float32,
finite everywhere except where the image is black (grey level ≤ ``black_level``,
e.g. outside the circular field of view of an endoscope), which is NaN. The values
are not normalised per frame, so a fixed exposure gives temporally consistent
scale. It runs on the CPU with OpenCV (about 1-2 ms per 518×518 frame).
"""

from __future__ import annotations

from dataclasses import dataclass
import math

import cv2
import numpy as np

from endo_depth_ros.errors import ConfigError
from endo_depth_ros.models.base import DepthModel, OutputKind


@dataclass(frozen=True)
class PhotometricConfig:
    """Parameters of the photometric prior.

    Attributes:
        work_size: short side (pixels) of the working resolution; the prior is smooth,
            so a low resolution loses nothing and keeps it fast.
        smooth_sigma: Gaussian smoothing as a fraction of the working short side.
        specular_level: grey level (0-255) from which a pixel counts as a highlight.
        dark_level: grey level below which a pixel is unreliable (weight 0, clipped).
        black_level: grey level at or below which a pixel has no signal (output NaN).
        fov_deg: nominal diagonal field of view used for the fall-off compensation.
        falloff_power: ``n`` in the ``cosⁿ(angle)`` fall-off divided out (0 disables).
        gamma: exponent that undoes the camera's tone curve (pixel = linear^(1/gamma));
            1 for linear (raw) images.
    """

    work_size: int = 96
    smooth_sigma: float = 0.06
    specular_level: int = 235
    dark_level: int = 6
    black_level: int = 2
    fov_deg: float = 100.0
    falloff_power: float = 4.0
    gamma: float = 2.2

    def __post_init__(self) -> None:
        if self.work_size < 8:
            raise ConfigError(f'work_size must be at least 8, got {self.work_size}.')
        if not 0.0 <= self.smooth_sigma <= 1.0:
            raise ConfigError(f'smooth_sigma must be in [0, 1], got {self.smooth_sigma}.')
        if not 0 <= self.black_level <= self.dark_level < self.specular_level <= 255:
            raise ConfigError(
                'Need 0 <= black_level <= dark_level < specular_level <= 255, got '
                f'{self.black_level}, {self.dark_level}, {self.specular_level}.')
        if not 0.0 < self.fov_deg < 180.0:
            raise ConfigError(f'fov_deg must be in (0, 180), got {self.fov_deg}.')
        if self.falloff_power < 0.0:
            raise ConfigError(f'falloff_power must be >= 0, got {self.falloff_power}.')
        if not 0.1 <= self.gamma <= 5.0:
            raise ConfigError(f'gamma must be in [0.1, 5], got {self.gamma}.')


class PhotometricModel(DepthModel):
    """The photometric prior as a ``DepthModel`` (name ``'photometric'``, CPU, fp32)."""

    def __init__(self, config: PhotometricConfig | None = None) -> None:
        self.config = config if config is not None else PhotometricConfig()
        self.name = 'photometric'
        self.output_kind: OutputKind = 'relative_disparity'
        self.device = 'cpu'
        self.precision = 'fp32'
        self.backend = 'opencv'
        # Fall-off maps depend only on the working size: cache them per shape.
        self._falloff: dict[tuple[int, int], np.ndarray] = {}
        # Grey level -> linear intensity in [0, 1] (undoes the tone curve).
        self._linear = ((np.arange(256, dtype=np.float32) / 255.0) ** self.config.gamma
                        ).astype(np.float32)
        self._last_size = self.network_size(self.config.work_size, self.config.work_size)

    @property
    def input_size(self) -> tuple[int, int]:
        return self._last_size

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        scale = min(1.0, self.config.work_size / min(height, width))
        return max(1, round(height * scale)), max(1, round(width * scale))

    def _infer_batch(self, batch: np.ndarray) -> np.ndarray:
        out = np.empty(batch.shape[:3], np.float32)
        for i, rgb in enumerate(batch):
            out[i] = self._disparity(rgb)
        return out

    def _disparity(self, rgb: np.ndarray) -> np.ndarray:
        cfg = self.config
        height, width = rgb.shape[:2]
        h, w = self.network_size(height, width)
        self._last_size = (h, w)
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        # Weight 1 for well-exposed pixels, 0 for highlights and too-dark pixels.
        usable = cv2.inRange(grey, cfg.dark_level, cfg.specular_level - 1)
        # Unusable pixels become grey 0, whose linear intensity is 0 (uint8 ops: fast).
        linear = cv2.LUT(cv2.bitwise_and(grey, usable), self._linear)
        small_i = cv2.resize(linear, (w, h), interpolation=cv2.INTER_AREA)
        small_w: np.ndarray = cv2.resize(usable, (w, h), interpolation=cv2.INTER_AREA)
        # Highlights are surrounded by a bright halo: shrink the usable area by a pixel.
        small_w = cv2.erode(small_w, _KERNEL3).astype(np.float32) * np.float32(1.0 / 255.0)
        small_i *= small_w > 0  # keep intensity and weight consistent after erosion
        sigma = cfg.smooth_sigma * min(h, w)
        if sigma > 0:
            small_i = cv2.GaussianBlur(small_i, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
            small_w = cv2.GaussianBlur(small_w, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        # Normalised convolution; where nothing is usable nearby, fall back to dark_level.
        dark = float(self._linear[cfg.dark_level])
        intensity: np.ndarray = small_i / np.maximum(small_w, 1e-6)
        intensity[small_w <= 1e-3] = dark
        np.maximum(intensity, dark, out=intensity)
        intensity /= self._falloff_map(h, w)
        disparity = np.sqrt(intensity).astype(np.float32, copy=False)
        full = cv2.resize(disparity, (width, height), interpolation=cv2.INTER_LINEAR)
        full[grey <= cfg.black_level] = np.nan
        return full

    def _falloff_map(self, h: int, w: int) -> np.ndarray:
        """``cosⁿ`` of each working pixel's angle to the optical axis, (h, w) float32."""
        cached = self._falloff.get((h, w))
        if cached is not None:
            return cached
        # Focal length (pixels) that gives the nominal diagonal field of view.
        focal = 0.5 * math.hypot(h, w) / math.tan(math.radians(self.config.fov_deg) / 2)
        v, u = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((u - (w - 1) / 2) ** 2 + (v - (h - 1) / 2) ** 2) / focal**2
        cos_angle = 1.0 / np.sqrt(1.0 + r2)
        falloff = (cos_angle ** self.config.falloff_power).astype(np.float32)
        self._falloff[(h, w)] = falloff
        return falloff


_KERNEL3 = np.ones((3, 3), np.uint8)
