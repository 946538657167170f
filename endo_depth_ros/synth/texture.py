"""Mucosa texture: pink-red albedo with blood vessels and a bump map, tileable.

The texture lives in the lumen's (s, theta) coordinates: columns run along the lumen
(``TEXTURE_PERIOD_M`` per tile), rows around it (2 pi per tile). Both axes wrap, so a
lookup never hits an edge.
"""

from __future__ import annotations

from dataclasses import dataclass
import math

import cv2
import numpy as np

#: Length of one texture tile along the lumen (metres); divides 1 m exactly.
TEXTURE_PERIOD_M = 0.2
_ROWS, _COLS = 512, 1024
_MAP_COLS = 1024

# Albedo in linear RGB: healthy mucosa (pink-orange), redder patches, vessel colours.
_MUCOSA = np.array([0.82, 0.24, 0.17], np.float32)
_MUCOSA_RED = np.array([0.75, 0.13, 0.09], np.float32)
_MUCOSA_PALE = np.array([0.86, 0.38, 0.30], np.float32)
_VESSEL_ARTERY = np.array([0.36, 0.02, 0.03], np.float32)
_VESSEL_VEIN = np.array([0.20, 0.04, 0.10], np.float32)


@dataclass(frozen=True)
class TissueTexture:
    """Albedo and bump slopes of the lumen wall.

    Attributes:
        albedo: (rows, cols, 3) float32 linear RGB reflectance in [0, 1].
        bump: (rows, cols, 2) float32 slopes of the surface relief along s and theta
            (dimensionless; tilts the shading normal).
    """

    albedo: np.ndarray
    bump: np.ndarray

    def sample(self, s: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear lookup at lumen coordinates.

        Args:
            s: (N,) position along the lumen, metres (any range; wraps).
            theta: (N,) angle around the centreline, radians (any range; wraps).

        Returns:
            ``(albedo (N, 3), bump (N, 2))`` float32.
        """
        rows, cols = self.albedo.shape[:2]
        map_x = (s * np.float32(cols / TEXTURE_PERIOD_M)).astype(np.float32) % np.float32(cols)
        map_y = (theta * np.float32(rows / (2 * math.pi))).astype(np.float32) % np.float32(rows)
        # remap wants 2-D maps shorter than 32767 on each side: lay the points out in rows.
        n = map_x.size
        padded = -(-n // _MAP_COLS) * _MAP_COLS
        map_x = np.pad(map_x.ravel(), (0, padded - n)).reshape(-1, _MAP_COLS)
        map_y = np.pad(map_y.ravel(), (0, padded - n)).reshape(-1, _MAP_COLS)
        albedo = cv2.remap(self.albedo, map_x, map_y, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_WRAP)
        bump = cv2.remap(self.bump, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        return albedo.reshape(-1, 3)[:n], bump.reshape(-1, 2)[:n]


def make_texture(seed: int, scale: float = 1.0, vessel_density: float = 1.0) -> TissueTexture:
    """Generate the mucosa texture of a scene (deterministic for ``seed``).

    Args:
        seed: random seed.
        scale: vessel width and length multiplier.
        vessel_density: number of vessels relative to the default (0: none).
    """
    rng = np.random.default_rng([int(seed), 0x7E])
    # Colour patches: low-frequency noise blends between paler and redder mucosa.
    patches = _periodic_noise(rng, 40.0)
    redness = np.clip(0.5 + 1.8 * patches, 0.0, 1.0)[..., None]
    pale = np.clip(1.6 * _periodic_noise(rng, 18.0), 0.0, 1.0)[..., None]
    albedo = _MUCOSA * (1 - redness) + _MUCOSA_RED * redness
    albedo = albedo * (1 - 0.6 * pale) + _MUCOSA_PALE * 0.6 * pale
    # Fine granular mucosa (crypt pattern) and relief.
    grain = _periodic_noise(rng, 1.3)
    albedo *= (1.0 + 0.5 * grain)[..., None]
    relief = 0.6 * _periodic_noise(rng, 2.5) + 0.4 * _periodic_noise(rng, 7.0)

    count = round(28 * vessel_density)
    for colour, fraction, opacity in ((_VESSEL_VEIN, 0.45, 0.5), (_VESSEL_ARTERY, 0.55, 0.75)):
        mask = np.zeros((_ROWS, _COLS), np.float32)
        for _ in range(max(0, round(count * fraction))):
            _draw_vessel_tree(mask, rng, scale)
        mask = _periodic_blur(mask, 0.7 * scale)
        mask = np.clip(mask, 0.0, 1.0)[..., None] * opacity
        albedo = albedo * (1 - mask) + colour * mask
        relief += 0.15 * mask[..., 0]
    albedo = np.clip(albedo, 0.0, 1.0).astype(np.float32)
    # Slopes in texels: relief differences between wrapped neighbours.
    slope_s = 0.5 * (np.roll(relief, -1, axis=1) - np.roll(relief, 1, axis=1))
    slope_t = 0.5 * (np.roll(relief, -1, axis=0) - np.roll(relief, 1, axis=0))
    bump = np.stack([slope_s, slope_t], axis=-1).astype(np.float32) * np.float32(2.5)
    return TissueTexture(albedo=albedo, bump=bump)


def _periodic_noise(rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Tileable Gaussian-filtered white noise with unit-ish spread (std ~0.25)."""
    white = rng.standard_normal((_ROWS, _COLS)).astype(np.float32)
    smooth = _periodic_blur(white, sigma)
    return (smooth / (4.0 * float(smooth.std()) + 1e-12)).astype(np.float32)


def _periodic_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with wrap-around borders (in the Fourier domain)."""
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.rfftfreq(image.shape[1])[None, :]
    kernel = np.exp(-2.0 * (math.pi * sigma) ** 2 * (fx * fx + fy * fy))
    blurred = np.fft.irfft2(np.fft.rfft2(image) * kernel, s=image.shape)
    return blurred.astype(np.float32)


def _draw_vessel_tree(mask: np.ndarray, rng: np.random.Generator, scale: float,
                      depth: int = 0) -> None:
    """A meandering vessel with a few tapering branches, drawn with wrap-around."""
    rows, cols = mask.shape
    width = rng.uniform(1.0, 3.2) * scale / (1 + depth)
    x, y = rng.uniform(0, cols), rng.uniform(0, rows)
    angle = rng.uniform(0, 2 * math.pi)
    steps = int(rng.uniform(25, 70) * scale / (1 + 0.5 * depth))
    step = 6.0 * scale
    points = [(x, y)]
    for i in range(steps):
        angle += rng.normal(0.0, 0.28)
        x += step * math.cos(angle)
        y += step * math.sin(angle)
        points.append((x, y))
        if depth < 2 and i > 3 and rng.uniform() < 0.05:
            _draw_branch(mask, rng, scale, (x, y), angle, depth + 1)
    _polyline_wrapped(mask, np.array(points), max(1, round(width)), 1.0)


def _draw_branch(mask: np.ndarray, rng: np.random.Generator, scale: float,
                 start: tuple[float, float], parent_angle: float, depth: int) -> None:
    x, y = start
    angle = parent_angle + rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.1)
    width = rng.uniform(0.8, 2.0) * scale / depth
    points = [(x, y)]
    for _ in range(int(rng.uniform(8, 30) * scale)):
        angle += rng.normal(0.0, 0.35)
        x += 5.0 * scale * math.cos(angle)
        y += 5.0 * scale * math.sin(angle)
        points.append((x, y))
    _polyline_wrapped(mask, np.array(points), max(1, round(width)), 0.85)


def _polyline_wrapped(mask: np.ndarray, points: np.ndarray, thickness: int,
                      value: float) -> None:
    rows, cols = mask.shape
    # Draw at the tile position and its wrapped copies so the tile stays seamless.
    base = points - np.floor(points[0] / [cols, rows]) * [cols, rows]
    shift = 4  # fixed-point bits: sub-texel accurate anti-aliased lines
    for ox in (-cols, 0, cols):
        for oy in (-rows, 0, rows):
            pts = np.rint((base + np.array([ox, oy])) * (1 << shift)).astype(np.int32)
            cv2.polylines(mask, [pts.reshape(-1, 1, 2)], False, value, thickness,
                          cv2.LINE_AA, shift)
