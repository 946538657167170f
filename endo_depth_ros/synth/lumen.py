"""The lumen: an implicit tube surface, the camera's flight through it and exact ray casting.

World frame: the lumen runs along +z. The centreline is ``c(s) = (a(s), b(s), s)``; the
cross-section in the plane ``z = s`` is star-shaped around ``c(s)``: a point at distance
``rho`` and angle ``theta`` from the centreline is inside when ``rho < r(s, theta)``, with

    r(s, theta) = R(s) * (1 + lobes * C3) * (1 - A(s, theta) * P(s))

where ``R`` is the smoothly varying base radius, ``C3 = cos(3 (theta - theta0))`` gives the
three-lobed colon cross-section, ``P`` is a periodic train of Gaussian ridges (haustral folds)
and ``A`` their height. All functions of ``s`` are short sums of sinusoids, so the surface is
smooth and defined everywhere (no mesh, no tables), and the depth of a pixel is the root of
``gap(t) = r - rho`` along its ray, found to float32 precision.

Rays are parametrised by ``t`` = z-depth in the camera (the camera ray of pixel (u, v) is
``((u - cx) / fx, (v - cy) / fy, 1)``), so a root ``t`` *is* the REP-118 depth.
"""

from __future__ import annotations

from dataclasses import dataclass
import math

import cv2
import numpy as np

from endo_depth_ros.synth.config import SynthConfig

_TWO_PI = 2.0 * math.pi
#: Rays start this far in front of the camera (metres); closer surfaces are not rendered.
NEAR_M = 5e-4
#: Root refinement stops when the gap is below this (metres; float32 noise level).
_GAP_TOLERANCE = 5e-9
#: Batches up to this size evaluate all sinusoids in one stacked call.
_STACKED_MAX = 1024
#: Rays are processed in batches of this size: arrays of 128 KiB stay in cache and below
#: malloc's mmap threshold (larger temporaries cost page faults on every numpy operation).
CHUNK = 32768


@dataclass(frozen=True)
class _Waves:
    """``offset + sum_k amplitude_k * sin(omega_k * s + phase_k)`` (s in metres)."""

    offset: float
    amplitude: tuple[float, ...]
    omega: tuple[float, ...]
    phase: tuple[float, ...]

    def at(self, s: float) -> float:
        return self.offset + sum(
            a * math.sin(w * s + p)
            for a, w, p in zip(self.amplitude, self.omega, self.phase, strict=True))

    def max_slope(self) -> float:
        return sum(abs(a) * w for a, w in zip(self.amplitude, self.omega, strict=True))

    def local(self, s0: float) -> _LocalWaves:
        """The same function of ``z = s - s0``, phases folded in float64 (for float32 use)."""
        return _LocalWaves(
            np.float32(self.offset),
            tuple(np.float32(a) for a in self.amplitude),
            tuple(np.float32(w) for w in self.omega),
            tuple(np.float32((w * s0 + p) % _TWO_PI)
                  for w, p in zip(self.omega, self.phase, strict=True)))


@dataclass(frozen=True)
class _LocalWaves:
    offset: np.float32
    amplitude: tuple[np.float32, ...]
    omega: tuple[np.float32, ...]
    phase: tuple[np.float32, ...]

    def value(self, z: np.ndarray) -> np.ndarray:
        out = np.full(z.shape, self.offset, np.float32)
        for a, w, p in zip(self.amplitude, self.omega, self.phase, strict=True):
            out += a * np.sin(w * z + p)
        return out

    def slope(self, z: np.ndarray) -> np.ndarray:
        out = np.zeros(z.shape, np.float32)
        for a, w, p in zip(self.amplitude, self.omega, self.phase, strict=True):
            out += (a * w) * np.cos(w * z + p)
        return out


def _waves(rng: np.random.Generator, offset: float, amplitudes: tuple[float, ...],
           wavelengths_mm: tuple[tuple[float, float], ...]) -> _Waves:
    omega = tuple(_TWO_PI / (rng.uniform(lo, hi) * 1e-3) for lo, hi in wavelengths_mm)
    phase = tuple(float(rng.uniform(0.0, _TWO_PI)) for _ in amplitudes)
    return _Waves(offset, amplitudes, omega, phase)


@dataclass(frozen=True)
class _Frame:
    """Per-frame float32 constants: the lumen seen from origin ``o`` (world, metres)."""

    ox: np.float32
    oy: np.float32
    a: _LocalWaves
    b: _LocalWaves
    radius: _LocalWaves
    fold_height: _LocalWaves
    fold_warp: _LocalWaves
    fold_phase0: np.float32  # fold phase (in folds) at z = 0
    # All sinusoids stacked, for small batches where per-call overhead dominates.
    omega: np.ndarray  # (K,)
    phase: np.ndarray  # (K,)
    weights: np.ndarray  # (K, 5): contribution of each sinusoid to a, b, R, fold h, warp
    offsets: np.ndarray  # (5,)

    def values(self, z: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(a, b, R, fold_height, fold_warp)`` at local ``z`` (float32 arrays)."""
        if z.size <= _STACKED_MAX:
            stacked = np.sin(np.multiply.outer(z, self.omega) + self.phase) @ self.weights
            stacked += self.offsets
            return tuple(stacked[:, j] for j in range(5))
        return (self.a.value(z), self.b.value(z), self.radius.value(z),
                self.fold_height.value(z), self.fold_warp.value(z))


@dataclass(frozen=True)
class SurfacePoints:
    """What the shader needs about ray hits on the lumen wall.

    Attributes:
        normal: (N, 3) float32 unit normals in world axes, pointing into the lumen.
        s: (N,) float32 position along the lumen (world z), metres, modulo 1 m.
        theta: (N,) float32 angle around the centreline, radians in (-pi, pi].
    """

    normal: np.ndarray
    s: np.ndarray
    theta: np.ndarray


class Lumen:
    """A procedural tube (colon-like) and the camera flight along its centreline.

    Deterministic: the same config gives the same surface and trajectory; the image
    size does not change either, so renders at several resolutions agree.
    """

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        rng = np.random.default_rng([int(config.seed), 0x1D])
        bend = config.bend_mm * 1e-3
        sign = rng.choice([-1.0, 1.0], size=4)
        self._a = _waves(rng, 0.0, (0.65 * bend * sign[0], 0.35 * bend * sign[1]),
                         ((170.0, 320.0), (90.0, 160.0)))
        self._b = _waves(rng, 0.0, (0.65 * bend * sign[2], 0.35 * bend * sign[3]),
                         ((170.0, 320.0), (90.0, 160.0)))
        r_min, r_max = (r * 1e-3 for r in config.radius_mm)
        mid, half = 0.5 * (r_max + r_min), 0.5 * (r_max - r_min)
        self._radius = _waves(rng, mid, (0.6 * half, 0.4 * half), ((90.0, 180.0), (45.0, 90.0)))
        self._fold_height = _waves(rng, 0.72 * config.fold_amplitude,
                                   (0.28 * config.fold_amplitude,), ((60.0, 140.0),))
        self._fold_warp = _waves(rng, 0.0, (0.12,), ((80.0, 200.0),))
        self._theta0 = float(rng.uniform(0.0, _TWO_PI))
        self._spacing = config.fold_spacing_mm * 1e-3
        self._width = config.fold_width_mm * 1e-3
        self._trajectory = tuple(
            _waves(rng, 0.0, (1.0,), ((lo, hi),))
            for lo, hi in ((70.0, 130.0), (55.0, 110.0), (45.0, 95.0), (40.0, 90.0),
                           (100.0, 200.0), (30.0, 60.0)))
        self._s_start = float(rng.uniform(0.0, 1.0))
        # Slope bound of gap() along a unit direction, for the march step: rho changes at
        # most 1:1, the wall moves with the centreline, the radius and the fold flanks. The
        # angular terms are left out (they are small near the wall, where steps matter);
        # a step that still crosses the wall is caught by the sign change.
        fold_slope = (r_max * (1 + config.lobes) * config.fold_amplitude
                      * math.sqrt(2.0 / math.e) / self._width
                      * (1.0 + self._spacing * self._fold_warp.max_slope()))
        self.lipschitz = (1.0 + self._a.max_slope() + self._b.max_slope()
                          + self._radius.max_slope() + fold_slope)
        c3, s3 = math.cos(3 * self._theta0), math.sin(3 * self._theta0)
        self._c3, self._s3 = np.float32(c3), np.float32(s3)

    # ----------------------------------------------------------------- the scene

    def centre(self, s: float) -> np.ndarray:
        """Centreline point at ``s`` (world metres), (3,) float64."""
        return np.array([self._a.at(s), self._b.at(s), s])

    def radius(self, s: float) -> float:
        """Base radius R(s) in metres (before lobes and folds)."""
        return self._radius.at(s)

    def camera_pose(self, index: int) -> np.ndarray:
        """``T_world_camera`` (4x4 float64) of frame ``index``: camera on a wobbling path
        near the centreline, looking ahead along the lumen, slowly rolling."""
        cfg = self.config
        s = self._s_start + index * cfg.speed_mm * 1e-3
        w = self._trajectory
        r = self.radius(s)
        position = self.centre(s) + np.array(
            [cfg.wobble * r * w[0].at(s), cfg.wobble * r * w[1].at(s), 0.0])
        look_ahead = 0.035
        target = self.centre(s + look_ahead)
        forward = target - position
        forward /= np.linalg.norm(forward)
        x_axis = np.cross([0.0, 1.0, 0.0], forward)
        x_axis /= np.linalg.norm(x_axis)
        y_axis = np.cross(forward, x_axis)
        R = np.stack([x_axis, y_axis, forward], axis=1)
        tilt = math.radians(cfg.tilt_deg)
        roll = math.radians(cfg.roll_deg)
        R = R @ _rot_y(tilt * w[2].at(s)) @ _rot_x(tilt * w[3].at(s))
        R = R @ _rot_z(roll * (0.7 * w[4].at(s) + 0.3 * w[5].at(s)))
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = position
        return T

    def _frame(self, origin: np.ndarray) -> _Frame:
        s0 = float(origin[2])
        phase0 = (s0 / self._spacing) % 1.0
        parts = (self._a, self._b, self._radius, self._fold_height, self._fold_warp)
        local = tuple(w.local(s0) for w in parts)
        omega = np.array([w for p in local for w in p.omega], np.float32)
        phase = np.array([q for p in local for q in p.phase], np.float32)
        weights = np.zeros((omega.size, len(parts)), np.float32)
        row = 0
        for j, p in enumerate(local):
            for amplitude in p.amplitude:
                weights[row, j] = amplitude
                row += 1
        return _Frame(
            ox=np.float32(origin[0]), oy=np.float32(origin[1]),
            a=local[0], b=local[1], radius=local[2], fold_height=local[3], fold_warp=local[4],
            fold_phase0=np.float32(phase0), omega=omega, phase=phase, weights=weights,
            offsets=np.array([p.offset for p in local], np.float32))

    def _gap(self, f: _Frame, t: np.ndarray, dx: np.ndarray, dy: np.ndarray,
             dz: np.ndarray) -> np.ndarray:
        """``r(s, theta) - rho`` at ``origin + t * d``: > 0 inside the lumen (metres)."""
        z = t * dz
        a, b, radius, fold_height, fold_warp = f.values(z)
        ex = t * dx + (f.ox - a)
        ey = t * dy + (f.oy - b)
        rho = np.sqrt(ex * ex + ey * ey) + np.float32(1e-12)
        c = ex / rho
        s = ey / rho
        c3 = self._c3 * (np.float32(4.0) * c * c - np.float32(3.0)) * c + self._s3 * (
            np.float32(3.0) - np.float32(4.0) * s * s) * s
        r = radius * (np.float32(1.0) + np.float32(self.config.lobes) * c3)
        if self.config.fold_amplitude > 0:
            u = z * np.float32(1.0 / self._spacing) + f.fold_phase0 + fold_warp
            d = (u - np.floor(u) - np.float32(0.5)) * np.float32(self._spacing / self._width)
            height = fold_height * (np.float32(0.6) + np.float32(0.4) * c3)
            r *= np.float32(1.0) - height * np.exp(-d * d)
        return r - rho

    def gap(self, T_world_camera: np.ndarray, rays: np.ndarray, t: np.ndarray) -> np.ndarray:
        """How far inside the lumen the points ``t * ray`` of a camera are.

        Args:
            T_world_camera: camera pose (4x4).
            rays: (N, 3) camera rays with z = 1.
            t: (N,) z-depths (metres).

        Returns:
            (N,) float32 ``r(s, theta) - rho`` in metres: > 0 inside, 0 on the wall.
        """
        frame = self._frame(np.asarray(T_world_camera, np.float64)[:3, 3])
        d = rotate_rays(np.asarray(rays, np.float32), T_world_camera[:3, :3])
        return self._gap(frame, np.asarray(t, np.float32), d[0], d[1], d[2])

    def _fold(self, f: _Frame, z: np.ndarray,
              c3: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fold depth ``A * P`` (fraction of the radius), its ``z`` slope and ``A``."""
        u = z * np.float32(1.0 / self._spacing) + f.fold_phase0 + f.fold_warp.value(z)
        d = (u - np.floor(u) - np.float32(0.5)) * np.float32(self._spacing / self._width)
        profile = np.exp(-d * d)
        height = f.fold_height.value(z) * (np.float32(0.6) + np.float32(0.4) * c3)
        du = np.float32(1.0 / self._spacing) + f.fold_warp.slope(z)
        dprofile = profile * (np.float32(-2.0 * self._spacing / self._width) * d) * du
        dheight = f.fold_height.slope(z) * (np.float32(0.6) + np.float32(0.4) * c3)
        return height * profile, height * dprofile + dheight * profile, height

    # ----------------------------------------------------------------- ray casting

    def cast_grid(self, T_world_camera: np.ndarray, rays: np.ndarray,
                  mask: np.ndarray | None = None) -> np.ndarray:
        """Depth of the lumen wall for a grid of camera rays.

        Coarse-to-fine: a robust march on every 4th ray (in both directions) finds where
        the wall is; each full-resolution ray is then bracketed by the hits of its 3x3
        coarse neighbours and refined to the exact root. Rays near depth discontinuities,
        where the neighbours disagree, are marched from the nearest neighbour's hit.

        Args:
            T_world_camera: camera pose (4x4).
            rays: (H, W, 3) float32 camera rays with z = 1.
            mask: (H, W) bool, pixels to cast (default: all).

        Returns:
            (H, W) float32 z-depth in metres, NaN where no wall is hit before
            ``max_depth_m`` or outside ``mask``.
        """
        height, width = rays.shape[:2]
        R = T_world_camera[:3, :3]
        frame = self._frame(T_world_camera[:3, 3])
        t_max = np.float32(self.config.max_depth_m)
        factor = 4 if min(height, width) >= 64 else 2 if min(height, width) >= 16 else 1
        level = rays[factor // 2::factor, factor // 2::factor]
        coarse = self._march(frame, rotate_rays(level.reshape(-1, 3), R),
                             np.full(level.shape[0] * level.shape[1], NEAR_M, np.float32),
                             t_max, 0.01).reshape(level.shape[:2])
        if factor == 1:
            return coarse if mask is None else np.where(mask, coarse, np.float32(np.nan))
        # (An intermediate level at every 2nd ray was tried: slower and less accurate.)
        return self._cast_level(frame, rays, R, coarse, factor, 1, mask, t_max)

    def _cast_level(self, frame: _Frame, rays: np.ndarray, R: np.ndarray, coarse: np.ndarray,
                    factor: int, finer: int, mask: np.ndarray | None,
                    t_max: np.float32) -> np.ndarray:
        """Depth on the grid of every ``finer``-th ray, guided by the ``factor`` grid."""
        level = rays[finer // 2::finer, finer // 2::finer]
        height, width = level.shape[:2]
        # The hits of the 3x3 coarse neighbours bound where each finer ray may hit.
        filled = np.where(np.isnan(coarse), t_max, coarse)
        kernel = np.ones((3, 3), np.uint8)
        rows = _nearest_index(height, finer, factor, coarse.shape[0])
        cols = _nearest_index(width, finer, factor, coarse.shape[1])
        near = cv2.erode(filled, kernel, borderType=cv2.BORDER_REPLICATE)[rows][:, cols]
        far = cv2.dilate(filled, kernel, borderType=cv2.BORDER_REPLICATE)[rows][:, cols]
        select = np.ones((height, width), bool) if mask is None else mask
        dirs = rotate_rays(level[select], R)
        near, far = near[select], far[select]
        result = np.full(near.shape, np.nan, np.float32)
        march = np.ones(near.shape, bool)
        for i in range(0, result.size, CHUNK):
            part = slice(i, i + CHUNK)
            roots, found = self._bracketed(frame, dirs[:, part], near[part], far[part], t_max)
            result[part] = roots
            march[part] = ~found
        if march.any():
            result[march] = self._march(frame, dirs[:, march],
                                        np.maximum(near[march] * np.float32(0.9), NEAR_M),
                                        t_max, 0.01)
        depth = np.full((height, width), np.nan, np.float32)
        depth[select] = result
        return depth

    def _bracketed(self, frame: _Frame, dirs: np.ndarray, near: np.ndarray, far: np.ndarray,
                   t_max: np.float32) -> tuple[np.ndarray, np.ndarray]:
        """Roots of rays whose coarse neighbours agree (smooth wall) and bracket the hit.

        Returns:
            ``(depth, found)``: (N,) float32 roots (NaN where not found) and (N,) bool.
        """
        result = np.full(near.shape, np.nan, np.float32)
        found = np.zeros(near.shape, bool)
        smooth = np.nonzero(far < near * np.float32(1.15))[0]
        lo = near[smooth] * np.float32(0.96)
        hi = np.minimum(far[smooth] * np.float32(1.04), t_max)
        d = dirs[:, smooth]
        glo = self._gap(frame, lo, d[0], d[1], d[2])
        ghi = self._gap(frame, hi, d[0], d[1], d[2])
        ok = np.nonzero((glo > 0) & (ghi <= 0))[0]
        result[smooth[ok]] = self._refine(frame, lo[ok], hi[ok], glo[ok], ghi[ok], d[:, ok])
        found[smooth[ok]] = True
        return result, found

    def _march(self, frame: _Frame, dirs: np.ndarray, t_start: np.ndarray, t_max: np.float32,
               min_step: float) -> np.ndarray:
        """First root of the gap along each ray (float32 z-depth, NaN: no hit).

        Marches with steps ``max(gap / slope_bound, min_step * t)``: never past the wall
        where the slope bound holds, and at least geometric progress where it does not,
        so only features thinner than ``min_step * t`` can be stepped over.

        Args:
            dirs: (3, N) float32 world ray directions (camera rays with z = 1, rotated).
            t_start: (N,) where to start; rays starting outside restart at the camera.
        """
        n = dirs.shape[1]
        result = np.full(n, np.nan, np.float32)
        if n == 0:
            return result
        dx, dy, dz = (np.ascontiguousarray(d, dtype=np.float32) for d in dirs)
        t = t_start.astype(np.float32)
        g = self._gap(frame, t, dx, dy, dz)
        outside = g <= 0
        if outside.any():
            # A wall between the camera and the start guess: march this ray from the camera.
            t[outside] = NEAR_M
            g[outside] = self._gap(frame, t[outside], dx[outside], dy[outside], dz[outside])
        step_scale = np.float32(1.0 / self.lipschitz) / np.sqrt(dx * dx + dy * dy + dz * dz)
        rel = np.float32(min_step)
        # Brackets found so far (full size); the march runs on a shrinking working set
        # that is compacted only when it is mostly dead (compaction is not free).
        lo_all = np.zeros(n, np.float32)
        hi_all = np.zeros(n, np.float32)
        glo_all = np.zeros(n, np.float32)
        ghi_all = np.zeros(n, np.float32)
        found = np.zeros(n, bool)
        index = np.arange(n)
        alive = g > 0
        lo, hi, glo, ghi = t, t, g, g
        hit_any = np.zeros(n, bool)
        iteration = 0
        while True:
            # The floor grows slowly so that the few rays crawling along the far walls
            # (where a pixel spans millimetres) do not dominate the run time.
            iteration += 1
            floor = rel * np.float32(1.0 + iteration / 40.0)
            t_new = t + np.maximum(g * step_scale, floor * t)
            g_new = self._gap(frame, t_new, dx, dy, dz)
            hit = alive & (g_new <= 0)
            if hit.any():
                lo = np.where(hit, t, lo)
                glo = np.where(hit, g, glo)
                hi = np.where(hit, t_new, hi)
                ghi = np.where(hit, g_new, ghi)
                hit_any |= hit
            alive &= ~hit & (t_new < t_max)
            t, g = t_new, g_new
            count = int(np.count_nonzero(alive))
            if count == 0 or count < 0.6 * alive.size:
                done = np.nonzero(hit_any)[0]
                target = index[done]
                lo_all[target], hi_all[target] = lo[done], hi[done]
                glo_all[target], ghi_all[target] = glo[done], ghi[done]
                found[target] = True
                if count == 0:
                    break
                keep = np.nonzero(alive)[0]
                index, t, g = index[keep], t[keep], g[keep]
                dx, dy, dz, step_scale = dx[keep], dy[keep], dz[keep], step_scale[keep]
                lo, hi, glo, ghi = t, t, g, g
                alive = np.ones(count, bool)
                hit_any = np.zeros(count, bool)
        hits = np.nonzero(found)[0]
        if hits.size == 0:
            return result
        roots = self._refine(frame, lo_all[hits], hi_all[hits], glo_all[hits], ghi_all[hits],
                             dirs[:, hits])
        result[hits] = np.where(roots <= t_max, roots, np.float32(np.nan))
        return result

    def _refine(self, frame: _Frame, lo: np.ndarray, hi: np.ndarray, glo: np.ndarray,
                ghi: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Anderson-Bjoerck regula falsi on brackets with gap(lo) > 0 >= gap(hi).

        Args:
            lo, hi, glo, ghi: (N,) bracket ends and their gaps.
            dirs: (3, N) world ray directions.

        Returns:
            (N,) roots to float32 precision: iterations stop when the gap is below
            ``_GAP_TOLERANCE`` or the bracket is a few float32 steps wide.
        """
        out = hi.copy()
        if lo.size == 0:
            return out
        # A march step may land exactly on the wall: nudge so that divisions stay finite.
        ghi = np.minimum(ghi, np.float32(-1e-30))
        index = np.arange(lo.size)
        dx, dy, dz = (np.ascontiguousarray(d, dtype=np.float32) for d in dirs)
        moved_lo = np.zeros(lo.size, np.float32)  # 1 where the lo end moved last
        moved_hi = np.zeros(lo.size, np.float32)
        active = np.ones(lo.size, bool)
        one, half = np.float32(1.0), np.float32(0.5)
        tm = hi
        for _ in range(40):
            tm = hi - ghi * (hi - lo) / (ghi - glo)
            tm = np.minimum(np.maximum(tm, lo), hi)
            gm = self._gap(frame, tm, dx, dy, dz)
            exact = gm == 0
            gm = gm - exact.astype(np.float32) * np.float32(1e-30)  # keeps divisions finite
            # Blends instead of np.where: the masks are random, where() branches badly.
            inside = (gm > 0).astype(np.float32)
            outside = one - inside
            # Anderson-Bjoerck: scale the stale end's value so both ends keep moving.
            m_hi = one - gm / glo
            m_hi = np.maximum(m_hi, 0) + (m_hi <= 0) * half
            m_lo = one - gm / ghi
            m_lo = np.maximum(m_lo, 0) + (m_lo <= 0) * half
            ghi = ghi * (one + inside * moved_lo * (m_hi - one))
            glo = glo * (one + outside * moved_hi * (m_lo - one))
            lo = lo + inside * (tm - lo)
            glo = glo + inside * (gm - glo)
            hi = hi + outside * (tm - hi)
            ghi = ghi + outside * (gm - ghi)
            # Repeated scaling may underflow: the ends must keep their signs.
            glo = np.maximum(glo, np.float32(1e-30))
            ghi = np.minimum(ghi, np.float32(-1e-30))
            moved_lo, moved_hi = inside, outside
            done = exact | (np.abs(gm) < _GAP_TOLERANCE) | (hi - lo <= np.float32(4e-7) * hi)
            finished = np.nonzero(active & done)[0]
            out[index[finished]] = tm[finished]
            active &= ~done
            count = int(np.count_nonzero(active))
            if count == 0:
                return out
            if count < 0.6 * active.size:
                keep = np.nonzero(active)[0]
                index, lo, hi, glo, ghi = index[keep], lo[keep], hi[keep], glo[keep], ghi[keep]
                moved_lo, moved_hi = moved_lo[keep], moved_hi[keep]
                dx, dy, dz, tm = dx[keep], dy[keep], dz[keep], tm[keep]
                active = np.ones(count, bool)
        left = np.nonzero(active)[0]
        out[index[left]] = tm[left]
        return out

    def surface(self, T_world_camera: np.ndarray, depth: np.ndarray,
                dirs: np.ndarray) -> SurfacePoints:
        """Normals and texture coordinates where camera rays ``dirs`` (N, 3, z = 1) hit
        the wall at z-depth ``depth`` (N,)."""
        origin = T_world_camera[:3, 3]
        frame = self._frame(origin)
        world = rotate_rays(dirs, T_world_camera[:3, :3])
        t = depth.astype(np.float32)
        z = t * world[2]
        ex = t * world[0] + (frame.ox - frame.a.value(z))
        ey = t * world[1] + (frame.oy - frame.b.value(z))
        rho = np.sqrt(ex * ex + ey * ey) + np.float32(1e-12)
        c, s = ex / rho, ey / rho
        cos3 = (np.float32(4.0) * c * c - np.float32(3.0)) * c
        sin3 = (np.float32(3.0) - np.float32(4.0) * s * s) * s
        c3 = self._c3 * cos3 + self._s3 * sin3
        dc3 = np.float32(-3.0) * (sin3 * self._c3 - cos3 * self._s3)  # d C3 / d theta
        lobes = np.float32(self.config.lobes)
        base = frame.radius.value(z)
        dbase = frame.radius.slope(z)
        lobe = np.float32(1.0) + lobes * c3
        if self.config.fold_amplitude > 0:
            fold, dfold_ds, height = self._fold(frame, z, c3)
            dfold_dtheta = fold / np.maximum(height, np.float32(1e-12)) * (
                frame.fold_height.value(z) * np.float32(0.4) * dc3)
        else:
            fold = dfold_ds = dfold_dtheta = np.zeros_like(z)
        keep = np.float32(1.0) - fold
        r_s = dbase * lobe * keep - base * lobe * dfold_ds
        r_theta = base * (lobes * dc3 * keep - lobe * dfold_dtheta)
        da, db = frame.a.slope(z), frame.b.slope(z)
        # Gradient of F = rho - r(s, theta) (outward); rho and theta are measured from c(s).
        gx = c + r_theta * s / rho
        gy = s - r_theta * c / rho
        gz = -(da * c + db * s) - r_s - r_theta * (da * s - db * c) / rho
        grad = np.stack([gx, gy, gz], axis=1)
        normal = -grad / np.linalg.norm(grad, axis=1, keepdims=True)
        # Texture coordinates must be anchored in the world, not in the camera.
        along = z + np.float32(float(origin[2]) % 1.0)
        return SurfacePoints(normal=normal.astype(np.float32), s=along,
                             theta=np.arctan2(s, c).astype(np.float32))


def rotate_rays(rays: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Rotated rays as a (3, N) float32 array (rows contiguous): ``(rays @ R.T).T``.

    Written out because numpy's matmul is slow for (N, 3) @ (3, 3).
    """
    R = np.asarray(R, dtype=np.float32)
    x, y, z = rays[:, 0], rays[:, 1], rays[:, 2]
    return np.stack([R[0, 0] * x + R[0, 1] * y + R[0, 2] * z,
                     R[1, 0] * x + R[1, 1] * y + R[1, 2] * z,
                     R[2, 0] * x + R[2, 1] * y + R[2, 2] * z])


def _nearest_index(size: int, finer: int, factor: int, coarse_size: int) -> np.ndarray:
    """For each ray of a ``finer`` grid, the index of the nearest ray of a ``factor`` grid.

    Grids sample pixels ``step // 2 + k * step``.
    """
    pixel = finer // 2 + finer * np.arange(size)
    index = np.rint((pixel - factor // 2) / factor).astype(np.intp)
    return np.clip(index, 0, coarse_size - 1)


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
