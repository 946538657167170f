"""The synthetic flight's metric scale sources: a stereo right camera and robot kinematics.

Stereo: a rectified pair (identical intrinsics, parallel optical axes), the right camera
``stereo_baseline_mm`` along the left camera's x axis; its camera_info carries the ROS
stereo convention ``P[0, 3] = -fx * B`` (:func:`right_projection`).

Kinematics: what a robot's forward kinematics reports as the camera pose, with the
errors of a real one: the pose stamped t is the camera's at ``t - kinematics_latency_s``,
seen through a small hand-eye calibration error (``HAND_EYE_TRANSLATION_M``,
``HAND_EYE_ROTATION_DEG``), in the robot's base frame (``T_BASE_WORLD``), with Gaussian
noise of ``kinematics_noise_m`` per axis on the translation and ``ROTATION_NOISE_DEG``
on the rotation (independent per frame, seeded).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from endo_depth_ros.synth.render import Scene

#: Hand-eye calibration error: the kinematic frame's offset from the optical frame.
HAND_EYE_TRANSLATION_M = np.array([0.0012, -0.0008, 0.0005])
HAND_EYE_ROTATION_DEG = 0.5
#: Rotation noise of each kinematic sample (degrees, std per axis).
ROTATION_NOISE_DEG = 0.05


def _transform(rotvec: tuple[float, float, float], translation: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(rotvec, np.float64))[0]
    T[:3, 3] = translation
    return T


#: The robot's base frame in the lumen's world frame (any fixed rigid transform).
T_BASE_WORLD = _transform((0.3, -0.2, 1.1), np.array([0.25, -0.1, 0.4]))
_T_CAMERA_KINEMATIC = _transform(
    tuple(math.radians(HAND_EYE_ROTATION_DEG) * np.array([0.6, 0.8, 0.0])),
    HAND_EYE_TRANSLATION_M)


def right_pose(left_pose: np.ndarray, baseline_m: float) -> np.ndarray:
    """``T_world_right`` of a rectified pair from ``T_world_left`` (4x4)."""
    offset = np.eye(4)
    offset[0, 3] = baseline_m
    return left_pose @ offset


def right_projection(K: np.ndarray, baseline_m: float) -> np.ndarray:
    """The right camera_info's 3x4 ``P = [K | (-fx * B, 0, 0)]`` (ROS stereo convention)."""
    P = np.hstack([np.asarray(K, np.float64), np.zeros((3, 1))])
    P[0, 3] = -P[0, 0] * baseline_m
    return P


def kinematic_pose(scene: Scene, index: int) -> np.ndarray:
    """The robot's report ``T_base_camera`` (4x4) stamped like frame ``index``."""
    cfg = scene.config
    true = scene.camera_pose(index - cfg.kinematics_latency_s * cfg.fps)  # type: ignore[arg-type]
    rng = np.random.default_rng([int(cfg.seed), 0x4B, int(index)])
    noise = _transform(tuple(np.radians(ROTATION_NOISE_DEG) * rng.standard_normal(3)),
                       cfg.kinematics_noise_m * rng.standard_normal(3))
    return T_BASE_WORLD @ true @ _T_CAMERA_KINEMATIC @ noise
