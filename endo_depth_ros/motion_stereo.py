"""Depth scale from two views of a moving camera whose baseline length is known.

A robot knows how far its endoscope moved; the depth of a frame in metres then
follows from the image motion between that frame and an earlier one, like a stereo
pair whose baseline is the motion ("motion stereo"). For every pixel ``p`` of the
current frame with a flow match ``q`` in the earlier frame, and the camera motion
``X_s = R X_t + b`` (metres), the pixel's inverse depth ``rho`` satisfies, per image
axis (normalised coordinates, ``x`` the ray of ``p``)::

    rho * (q_x * b_z - b_x) = (R x)_x - q_x * (R x)_z

The aligned (relative) inverse depth ``m`` is metric up to ``rho = k * m (+ beta)``; a
robust Gauss-Newton fit over all pixels finds ``k`` (and ``beta``) together with small
corrections of the rotation and of the baseline's direction. Only the baseline's
*length* is taken from the robot as is: a few tenths of a millimetre of kinematic
noise tilt a 2 mm baseline by several degrees, and the flow measures that direction
far better once the depth is known (as PnP does).

The residuals are in normalised image units, i.e. proportional to pixels, so pixels
with large parallax weigh most; the largest residuals (moving instruments, specular
glints, occlusions) are trimmed each pass.
"""

from __future__ import annotations

from dataclasses import dataclass
import math

import cv2
import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.geometry import camera_rays

#: Gauss-Newton passes (each re-trims the residuals; the trimmed fit creeps towards
#: its optimum: 5 passes left the flicker stand-in's scale 1 % further off than 8).
PASSES = 8
#: Fewest matched pixels for a fit, and the most it uses (an even subsample beyond:
#: seven unknowns need no more, and the cost stays bounded at any size).
MIN_POINTS, MAX_POINTS = 200, 4000
#: A fit that turns the robot's rotation by more than this, or its baseline direction
#: by more than ``MAX_DIRECTION_CHANGE_DEG``, is not trusted (the flow went wrong).
MAX_ROTATION_CHANGE_DEG = 5.0
MAX_DIRECTION_CHANGE_DEG = 30.0
#: Forward-backward flow disagreement (pixels at the matching size) of a usable match.
MAX_FLOW_ERROR_PX = 0.5
#: Narrowest pyramid level (pixels) the flow is refined down to.
FINEST_FLOW_WIDTH = 120


@dataclass(frozen=True)
class MotionFit:
    """The metric inverse depth of a frame from a known baseline length.

    Attributes:
        k: metric inverse depth / aligned inverse depth (``1 / scale``).
        beta: disparity shift (1/m; 0 without ``with_shift``).
        points: matched pixels used (after trimming).
        rotation_change_deg: correction the fit applied to the given rotation.
        direction_change_deg: correction the fit applied to the baseline direction.
    """

    k: float
    beta: float
    points: int
    rotation_change_deg: float
    direction_change_deg: float


class MotionStereo:
    """Dense flow between two grey frames and the scale fit of the first one's depth.

    Args:
        trim_fraction: fraction of the largest residuals dropped per pass.
        with_shift: also fit a disparity shift (models affine in disparity).
    """

    def __init__(self, trim_fraction: float, with_shift: bool) -> None:
        self.trim_fraction = trim_fraction
        self.with_shift = with_shift
        # DIS "fast", refined down to a flow at least FINEST_FLOW_WIDTH wide (the preset
        # stops at a quarter of the size): a coarse flow is smooth and under-estimates
        # parallax, and so the scale (at 160 px: 1.6 % at a quarter, 0.6 % at full size;
        # 240 px at half size: 0.55 % for half the cost of 160 px at full size).
        self._flow = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_FAST)

    def fit(self, grey_t: np.ndarray, grey_s: np.ndarray, usable: np.ndarray,
            inverse_depth: np.ndarray, intrinsics: Intrinsics, T_s_t: np.ndarray
            ) -> MotionFit | None:
        """Fit the scale of frame t's inverse depth from its motion to frame s.

        Args:
            grey_t, grey_s: (h, w) uint8 grey images of the current and the earlier frame.
            usable: (h, w) bool pixels of frame t worth matching (texture, no glare).
            inverse_depth: (h, w) float aligned inverse depth of frame t, NaN invalid.
            intrinsics: the camera at (w, h) (distortion honoured).
            T_s_t: (4, 4) motion from camera t to camera s (``X_s = R X_t + b``), ``b``
                in metres; its length is kept, its rotation and direction refined.

        Returns:
            The fit, or None (too few matches, a degenerate or implausible solution).
        """
        h, w = grey_t.shape
        self._flow.setFinestScale(1 if w >= 2 * FINEST_FLOW_WIDTH else 0)
        forward = np.asarray(self._flow.calc(grey_t, grey_s, np.zeros((h, w, 2), np.float32)))
        u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        mu, mv = u + forward[..., 0], v + forward[..., 1]
        # Forward-backward check: occlusions, glints and the moving instrument do not
        # come back to where they started (without it the fit is 2-5 % worse).
        backward = np.asarray(self._flow.calc(grey_s, grey_t, np.zeros((h, w, 2), np.float32)))
        back = cv2.remap(backward, mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(math.nan, math.nan))
        error = np.hypot(forward[..., 0] + back[..., 0], forward[..., 1] + back[..., 1])
        rays = camera_rays(intrinsics)
        qx = cv2.remap(np.ascontiguousarray(rays[..., 0]), mu, mv, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=math.nan)
        qy = cv2.remap(np.ascontiguousarray(rays[..., 1]), mu, mv, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=math.nan)
        ok = (usable & (error < MAX_FLOW_ERROR_PX) & np.isfinite(inverse_depth)
              & (inverse_depth > 0) & np.isfinite(qx) & np.isfinite(qy)
              & np.isfinite(rays[..., 0]))
        pixels = np.flatnonzero(ok)
        if pixels.size < MIN_POINTS:
            return None
        pixels = pixels[::-(-pixels.size // MAX_POINTS)]
        x = rays.reshape(-1, 3)[pixels].T.astype(np.float64)  # (3, N)
        q = np.stack([qx.ravel()[pixels], qy.ravel()[pixels]]).astype(np.float64)  # (2, N)
        m = inverse_depth.ravel()[pixels].astype(np.float64)
        return self._gauss_newton(x, q, m, T_s_t)

    def _gauss_newton(self, x: np.ndarray, q: np.ndarray, m: np.ndarray,
                      T_s_t: np.ndarray) -> MotionFit | None:
        R0 = np.asarray(T_s_t[:3, :3], np.float64)
        b0 = np.asarray(T_s_t[:3, 3], np.float64)
        length = float(np.linalg.norm(b0))
        if not length > 0:
            return None
        R, direction = R0.copy(), b0 / length
        initial = self._linear_scale(x, q, m, R, length * direction)
        if initial is None:
            return None
        k, beta = initial, 0.0
        keep = np.ones(2 * m.size, bool)
        # d(R x)/dw_j for R <- R (I + [w]x) is R (e_j x x): combinations of R's columns.
        cross = ((-x[2], x[1]), (x[2], -x[0]), (-x[1], x[0]))  # e_j x x, non-zero parts
        axes = ((1, 2), (0, 2), (0, 1))
        for _ in range(PASSES):
            b = length * direction
            rho = k * m + beta
            residual, a_x, a_y, _ = _residuals(x, q, rho, R, b)
            keep = _smallest(np.abs(residual), 1.0 - self.trim_fraction)
            columns = [np.concatenate([a_x * m, a_y * m])]  # d/dk
            if self.with_shift:
                columns.append(np.concatenate([a_x, a_y]))  # d/dbeta
            for (c0, c1), (i0, i1) in zip(cross, axes, strict=True):
                d = np.outer(R[:, i0], c0) + np.outer(R[:, i1], c1)
                columns.append(np.concatenate([q[0] * d[2] - d[0], q[1] * d[2] - d[1]]))
            e1, e2 = _perpendiculars(direction)
            for e in (e1, e2):
                db = length * e
                columns.append(np.concatenate([rho * (q[0] * db[2] - db[0]),
                                               rho * (q[1] * db[2] - db[1])]))
            J = np.stack(columns, axis=1)[keep]
            step = _solve(J.T @ J, -J.T @ residual[keep])
            if step is None:
                return None
            k += float(step[0])
            if self.with_shift:
                beta += float(step[1])
            i = 2 if self.with_shift else 1
            R = R @ cv2.Rodrigues(step[i:i + 3].reshape(3, 1))[0]
            direction = direction + step[i + 3] * e1 + step[i + 4] * e2
            direction /= np.linalg.norm(direction)
        rotation_change = _angle_deg(R0.T @ R)
        direction_change = math.degrees(math.acos(float(np.clip(
            direction @ (b0 / length), -1.0, 1.0))))
        if (not (math.isfinite(k) and k > 0 and math.isfinite(beta))
                or rotation_change > MAX_ROTATION_CHANGE_DEG
                or direction_change > MAX_DIRECTION_CHANGE_DEG):
            return None
        return MotionFit(k=k, beta=beta, points=int(keep.sum()) // 2,
                         rotation_change_deg=rotation_change,
                         direction_change_deg=direction_change)

    @staticmethod
    def _linear_scale(x: np.ndarray, q: np.ndarray, m: np.ndarray, R: np.ndarray,
                      b: np.ndarray) -> float | None:
        """Least-squares ``k`` for the given motion, no shift: the starting point (a
        shift fitted this early trades off against k along the motion's error)."""
        _, a_x, a_y, Rx = _residuals(x, q, np.zeros_like(m), R, b)
        a = np.concatenate([a_x * m, a_y * m])
        c = np.concatenate([Rx[0] - q[0] * Rx[2], Rx[1] - q[1] * Rx[2]])
        k = float(np.dot(a, c) / max(float(np.dot(a, a)), 1e-300))
        return k if math.isfinite(k) and k > 0 else None


def _residuals(x: np.ndarray, q: np.ndarray, rho: np.ndarray, R: np.ndarray, b: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stacked x/y residuals (2N,), their parallax coefficients a_x, a_y (N,) and R x."""
    Rx = R @ x
    a_x = q[0] * b[2] - b[0]
    a_y = q[1] * b[2] - b[1]
    e_x = rho * a_x - (Rx[0] - q[0] * Rx[2])
    e_y = rho * a_y - (Rx[1] - q[1] * Rx[2])
    return np.concatenate([e_x, e_y]), a_x, a_y, Rx


def _smallest(values: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the ``fraction`` smallest values (the trimmed least squares' inliers)."""
    count = max(1, min(values.size, int(fraction * values.size)))
    if count == values.size:
        return np.ones(values.size, bool)
    return values <= np.partition(values, count - 1)[count - 1]


def _solve(A: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """``A x = b`` for the normal equations, None when singular or not finite."""
    try:
        x = np.linalg.solve(A, b)
    except np.linalg.LinAlgError:
        return None
    return x if np.isfinite(x).all() else None


def _perpendiculars(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to ``direction`` and to each other."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(direction[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(direction, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(direction, e1)


def _angle_deg(R: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))
