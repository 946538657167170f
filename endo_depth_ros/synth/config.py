"""Parameters of a synthetic endoscope flight (scene, camera, light, sensor)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
import math
from typing import Any

import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import ConfigError

#: First stamp of a sequence (2023-11-14T22:13:20Z): a plausible wall-clock time, not 0.
DEFAULT_START_NS = 1_700_000_000_000_000_000


#: Largest image side the renderer accepts (4K endoscopes are 3840 wide).
MAX_SIDE = 4096

@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a rendered sequence; equal configs give equal frames.

    Lengths are in millimetres (the unit people think in for endoscopy) except
    ``max_depth_m``; angles in degrees; image quantities in [0, 1] units of full scale.

    Attributes:
        width, height: image size (pixels).
        frames: number of frames.
        seed: seeds the scene (tube shape, texture, trajectory) and the sensor noise.
        fps: frame rate used for the stamps (Hz).
        speed_mm: advance of the camera along the lumen per frame (mm).
        instrument: render a surgical instrument (shaft and jaw, segmentation label 1).
        fov_mask: black out pixels outside a circular field of view (depth NaN there).
        fov_deg: diagonal field of view of the pinhole camera (degrees).
        fov_mask_radius: radius of the circular mask as a fraction of the half-diagonal.
        radius_mm: (min, max) lumen radius; equal values give a constant radius.
        fold_amplitude: height of the haustral folds as a fraction of the radius (0: none).
        fold_spacing_mm: distance between consecutive folds along the lumen.
        fold_width_mm: width (Gaussian sigma) of one fold.
        lobes: three-lobed ("taeniae") modulation of the cross-section, fraction of radius.
        bend_mm: amplitude of the centreline's lateral excursions (0: straight tube).
        wobble: lateral offset of the camera from the centreline, fraction of the radius.
        tilt_deg: amplitude of the camera's yaw/pitch around the look-ahead direction.
        roll_deg: amplitude of the camera's roll about its optical axis.
        texture_scale: size multiplier of the vessel pattern (>1: larger vessels).
        vessel_density: how many vessels per texture tile, relative to the default.
        specular: strength of the specular (wet tissue) highlights.
        exposure: light power multiplier (1: walls at ~2 cm are well exposed).
        vignetting: strength of the radial fall-off of the image brightness (0: none).
        noise: standard deviation of the sensor noise at mid grey (fraction of full scale).
        max_depth_m: rays that hit nothing closer are invalid (depth NaN, black).
        start_ns: stamp of frame 0 (int nanoseconds).
    """

    width: int = 320
    height: int = 256
    frames: int = 60
    seed: int = 0
    fps: float = 30.0
    speed_mm: float = 1.0
    instrument: bool = False
    fov_mask: bool = False
    fov_deg: float = 100.0
    fov_mask_radius: float = 0.82
    radius_mm: tuple[float, float] = field(default=(16.0, 26.0))
    fold_amplitude: float = 0.3
    fold_spacing_mm: float = 24.0
    fold_width_mm: float = 3.2
    lobes: float = 0.06
    bend_mm: float = 12.0
    wobble: float = 0.2
    tilt_deg: float = 5.0
    roll_deg: float = 25.0
    texture_scale: float = 1.0
    vessel_density: float = 1.0
    specular: float = 0.7
    exposure: float = 1.0
    vignetting: float = 0.6
    noise: float = 0.012
    max_depth_m: float = 0.3
    start_ns: int = DEFAULT_START_NS

    def __post_init__(self) -> None:
        _positive_int(self, 'width', 'height', 'frames')
        if max(self.width, self.height) > MAX_SIDE:
            # The renderer holds ~150 bytes per pixel: 4096x4096 is ~2.5 GB already.
            raise ConfigError(f'Image size {self.width}x{self.height} exceeds the renderer\'s '
                              f'{MAX_SIDE} pixels per side.')
        _positive(self, 'fps', 'fold_spacing_mm', 'fold_width_mm', 'texture_scale',
                  'max_depth_m', 'fov_mask_radius')
        _non_negative(self, 'speed_mm', 'fold_amplitude', 'lobes', 'bend_mm', 'wobble',
                      'tilt_deg', 'roll_deg', 'vessel_density', 'specular', 'exposure',
                      'vignetting', 'noise')
        if not isinstance(self.seed, int | np.integer) or isinstance(self.seed, bool):
            raise ConfigError(f'seed must be an integer, got {self.seed!r}.')
        if not 10.0 <= self.fov_deg <= 170.0:
            raise ConfigError(f'fov_deg must be in [10, 170] degrees, got {self.fov_deg}.')
        radius = tuple(self.radius_mm)
        if (len(radius) != 2 or not all(math.isfinite(r) for r in radius)
                or not 0 < radius[0] <= radius[1]):
            raise ConfigError(
                f'radius_mm must be (min, max) with 0 < min <= max, got {self.radius_mm!r}.')
        if self.fold_amplitude >= 0.8:
            raise ConfigError(
                f'fold_amplitude must be below 0.8 (fraction of the radius), '
                f'got {self.fold_amplitude}.')
        if self.lobes >= 0.5:
            raise ConfigError(f'lobes must be below 0.5, got {self.lobes}.')
        if self.wobble >= 0.5:
            raise ConfigError(
                f'wobble must be below 0.5 (the camera must stay inside the lumen), '
                f'got {self.wobble}.')
        if isinstance(self.start_ns, bool) or not isinstance(self.start_ns, int | np.integer):
            raise ConfigError(f'start_ns must be an integer, got {self.start_ns!r}.')

    @classmethod
    def straight_tube(cls, radius_mm: float = 20.0, **overrides: Any) -> SynthConfig:
        """A straight tube of constant radius, camera on its axis looking along it.

        The analytic reference for tests: the depth of pixel (u, v) is
        ``r / hypot((u - cx) / fx, (v - cy) / fy)`` (while that is below ``max_depth_m``).
        """
        values: dict[str, Any] = {
            'radius_mm': (radius_mm, radius_mm), 'fold_amplitude': 0.0, 'lobes': 0.0,
            'bend_mm': 0.0, 'wobble': 0.0, 'tilt_deg': 0.0, 'roll_deg': 0.0,
        }
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> SynthConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @property
    def intrinsics(self) -> Intrinsics:
        """Pinhole camera of this config: square pixels, principal point at the centre."""
        half_diagonal = 0.5 * math.hypot(self.width, self.height)
        f = half_diagonal / math.tan(math.radians(self.fov_deg) / 2.0)
        return Intrinsics(width=self.width, height=self.height, fx=f, fy=f,
                          cx=(self.width - 1) / 2.0, cy=(self.height - 1) / 2.0)

    def stamp_ns(self, index: int) -> int:
        """Stamp of frame ``index`` (int nanoseconds) at ``fps``."""
        return int(self.start_ns) + round(index * 1e9 / self.fps)


def _positive_int(config: SynthConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ConfigError(f'{name} must be a positive integer, got {value!r}.')


def _positive(config: SynthConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ConfigError(f'{name} must be a positive number, got {value!r}.')


def _non_negative(config: SynthConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ConfigError(f'{name} must be a non-negative number, got {value!r}.')
