"""Rendering: rays -> exact depth, segmentation and an endoscope-like RGB image."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import cv2
import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError
from endo_depth_ros.synth.config import SynthConfig
from endo_depth_ros.synth.instrument import (
    JAW,
    InstrumentHits,
    image_bounds,
    instrument_capsules,
    intersect_instrument,
)
from endo_depth_ros.synth.lumen import CHUNK, Lumen, rotate_rays
from endo_depth_ros.synth.texture import TissueTexture, make_texture
from endo_depth_ros.synth.view import apply_endoscope_view

#: Segmentation labels.
TISSUE, INSTRUMENT = 0, 1
#: Distance at which a surface facing the light is exposed at ``exposure`` (metres).
_REFERENCE_DISTANCE_M = 0.02
#: Radiance of a white wall facing the light at the reference distance (before the tone curve).
_EXPOSURE = 2.4


@dataclass(frozen=True, eq=False)
class SynthFrame:
    """One rendered frame with its exact ground truth.

    Attributes:
        index: frame number, from 0.
        stamp_ns: timestamp, int nanoseconds.
        rgb: (H, W, 3) uint8 image.
        depth: (H, W) float32 z-depth in metres (REP-118), NaN where nothing is hit
            (beyond ``max_depth_m`` or outside the circular field of view).
        seg: (H, W) uint8 labels, 0 tissue (and background), 1 instrument.
        pose: (4, 4) float64 ``T_world_camera`` of the optical frame.
        intrinsics: the pinhole camera.
        right: the right camera's view of a rectified pair (``stereo_baseline_mm``).
        baseline_m: the pair's baseline (metres; 0 without a right camera).
        kinematic_pose: (4, 4) ``T_base_camera`` as the robot reports it at ``stamp_ns``
            (``kinematics_noise_m`` >= 0; see ``synth.stereo``), or None.
    """

    index: int
    stamp_ns: int
    rgb: np.ndarray
    depth: np.ndarray
    seg: np.ndarray
    pose: np.ndarray
    intrinsics: Intrinsics
    right: RenderedView | None = None
    baseline_m: float = 0.0
    kinematic_pose: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class RenderedView:
    """Output of :meth:`Scene.render` for any camera (not only the sequence's)."""

    rgb: np.ndarray
    depth: np.ndarray
    seg: np.ndarray


class Scene:
    """A lumen, its texture and the instrument; renders any view at any time.

    ``render_sequence`` is the usual entry point; use a Scene directly to render the
    same world from other cameras (e.g. a high-resolution crop in tests).
    """

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.lumen = Lumen(config)
        self._texture: TissueTexture | None = None
        self._ray_cache: dict[Intrinsics, np.ndarray] = {}
        self._vignette_cache: dict[Intrinsics, np.ndarray] = {}
        self._noise_bank: dict[tuple[int, ...], np.ndarray] = {}

    @property
    def texture(self) -> TissueTexture:
        """The mucosa texture (built on first use: depth-only renders never need it)."""
        if self._texture is None:
            self._texture = make_texture(self.config.seed, self.config.texture_scale,
                                         self.config.vessel_density)
        return self._texture

    def camera_pose(self, index: int) -> np.ndarray:
        """``T_world_camera`` (4x4 float64) of frame ``index``."""
        return self.lumen.camera_pose(index)

    def frame(self, index: int) -> SynthFrame:
        """Render frame ``index`` of the sequence."""
        cfg = self.config
        pose = self.camera_pose(index)
        intrinsics = cfg.intrinsics
        view = self.render(pose, index, intrinsics)
        from endo_depth_ros.synth import stereo  # the stereo module builds on this one

        baseline = cfg.stereo_baseline_mm * 1e-3
        right = (self.render(stereo.right_pose(pose, baseline), index, intrinsics,
                             eye_offset_m=baseline) if baseline > 0 else None)
        kinematic = (stereo.kinematic_pose(self, index) if cfg.kinematics_noise_m >= 0
                     else None)
        rgb = view.rgb
        if cfg.view_circle or cfg.jpeg_quality:
            rgb = apply_endoscope_view(rgb, cfg, index)
        return SynthFrame(index=index, stamp_ns=cfg.stamp_ns(index), rgb=rgb,
                          depth=view.depth, seg=view.seg, pose=pose, intrinsics=intrinsics,
                          right=right, baseline_m=baseline, kinematic_pose=kinematic)

    def render(self, pose: np.ndarray, index: float = 0, intrinsics: Intrinsics | None = None,
               *, shade: bool = True, eye_offset_m: float = 0.0) -> RenderedView:
        """Render the scene from ``pose`` at the time of frame ``index``.

        Args:
            pose: ``T_world_camera`` (4x4).
            index: frame number (fractional allowed): sets the instrument's motion and
                the sensor noise.
            intrinsics: camera (default: the config's); distortion is ignored.
            shade: False skips the image (``rgb`` is all zeros): depth and seg only.
            eye_offset_m: this camera sits that far along the sequence camera's x axis
                (a stereo pair's right eye): the instrument, held in the sequence
                camera's frame, is shifted and the sensor noise is drawn independently.
        """
        cfg = self.config
        intrinsics = cfg.intrinsics if intrinsics is None else intrinsics
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise BadInputError(f'pose must be a finite 4x4 matrix, got {pose.shape}.', 'pose')
        height, width = intrinsics.height, intrinsics.width
        rays = self.rays(intrinsics)
        mask = self._fov_mask(intrinsics) if cfg.fov_mask else None
        depth = self.lumen.cast_grid(pose, rays, mask)
        seg = np.zeros((height, width), np.uint8)
        instrument: InstrumentHits | None = None
        if cfg.instrument:
            instrument = self._add_instrument(rays, depth, seg, mask, index, eye_offset_m)
        if not shade:
            return RenderedView(np.zeros((height, width, 3), np.uint8), depth, seg)
        radiance = np.zeros((height, width, 3), np.float32)
        tissue = np.isfinite(depth) & (seg == TISSUE)
        if tissue.any():
            radiance[tissue] = self._shade_tissue(pose, rays[tissue], depth[tissue])
        if instrument is not None:
            tool = seg == INSTRUMENT
            radiance[tool] = _shade_instrument(rays[tool], depth[tool], instrument.normal,
                                               instrument.material, cfg)
        rgb = self._sensor(radiance, intrinsics, index + (0.5 if eye_offset_m else 0.0), mask)
        return RenderedView(rgb, depth, seg)

    def _add_instrument(self, rays: np.ndarray, depth: np.ndarray, seg: np.ndarray,
                        mask: np.ndarray | None, index: float,
                        eye_offset_m: float = 0.0) -> InstrumentHits:
        """Cast the instrument; where it is in front, write its depth and label in place.

        Returns:
            The hits of the instrument pixels (``seg == INSTRUMENT``, in row-major order).
        """
        height, width = depth.shape
        capsules = instrument_capsules(index / self.config.fps, self.config.seed)
        if eye_offset_m:
            eye = np.array([eye_offset_m, 0.0, 0.0])
            capsules = [replace(c, a=c.a - eye, b=c.b - eye) for c in capsules]
        select = np.zeros((height, width), bool)
        box = image_bounds(capsules, float(np.hypot(rays[..., 0], rays[..., 1]).max()))
        if box is not None:
            # Only rays inside the instrument's bounding box on the image plane.
            x0, x1, y0, y1 = box
            columns = (rays[0, :, 0] >= x0) & (rays[0, :, 0] <= x1)
            rows = (rays[:, 0, 1] >= y0) & (rays[:, 0, 1] <= y1)
            select = rows[:, None] & columns[None, :]
            if mask is not None:
                select &= mask
        hits = intersect_instrument(rays[select], capsules)
        behind = depth[select]
        front = np.isfinite(hits.depth) & ~(hits.depth > behind)
        behind[front] = hits.depth[front]
        depth[select] = behind
        labels = np.zeros(hits.depth.shape, np.uint8)
        labels[front] = INSTRUMENT
        seg[select] = labels
        return InstrumentHits(depth=hits.depth[front], normal=hits.normal[front],
                              material=hits.material[front])

    def rays(self, intrinsics: Intrinsics) -> np.ndarray:
        """(H, W, 3) float32 camera rays ``((u - cx) / fx, (v - cy) / fy, 1)`` (read-only)."""
        rays = self._ray_cache.get(intrinsics)
        if rays is None:
            u = (np.arange(intrinsics.width) - intrinsics.cx) / intrinsics.fx
            v = (np.arange(intrinsics.height) - intrinsics.cy) / intrinsics.fy
            uu, vv = np.meshgrid(u, v)
            rays = np.stack([uu, vv, np.ones_like(uu)], axis=-1).astype(np.float32)
            rays.flags.writeable = False
            self._ray_cache = {intrinsics: rays}
        return rays

    def _fov_mask(self, intrinsics: Intrinsics) -> np.ndarray:
        """Circle centred on the principal point (radius relative to the half-diagonal)."""
        radius = self.config.fov_mask_radius * 0.5 * np.hypot(intrinsics.width, intrinsics.height)
        u = np.arange(intrinsics.width) - intrinsics.cx
        v = np.arange(intrinsics.height) - intrinsics.cy
        return (u[None, :] ** 2 + v[:, None] ** 2) <= radius ** 2

    def _shade_tissue(self, pose: np.ndarray, rays: np.ndarray, depth: np.ndarray) -> np.ndarray:
        out = np.empty((len(depth), 3), np.float32)
        for i in range(0, len(depth), CHUNK):
            part = slice(i, i + CHUNK)
            out[part] = self._shade_tissue_chunk(pose, rays[part], depth[part])
        return out

    def _shade_tissue_chunk(self, pose: np.ndarray, rays: np.ndarray,
                            depth: np.ndarray) -> np.ndarray:
        cfg = self.config
        surface = self.lumen.surface(pose, depth, rays)
        albedo, bump = self.texture.sample(surface.s, surface.theta)
        view, length = _view_vectors(rotate_rays(rays, pose[:3, :3]).T)
        # Tilt the normal by the relief slopes along s (world z) and around theta; the
        # glossy mucus layer reacts more to the fine relief than the diffuse tissue.
        relief = np.stack([-np.sin(surface.theta) * bump[:, 1],
                           np.cos(surface.theta) * bump[:, 1], bump[:, 0]], axis=1)
        cos_diffuse = _cosine(surface.normal + relief, view)
        cos_gloss = _cosine(surface.normal + np.float32(2.5) * relief, view)
        return _shade(cos_diffuse, cos_gloss, depth * length, albedo, cfg.specular, 40.0, cfg)

    def _sensor(self, radiance: np.ndarray, intrinsics: Intrinsics, index: float,
                mask: np.ndarray | None) -> np.ndarray:
        """Vignetting, tone curve, blur, noise and 8-bit quantisation."""
        cfg = self.config
        radiance *= self._vignetting(intrinsics)[..., None]
        # Film-like shoulder: close tissue saturates softly as in real endoscopes.
        image = np.float32(1.0) - np.exp(-radiance)
        image = np.power(image, np.float32(1 / 2.2), dtype=np.float32)  # sRGB-like gamma
        image = cv2.GaussianBlur(image, (3, 3), 0.6)
        if cfg.noise > 0:
            image += self._noise(image.shape, index) * (
                np.float32(cfg.noise) * (np.float32(0.4) + np.sqrt(image)))
        rgb = np.clip(image * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
        if mask is not None:
            rgb[~mask] = 0
        return rgb

    def _vignetting(self, intrinsics: Intrinsics) -> np.ndarray:
        """(H, W) float32 radial fall-off ``cos(angle to the axis) ** (4 * vignetting)``."""
        cached = self._vignette_cache.get(intrinsics)
        if cached is None:
            rays = self.rays(intrinsics)
            cos_axis = 1.0 / np.sqrt(rays[..., 0] ** 2 + rays[..., 1] ** 2 + 1.0)
            cached = (cos_axis ** (4.0 * self.config.vignetting)).astype(np.float32)
            self._vignette_cache = {intrinsics: cached}
        return cached

    def _noise(self, shape: tuple[int, ...], index: float) -> np.ndarray:
        """Unit Gaussian noise for frame ``index``: a window of a bank twice the image size
        at an offset drawn from (seed, index); much cheaper than fresh noise per frame."""
        bank = self._noise_bank.get(shape)
        if bank is None:
            rng = np.random.default_rng([int(self.config.seed), 0x5E])
            bank = rng.standard_normal((2 * shape[0], 2 * shape[1], *shape[2:]),
                                       dtype=np.float32)
            self._noise_bank = {shape: bank}
        rng = np.random.default_rng([int(self.config.seed), 0x5F, round(index * 1000)])
        y, x = int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1]))
        flip = rng.integers(0, 2, size=2)
        window = bank[y:y + shape[0], x:x + shape[1]]
        return window[::-1 if flip[0] else 1, ::-1 if flip[1] else 1]


def _view_vectors(rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors from the surface to the camera and the length of each z = 1 ray."""
    length = np.sqrt(np.einsum('ij,ij->i', rays, rays))
    return -rays / length[:, None], length


def _cosine(normal: np.ndarray, view: np.ndarray) -> np.ndarray:
    """|cos| of the angle between (unnormalised) normals and unit view vectors."""
    norm = np.sqrt(np.einsum('ij,ij->i', normal, normal))
    return np.minimum(np.abs(np.einsum('ij,ij->i', normal, view)) / norm, np.float32(1.0))


def _shade(cos_diffuse: np.ndarray, cos_gloss: np.ndarray, distance: np.ndarray,
           albedo: np.ndarray, specular: float, shininess: float,
           cfg: SynthConfig) -> np.ndarray:
    """Co-located point light: wrapped Lambert + Blinn-Phong, inverse-square fall-off.

    Light and viewer coincide, so the half vector is the view direction and the
    specular term depends on the same cosine as the diffuse one.

    Args:
        cos_diffuse: (N,) cosine between the shading normal and the view direction.
        cos_gloss: (N,) the same for the (bumpier) specular normal.
        distance: (N,) distance from the camera (metres).
        albedo: (N, 3) linear reflectance.

    Returns:
        (N, 3) float32 linear radiance (1 is about mid-grey before the tone curve).
    """
    falloff = (np.float32(_REFERENCE_DISTANCE_M) / distance) ** 2 * np.float32(
        _EXPOSURE * cfg.exposure)
    # Wrapped diffuse: light scattered under the mucosa softens the terminator.
    diffuse = (cos_diffuse + np.float32(0.15)) / np.float32(1.15)
    highlight = np.float32(specular) * cos_gloss ** np.float32(shininess)
    radiance = albedo * (diffuse * falloff)[:, None] + (highlight * falloff)[:, None]
    return radiance.astype(np.float32)


_SHAFT_ALBEDO = np.array([0.012, 0.012, 0.014], np.float32)
_JAW_ALBEDO = np.array([0.16, 0.17, 0.19], np.float32)


def _shade_instrument(rays: np.ndarray, depth: np.ndarray, normal: np.ndarray,
                      material: np.ndarray, cfg: SynthConfig) -> np.ndarray:
    """Black plastic shaft with a soft sheen, polished steel jaw with sharp glints."""
    view, length = _view_vectors(rays)
    cosine = _cosine(normal, view)
    jaw = (material == JAW)[:, None]
    plastic = _shade(cosine, cosine, depth * length,
                     np.broadcast_to(_SHAFT_ALBEDO, normal.shape), 0.25, 12.0, cfg)
    steel = _shade(cosine, cosine, depth * length,
                   np.broadcast_to(_JAW_ALBEDO, normal.shape), 1.5, 60.0, cfg)
    return np.where(jaw, steel, plastic)


def render_sequence(config: SynthConfig | None = None) -> Iterator[SynthFrame]:
    """Render the frames of a synthetic endoscope flight, one at a time.

    Args:
        config: scene, camera and sequence parameters (default: ``SynthConfig()``).

    Yields:
        ``config.frames`` frames with exact depth, segmentation and poses.
    """
    config = SynthConfig() if config is None else config
    scene = Scene(config)
    for index in range(config.frames):
        yield scene.frame(index)
