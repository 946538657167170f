"""Pose-warped temporal fusion of the aligned output (``AlignmentConfig.blend``)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.temporal.disparity import disparity_to_depth

#: Temporal fusion: the warp into the previous view is computed on a grid of about this
#: many pixels and interpolated (it is smooth; the per-pixel work is then a lookup).
FUSION_GRID_PIXELS = 4096


class OutputFusion:
    """Pose-warped temporal fusion of the output (``AlignmentConfig.blend``).

    The previous fused output is looked up where each pixel of the new frame was seen
    in the previous view (backward warp with the poses: the new frame's depth gives the
    point, the previous view's pixel comes from projecting it), its depth moved into the
    new view, and mixed in with weight ``blend`` where both agree within ``tolerance``
    (relative disparity difference): a recursive filter that averages out per-frame noise
    without ghosting at occlusions, moving instruments or misregistered pixels, which keep
    the new value. A frame without a pose (or after one) is not fused: it comes out as
    aligned.
    """

    def __init__(self, weight: float, tolerance: float) -> None:
        self.weight = weight
        self.tolerance = tolerance
        self._previous = np.zeros((0, 0), np.float32)
        self._pose: np.ndarray | None = None
        self._grid_key: tuple[Intrinsics, tuple[int, int]] | None = None
        self._grid_rows = np.zeros(0, np.intp)
        self._grid_cols = np.zeros(0, np.intp)
        self._grid_u = np.zeros((0, 0), np.float32)
        self._grid_v = np.zeros((0, 0), np.float32)

    def apply(self, aligned: np.ndarray, pose: np.ndarray | None,
              camera: Intrinsics | None, mix: bool) -> np.ndarray:
        """Fuse ``aligned`` (H, W) disparity with the previous output; returns a new array."""
        previous, previous_pose = self._previous, self._pose
        out = aligned
        # Only with both poses: blending the previous output in place would smear a
        # moving camera's view (measured on a moving stream: 29-35 % off the per-frame
        # depth), and without a pose nothing says the camera stands still.
        if (mix and previous.shape == aligned.shape and pose is not None
                and previous_pose is not None and camera is not None):
            warped = self._warp(aligned, previous, np.linalg.inv(previous_pose) @ pose,
                                camera)
            with np.errstate(invalid='ignore'):
                agree = np.abs(warped - aligned) <= np.float32(self.tolerance) * aligned
            w = np.float32(self.weight)
            out = np.where(agree, aligned + w * (warped - aligned), aligned)
        else:
            out = aligned.copy()  # the caller owns the returned array
        self._previous = out.copy() if out is aligned else out
        self._pose = None if pose is None else pose.copy()
        return out

    def _warp(self, aligned: np.ndarray, previous: np.ndarray, T_prev_new: np.ndarray,
              camera: Intrinsics) -> np.ndarray:
        """The previous disparity seen from the new view, at each new pixel, NaN unknown."""
        height, width = aligned.shape
        self._set_grid(camera, (height, width))
        # Depth of the new frame at the grid points (holes filled: the warp is smooth).
        depth = disparity_to_depth(aligned[self._grid_rows[:, None], self._grid_cols[None, :]])
        finite = np.isfinite(depth)
        if not finite.any():
            return np.full_like(aligned, np.nan)
        depth[~finite] = np.median(depth[finite])
        fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
        R, t = T_prev_new[:3, :3], T_prev_new[:3, 3]
        ray_x = (self._grid_u - cx) / fx
        ray_y = (self._grid_v - cy) / fy
        point = [(R[r, 0] * ray_x + R[r, 1] * ray_y + R[r, 2]) * depth + t[r] for r in range(3)]
        with np.errstate(divide='ignore', invalid='ignore'):
            u = fx * point[0] / point[2] + cx
            v = fy * point[1] / point[2] + cy
        # A previous point seen at (u, v) with disparity q lies at z_new = a / q + b in the
        # new view, a = R_new_prev[2] . ray(u, v), b = t_new_prev[2]: a is smooth too.
        T_new_prev = np.linalg.inv(T_prev_new)
        r3, b = T_new_prev[2, :3], np.float32(T_new_prev[2, 3])
        a = r3[0] * (u - cx) / fx + r3[1] * (v - cy) / fy + r3[2]
        grid = np.stack([u, v, a], axis=-1).astype(np.float32)
        grid[~np.isfinite(grid)] = -1e6  # lands outside: no lookup
        full = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
        seen = cv2.remap(previous, full[..., 0], full[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=math.nan)
        with np.errstate(divide='ignore', invalid='ignore'):
            warped = seen / (full[..., 2] + b * seen)
        return warped

    def _set_grid(self, camera: Intrinsics, shape: tuple[int, int]) -> None:
        """Grid points whose bilinear upsampling (cv2.resize) lands on every pixel."""
        if self._grid_key == (camera, shape):
            return
        height, width = shape
        step = max(1.0, math.sqrt(height * width / FUSION_GRID_PIXELS))
        h, w = max(2, round(height / step)), max(2, round(width / step))
        # cv2.resize maps small pixel j to full coordinate (j + 0.5) * W / w - 0.5.
        v = (np.arange(h) + 0.5) * height / h - 0.5
        u = (np.arange(w) + 0.5) * width / w - 0.5
        self._grid_rows = np.clip(np.rint(v), 0, height - 1).astype(np.intp)
        self._grid_cols = np.clip(np.rint(u), 0, width - 1).astype(np.intp)
        self._grid_u, self._grid_v = (a.astype(np.float32) for a in np.meshgrid(u, v))
        self._grid_key = (camera, shape)

