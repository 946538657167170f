"""Camera nuisances of real endoscopes, applied to the rendered radiance and image.

Each one is a failure mode seen on real video that a depth pipeline must survive:

- **auto-exposure / gain**: brightness *steps* (the exposure loop switching gain) and
  slow *ramps*; a photometric depth prior reads brightness as distance, so both turn into
  changes of the predicted scale;
- **white-balance drift**: slow independent gain changes of the three channels;
- **motion blur**: a zoom blur about the image centre (forward motion) of varying length;
- **specular flashes**: occasional frames with large saturated highlights (wet tissue
  turning into the light);
- **compression**: JPEG encoding as by a video capture card.

All effects are deterministic per (seed, frame index) and leave the ground truth (depth,
pose, segmentation) untouched. ``CameraEffects()`` applies none of them;
``CameraEffects.endoscope()`` is a realistic mix.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
import math

import cv2
import numpy as np

from endo_depth_ros.errors import ConfigError

#: Sub-images averaged for the motion blur (more: smoother, slower).
BLUR_SAMPLES = 5


@dataclass(frozen=True)
class CameraEffects:
    """Nuisance settings (all off by default).

    Attributes:
        gain_step: size of the auto-exposure gain steps (relative; 0.3: the gain jumps
            by up to x1.3 or /1.3 at each step; 0: none).
        gain_step_every: mean number of frames between two gain steps.
        gain_ramp: amplitude of a slow sinusoidal gain ramp (relative; 0.4: gain
            between x1/1.4 and x1.4).
        gain_ramp_period: period of the ramp (frames).
        white_balance_drift: amplitude of the slow per-channel gain drift (relative).
        white_balance_period: period of the white-balance drift (frames).
        motion_blur: zoom blur over the exposure as a fraction of the image size (0.02:
            edge pixels smeared over 2 % of the half-diagonal, varying per frame).
        specular_flash_rate: probability that a frame has a specular flash.
        jpeg_quality: JPEG quality 1..100 of the compression (0: none).
    """

    gain_step: float = 0.0
    gain_step_every: float = 40.0
    gain_ramp: float = 0.0
    gain_ramp_period: float = 150.0
    white_balance_drift: float = 0.0
    white_balance_period: float = 200.0
    motion_blur: float = 0.0
    specular_flash_rate: float = 0.0
    jpeg_quality: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value) or value < 0):
                raise ConfigError(f'{f.name} must be a non-negative number, got {value!r}.')
        for name in ('gain_step_every', 'gain_ramp_period', 'white_balance_period'):
            if getattr(self, name) < 1:
                raise ConfigError(f'{name} must be at least 1 frame, got {getattr(self, name)}.')
        if self.specular_flash_rate > 1:
            raise ConfigError(
                f'specular_flash_rate is a probability, got {self.specular_flash_rate}.')
        if not isinstance(self.jpeg_quality, int) or self.jpeg_quality > 100:
            raise ConfigError(f'jpeg_quality must be an integer in 0..100, got '
                              f'{self.jpeg_quality!r}.')
        if self.gain_ramp >= 1 or self.white_balance_drift >= 1:
            raise ConfigError('gain_ramp and white_balance_drift must be below 1.')

    @classmethod
    def endoscope(cls) -> CameraEffects:
        """A realistic mix: gain steps and ramps, white-balance drift, mild motion blur,
        rare specular flashes and JPEG compression at quality 85."""
        return cls(gain_step=0.25, gain_ramp=0.3, white_balance_drift=0.08,
                   motion_blur=0.015, specular_flash_rate=0.03, jpeg_quality=85)

    @property
    def active(self) -> bool:
        """Whether any effect is on."""
        return bool(self.gain_step or self.gain_ramp or self.white_balance_drift
                    or self.motion_blur or self.specular_flash_rate or self.jpeg_quality)

    def channel_gains(self, index: float, seed: int) -> np.ndarray:
        """(3,) float32 linear gain of each colour channel at frame ``index``."""
        gain = 1.0
        if self.gain_ramp:
            # Log-symmetric: the ramp divides as much as it multiplies.
            gain *= (1.0 + self.gain_ramp) ** math.sin(
                2 * math.pi * index / self.gain_ramp_period + _phase(seed, 1))
        if self.gain_step:
            gain *= self._step_gain(math.floor(index), seed)
        gains = np.full(3, gain)
        if self.white_balance_drift:
            for c in range(3):
                gains[c] *= (1.0 + self.white_balance_drift) ** math.sin(
                    2 * math.pi * index / self.white_balance_period + _phase(seed, 10 + c))
        return gains.astype(np.float32)

    def _step_gain(self, index: int, seed: int) -> float:
        """Piecewise-constant gain: new levels at random frames (exponential spacing of
        mean ``gain_step_every``), each level log-uniform within x(1 +- gain_step); the
        first level is 1."""
        rng = np.random.default_rng([int(seed), 0xA5])
        frame, level = 0.0, 1.0
        while True:
            frame += max(1.0, rng.exponential(self.gain_step_every))
            new_level = float((1.0 + self.gain_step) ** rng.uniform(-1.0, 1.0))
            if frame > index:
                return level
            level = new_level

    def apply_radiance(self, radiance: np.ndarray, index: float, seed: int) -> np.ndarray:
        """Flashes, motion blur and sensor gains on (H, W, 3) float32 linear radiance."""
        out = radiance
        rng = np.random.default_rng([int(seed), 0xF1, round(index * 1000)])
        if self.specular_flash_rate and rng.random() < self.specular_flash_rate:
            out = out + _highlights(out.shape[:2], rng)[..., None]
        if self.motion_blur:
            out = _zoom_blur(out, self.motion_blur * (0.3 + 0.7 * rng.random()))
        if self.gain_ramp or self.gain_step or self.white_balance_drift:
            out = out * self.channel_gains(index, seed)
        return out.astype(np.float32, copy=False)

    def apply_image(self, rgb: np.ndarray) -> np.ndarray:
        """JPEG round trip of an (H, W, 3) uint8 RGB image (unchanged when off)."""
        if not self.jpeg_quality:
            return rgb
        ok, data = cv2.imencode('.jpg', rgb[..., ::-1],
                                [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg_quality)])
        if not ok:
            raise RuntimeError('OpenCV could not JPEG-encode a rendered frame.')
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if decoded is None:
            raise RuntimeError('OpenCV could not decode its own JPEG.')
        return np.ascontiguousarray(decoded[..., ::-1])


def _phase(seed: int, salt: int) -> float:
    """A fixed random phase per (seed, salt) in [0, 2 pi)."""
    return float(np.random.default_rng([int(seed), 0xB7, salt]).uniform(0, 2 * math.pi))


def _highlights(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32 radiance of 1..4 large saturated specular blobs."""
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.zeros(shape, np.float32)
    diagonal = math.hypot(width, height)
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
        sx, sy = rng.uniform(0.02, 0.08, 2) * diagonal
        blob = np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
        out += np.float32(rng.uniform(3.0, 8.0)) * blob.astype(np.float32)
    return out


def _zoom_blur(image: np.ndarray, strength: float) -> np.ndarray:
    """Average of ``BLUR_SAMPLES`` copies scaled about the centre by 1 .. 1 + strength."""
    height, width = image.shape[:2]
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    acc = np.zeros_like(image, dtype=np.float32)
    for k in range(BLUR_SAMPLES):
        scale = 1.0 + strength * k / max(BLUR_SAMPLES - 1, 1)
        M = cv2.getRotationMatrix2D(centre, 0.0, scale)
        acc += cv2.warpAffine(image, M, (width, height), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)
    return acc / np.float32(BLUR_SAMPLES)
