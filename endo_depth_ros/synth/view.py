"""What the endoscope's optics and video codec do around a rendered frame.

Real endoscope video shows the scene through a round window that is rarely centred
exactly and whose edge is soft (the relay optics blur it over a few pixels); around it
the "black" surround carries sensor noise and a small black level, and the whole frame
goes through a lossy codec. :func:`apply_endoscope_view` adds exactly these to a rendered
frame so that the field-of-view detection (``endo_depth_ros.masks``) is tested on
something like real video; :func:`endoscope_view_mask` is the true view (where the soft
edge passes half transmission).
"""

from __future__ import annotations

import cv2
import numpy as np

from endo_depth_ros.synth.config import SynthConfig

#: Mean grey level of the surround (the sensor's black level after the video pipeline).
_BLACK_LEVEL = 6.0


def _distance_to_centre(config: SynthConfig, width: int, height: int) -> tuple[np.ndarray, float]:
    """(H, W) float32 pixel distance to the view's centre, and the view's radius (pixels)."""
    cx = (0.5 + config.view_offset[0]) * width - 0.5
    cy = (0.5 + config.view_offset[1]) * height - 0.5
    u = np.arange(width, dtype=np.float32) - np.float32(cx)
    v = np.arange(height, dtype=np.float32) - np.float32(cy)
    return np.sqrt(u[None, :] ** 2 + v[:, None] ** 2), config.view_radius * min(width, height)


def endoscope_view_transmission(config: SynthConfig, width: int, height: int) -> np.ndarray:
    """(H, W) float32 in [0, 1]: 1 inside the view, 0 outside, a smoothstep across the edge."""
    distance, radius = _distance_to_centre(config, width, height)
    half = max(config.view_edge_px, 1e-3)
    t = np.clip((radius + half - distance) / (2.0 * half), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def endoscope_view_mask(config: SynthConfig, width: int, height: int) -> np.ndarray:
    """(H, W) bool true view: pixels whose centre is within the view's radius."""
    distance, radius = _distance_to_centre(config, width, height)
    return distance <= radius


def apply_endoscope_view(rgb: np.ndarray, config: SynthConfig, index: float) -> np.ndarray:
    """The frame seen through the endoscope: soft circular view, noisy surround, JPEG.

    Args:
        rgb: (H, W, 3) uint8 rendered frame.
        config: ``view_*``, ``surround_noise`` and ``jpeg_quality`` are used; the noise
            is seeded by ``config.seed`` and ``index`` (frames are reproducible).
        index: frame number.

    Returns:
        (H, W, 3) uint8.
    """
    height, width = rgb.shape[:2]
    image = rgb.astype(np.float32)
    if config.view_circle:
        weight = endoscope_view_transmission(config, width, height)[..., None]
        rng = np.random.default_rng([int(config.seed), 0x71E3, round(index * 1000)])
        surround = rng.normal(_BLACK_LEVEL, config.surround_noise, (height, width, 1))
        # A little colour noise too: the codec's chroma is noisier than its luma.
        surround = surround + rng.normal(0.0, 0.5 * config.surround_noise, (height, width, 3))
        image = image * weight + surround.astype(np.float32) * (1.0 - weight)
    out = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    if config.jpeg_quality > 0:
        ok, data = cv2.imencode('.jpg', cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, int(config.jpeg_quality)])
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            out = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return out
