"""Writing recordings: a rosbag2 message by message, or a whole synthetic sequence."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

import numpy as np

from endo_depth_ros import encodings, outputs
from endo_depth_ros.bags.layout import (
    CAMERA_FRAME,
    CAMERA_INFO_TYPE,
    IMAGE_TYPE,
    KINEMATICS_FRAME,
    POSE_TYPE,
    RIGHT_CAMERA_FRAME,
    STORAGES,
    STRING_TYPE,
    TOPIC_CAMERA_INFO,
    TOPIC_DEPTH,
    TOPIC_IMAGE,
    TOPIC_KINEMATICS,
    TOPIC_POSE,
    TOPIC_RIGHT_CAMERA_INFO,
    TOPIC_RIGHT_DEPTH,
    TOPIC_RIGHT_IMAGE,
    TOPIC_SEG,
    WORLD_FRAME,
    FrameLike,
)
from endo_depth_ros.bags.messages import (
    camera_info_msg,
    cloud_msg,
    header_msg,
    image_msg,
    pose_msg,
    typestore,
)
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.geometry import PointCloud


class BagWriter:
    """A rosbag2 written message by message from arrays (rosbags; no ROS needed).

    Each ``write_*`` method converts arrays to one message stamped ``stamp_ns`` (header
    and log time) in ``frame_id`` and appends it to ``topic``; a topic's connection is
    added on its first message, or up front with ``topics``. Use as a context manager::

        with BagWriter(path) as bag:
            bag.write_image(TOPIC_IMAGE, stamp_ns, rgb, 'rgb8')

    Args:
        path: the bag directory to create (rosbag2 layout: ``metadata.yaml`` plus
            ``<name>_0.mcap`` or ``.db3``).
        storage: ``'mcap'`` (default) or ``'sqlite3'``.
        overwrite: replace an existing bag or npz folder at ``path``.
        topics: ``(topic, msgtype)`` connections to add now, in this order, so that they
            exist even if no message is written to them.

    Raises:
        ConfigError: unknown ``storage``.
        OutputError: ``path`` exists and ``overwrite`` is False, or it is not a recording
            (see ``endo_depth_ros.outputs``).
        OSError: the directory cannot be created or written.
    """

    def __init__(self, path: str | Path, *, storage: str = 'mcap', overwrite: bool = False,
                 topics: Iterable[tuple[str, str]] = ()) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ConfigError(f'Unknown bag storage {storage!r}; expected one of {STORAGES}.')
        self.path = Path(path)
        outputs.prepare_recording_output(self.path, overwrite=overwrite)
        self._store = typestore()
        self._types = self._store.types
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        for topic, msgtype in topics:
            self._connection(topic, msgtype)

    def write_image(self, topic: str, stamp_ns: int, array: np.ndarray, encoding: str,
                    frame_id: str = CAMERA_FRAME) -> None:
        """``sensor_msgs/Image`` of ``array`` (e.g. (H, W, 3) uint8 ``'rgb8'``, ``'mono8'``)."""
        self._write(topic, stamp_ns, image_msg(self._types, self._header(stamp_ns, frame_id),
                                            array, encoding))

    def write_depth(self, topic: str, stamp_ns: int, depth: np.ndarray,
                    frame_id: str = CAMERA_FRAME) -> None:
        """``sensor_msgs/Image`` 32FC1 of depth (H, W) float32 metres, NaN invalid."""
        self.write_image(topic, stamp_ns, encodings.depth_to_encoding(depth, '32FC1'), '32FC1',
                         frame_id)

    def write_camera_info(self, topic: str, stamp_ns: int, intrinsics: Intrinsics,
                          frame_id: str = CAMERA_FRAME, *, baseline_m: float = 0.0) -> None:
        """``sensor_msgs/CameraInfo`` of ``intrinsics`` (pinhole written as plumb_bob, D = 0);
        ``baseline_m`` > 0 makes it a rectified right camera (``P[0,3] = -fx * B``)."""
        self._write(topic, stamp_ns, camera_info_msg(
            self._types, self._header(stamp_ns, frame_id), intrinsics, baseline_m))

    def write_pose(self, topic: str, stamp_ns: int, T: np.ndarray,
                   frame_id: str = WORLD_FRAME) -> None:
        """``geometry_msgs/PoseStamped`` of a 4x4 ``T_frame_camera`` (metres)."""
        self._write(topic, stamp_ns, pose_msg(self._types, self._header(stamp_ns, frame_id), T))

    def write_string(self, topic: str, stamp_ns: int, text: str) -> None:
        """``std_msgs/String`` holding ``text`` (log time ``stamp_ns``; it has no header)."""
        msg = self._types[STRING_TYPE](data=text)
        self._write(topic, stamp_ns, msg)

    def write_cloud(self, topic: str, stamp_ns: int, cloud: PointCloud,
                    frame_id: str = CAMERA_FRAME) -> None:
        """``sensor_msgs/PointCloud2``: x, y, z (and rgb as 0x00RRGGBB) float32, 16-byte points."""
        self._write(topic, stamp_ns, cloud_msg(self._types, self._header(stamp_ns, frame_id),
                                            cloud))

    def close(self) -> None:
        """Finish the bag (writes ``metadata.yaml``)."""
        self._writer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _header(self, stamp_ns: int, frame_id: str) -> Any:
        return header_msg(self._types, stamp_ns, frame_id)

    def _connection(self, topic: str, msgtype: str) -> Any:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self._store)
        return self._connections[topic]

    def _write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        self._writer.write(self._connection(topic, msg.__msgtype__), int(stamp_ns),
                           self._store.serialize_cdr(msg, msg.__msgtype__))


def write_sequence(
    path: str | Path,
    frames: Iterable[FrameLike],
    *,
    storage: str = 'mcap',
    overwrite: bool = False,
) -> int:
    """Write frames as a rosbag2 directory with image, camera info and ground-truth topics.

    Args:
        path: the bag directory to create (rosbag2 layout: ``metadata.yaml`` plus
            ``<name>_0.mcap`` or ``.db3``).
        frames: frames with ``stamp_ns``, ``rgb``, ``depth``, ``seg``, ``pose`` and
            ``intrinsics`` (e.g. ``synth.render_sequence(config)``); consumed lazily.
        storage: ``'mcap'`` (default) or ``'sqlite3'``.
        overwrite: replace an existing bag or npz folder at ``path``.

    Returns:
        The number of frames written.

    Raises:
        ConfigError: unknown ``storage``.
        OutputError: ``path`` exists and ``overwrite`` is False, or it is not a recording
            (see ``endo_depth_ros.outputs``).
        OSError: the directory cannot be created or written.
    """
    count = 0
    topics = ((TOPIC_IMAGE, IMAGE_TYPE), (TOPIC_CAMERA_INFO, CAMERA_INFO_TYPE),
              (TOPIC_DEPTH, IMAGE_TYPE), (TOPIC_POSE, POSE_TYPE), (TOPIC_SEG, IMAGE_TYPE))
    with BagWriter(path, storage=storage, overwrite=overwrite, topics=topics) as bag:
        for frame in frames:
            stamp = int(frame.stamp_ns)
            bag.write_image(TOPIC_IMAGE, stamp, frame.rgb, 'rgb8')
            bag.write_camera_info(TOPIC_CAMERA_INFO, stamp, frame.intrinsics)
            bag.write_depth(TOPIC_DEPTH, stamp, frame.depth)
            bag.write_pose(TOPIC_POSE, stamp, frame.pose)
            bag.write_image(TOPIC_SEG, stamp, np.asarray(frame.seg, np.uint8), 'mono8')
            right = getattr(frame, 'right', None)
            if right is not None:
                bag.write_image(TOPIC_RIGHT_IMAGE, stamp, right.rgb, 'rgb8', RIGHT_CAMERA_FRAME)
                bag.write_camera_info(TOPIC_RIGHT_CAMERA_INFO, stamp, frame.intrinsics,
                                      RIGHT_CAMERA_FRAME,
                                      baseline_m=float(getattr(frame, 'baseline_m', 0.0)))
                bag.write_depth(TOPIC_RIGHT_DEPTH, stamp, right.depth, RIGHT_CAMERA_FRAME)
            kinematic = getattr(frame, 'kinematic_pose', None)
            if kinematic is not None:
                bag.write_pose(TOPIC_KINEMATICS, stamp, kinematic, KINEMATICS_FRAME)
            count += 1
    return count
