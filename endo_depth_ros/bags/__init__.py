"""Endoscope recordings on disk: ROS 2 bags (via rosbags, no ROS needed) and npz folders.

Writing (:mod:`.writer`): :func:`write_sequence` stores frames (e.g. from
:mod:`endo_depth_ros.synth`) as a rosbag2 (MCAP or sqlite3) with the topics a real
endoscope driver plus a ground-truth source would publish (:mod:`.layout`)::

    /endoscope/image_raw     sensor_msgs/msg/Image       rgb8
    /endoscope/camera_info   sensor_msgs/msg/CameraInfo  same stamp and frame_id
    /endoscope/depth_gt      sensor_msgs/msg/Image       32FC1, metres, NaN invalid
    /endoscope/pose_gt       geometry_msgs/msg/PoseStamped  optical frame in ``world``
    /endoscope/seg_gt        sensor_msgs/msg/Image       mono8, 0 tissue / 1 instrument

and, for a stereo or robot-held synthetic flight, ``/endoscope/right/{image_raw,
camera_info,depth_gt}`` (rectified pair, ``P[0,3] = -fx * B``) and
``/endoscope/kinematics`` (PoseStamped of the camera in the robot's ``base`` frame).
:func:`write_npz` (:mod:`.npz`) stores the same frames as one ``.npz`` per frame (keys
``rgb``, ``depth``, ``seg``, ``K``, ``pose``, ``stamp``; EndoSynth's layout plus camera
and pose).

Reading: :func:`detect_topics` (:mod:`.topics`) finds the topics by message type and
name, and :func:`read_frames` (:mod:`.reader`) yields frames with the image, intrinsics
and whatever ground truth exists, pairing messages by header stamp. Both accept a
rosbag2 directory, a single ``.mcap``/``.db3`` file, a ROS 1 ``.bag`` or an npz folder.
Pixel layouts are decoded by :mod:`endo_depth_ros.encodings` (shared with the ROS node).
"""

from endo_depth_ros.bags.layout import (
    CAMERA_FRAME,
    CAMERA_INFO_TYPE,
    COMPRESSED_TYPE,
    DEFAULT_SYNC_TOLERANCE_NS,
    GT_UNITS,
    IMAGE_TYPE,
    KINEMATICS_FRAME,
    ODOMETRY_TYPE,
    POINT_CLOUD_TYPE,
    POSE_TYPE,
    RIGHT_CAMERA_FRAME,
    STORAGES,
    STRING_TYPE,
    TOPIC_CAMERA_INFO,
    TOPIC_DEPTH,
    TOPIC_GT_INFO,
    TOPIC_IMAGE,
    TOPIC_KINEMATICS,
    TOPIC_POSE,
    TOPIC_RIGHT_CAMERA_INFO,
    TOPIC_RIGHT_DEPTH,
    TOPIC_RIGHT_IMAGE,
    TOPIC_SEG,
    TOPIC_VIEW,
    WORLD_FRAME,
    BagFrame,
    BagTopics,
    CameraGuess,
    FrameLike,
    gt_info_yaml,
)
from endo_depth_ros.bags.messages import typestore
from endo_depth_ros.bags.npz import is_npz_folder, write_npz
from endo_depth_ros.bags.reader import RecordingInfo, read_frames, read_recording_info
from endo_depth_ros.bags.topics import detect_topics
from endo_depth_ros.bags.writer import BagWriter, write_sequence

__all__ = [
    'CAMERA_FRAME', 'CAMERA_INFO_TYPE', 'COMPRESSED_TYPE', 'DEFAULT_SYNC_TOLERANCE_NS',
    'GT_UNITS', 'IMAGE_TYPE', 'KINEMATICS_FRAME', 'ODOMETRY_TYPE', 'POINT_CLOUD_TYPE',
    'POSE_TYPE', 'RIGHT_CAMERA_FRAME', 'STORAGES', 'STRING_TYPE', 'TOPIC_CAMERA_INFO',
    'TOPIC_DEPTH', 'TOPIC_GT_INFO', 'TOPIC_IMAGE', 'TOPIC_KINEMATICS', 'TOPIC_POSE',
    'TOPIC_RIGHT_CAMERA_INFO', 'TOPIC_RIGHT_DEPTH', 'TOPIC_RIGHT_IMAGE', 'TOPIC_SEG',
    'TOPIC_VIEW', 'WORLD_FRAME', 'BagFrame', 'BagTopics', 'BagWriter', 'CameraGuess',
    'FrameLike', 'RecordingInfo', 'detect_topics', 'gt_info_yaml', 'is_npz_folder',
    'read_frames', 'read_recording_info', 'typestore', 'write_npz', 'write_sequence',
]
