"""What a recording of this package holds: topic names, frame ids, message types, frames.

The names are those :mod:`endo_depth_ros.bags.writer` writes and a real endoscope driver
plus a ground-truth source would publish; readers detect other names by type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, BagError

#: Topics written by :func:`write_sequence`.
TOPIC_IMAGE = '/endoscope/image_raw'
TOPIC_CAMERA_INFO = '/endoscope/camera_info'
TOPIC_DEPTH = '/endoscope/depth_gt'
TOPIC_POSE = '/endoscope/pose_gt'
TOPIC_SEG = '/endoscope/seg_gt'
TOPIC_RIGHT_IMAGE = '/endoscope/right/image_raw'
TOPIC_RIGHT_CAMERA_INFO = '/endoscope/right/camera_info'
TOPIC_RIGHT_DEPTH = '/endoscope/right/depth_gt'
TOPIC_KINEMATICS = '/endoscope/kinematics'
RIGHT_CAMERA_FRAME = 'endoscope_right_optical_frame'
KINEMATICS_FRAME = 'base'
#: The endoscope's field of view: mono8, 255 inside (written once, by importers that know it).
TOPIC_VIEW = '/endoscope/field_of_view'
#: YAML facts about the ground truth, e.g. ``depth_units: relative`` (std_msgs/String).
TOPIC_GT_INFO = '/endoscope/ground_truth_info'
#: ``depth_units`` of ground truth: metres, or an unknown unit (SfM, normalised depth).
GT_UNITS = ('metric', 'relative')
#: Frame ids (REP-103 optical frame of the endoscope; ground-truth world).
CAMERA_FRAME = 'endoscope_optical_frame'
WORLD_FRAME = 'world'
#: Storage back ends of rosbag2 that :func:`write_sequence` can write.
STORAGES = ('mcap', 'sqlite3')

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
POSE_TYPE = 'geometry_msgs/msg/PoseStamped'
POINT_CLOUD_TYPE = 'sensor_msgs/msg/PointCloud2'
ODOMETRY_TYPE = 'nav_msgs/msg/Odometry'
STRING_TYPE = 'std_msgs/msg/String'

NS_PER_S = 1_000_000_000
#: Builds the camera of an image of (width, height) pixels when the recording has none.
CameraGuess = Callable[[int, int], Intrinsics]
#: Ground truth is paired with an image when their stamps differ by at most this (ns).
DEFAULT_SYNC_TOLERANCE_NS = 1_000_000


class FrameLike(Protocol):
    """What :func:`write_sequence` needs from a frame (``synth.SynthFrame`` has it)."""

    @property
    def stamp_ns(self) -> int: ...
    @property
    def rgb(self) -> np.ndarray: ...
    @property
    def depth(self) -> np.ndarray: ...
    @property
    def seg(self) -> np.ndarray: ...
    @property
    def pose(self) -> np.ndarray: ...
    @property
    def intrinsics(self) -> Intrinsics: ...


@dataclass(frozen=True)
class BagTopics:
    """Topic names of one recording (``None``: not present / not used).

    For npz folders the "topics" are the array keys (``rgb``, ``K``, ``depth``, ...).
    """

    image: str
    camera_info: str | None = None
    depth: str | None = None
    pose: str | None = None
    seg: str | None = None
    right_image: str | None = None
    right_camera_info: str | None = None
    kinematics: str | None = None


@dataclass(frozen=True, eq=False)
class BagFrame:
    """One image of a recording with its calibration and optional ground truth.

    Attributes:
        index: position of the image in the recording (before start/stride selection).
        stamp_ns: header stamp of the image, int nanoseconds.
        rgb: (H, W, 3) uint8.
        intrinsics: camera of this image.
        frame_id: the image's header frame id.
        depth_gt: (H, W) float32 metres (REP-118 z-depth), NaN invalid, or None.
        pose_gt: (4, 4) float64 ``T_world_camera``, or None.
        seg_gt: (H, W) uint8 labels, or None.
        right_rgb: (H, W, 3) uint8 right image of a rectified pair, or None.
        baseline_m: the pair's baseline from the right camera_info (metres, 0: none).
        kinematics: ``(stamp_ns, T_base_camera)`` kinematic sample paired with the
            image, or None.
    """

    index: int
    stamp_ns: int
    rgb: np.ndarray
    intrinsics: Intrinsics
    frame_id: str
    depth_gt: np.ndarray | None = None
    pose_gt: np.ndarray | None = None
    seg_gt: np.ndarray | None = None
    right_rgb: np.ndarray | None = None
    baseline_m: float = 0.0
    kinematics: tuple[int, np.ndarray] | None = None


def gt_info_yaml(gt_units: str) -> str:
    """The text of a ``TOPIC_GT_INFO`` message."""
    return f'depth_units: {gt_units}\n'


def check_units(units: str, path: Path) -> str:
    """``units`` if it is one of :data:`GT_UNITS` (else a BagError)."""
    if units not in GT_UNITS:
        raise BagError(f'{path}: ground-truth depth_units {units!r} is not one of {GT_UNITS}.')
    return units


def camera_for_image(fallback: Intrinsics | CameraGuess, width: int, height: int,
           where: Path) -> Intrinsics:
    """The camera given by the caller for an image of this size."""
    if isinstance(fallback, Intrinsics):
        return fallback
    try:
        return fallback(width, height)
    except BadInputError as err:
        raise BagError(f'{where}: {err}') from None
