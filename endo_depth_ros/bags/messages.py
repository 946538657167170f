"""ROS 2 messages built from arrays with rosbags' type store (no rclpy needed).

The layouts match the node's (``ros/conversions``), so a recording written here reads
like one recorded from the node.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from endo_depth_ros import encodings
from endo_depth_ros.bags.layout import (
    CAMERA_INFO_TYPE,
    IMAGE_TYPE,
    NS_PER_S,
    POINT_CLOUD_TYPE,
    POSE_TYPE,
)
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BagError
from endo_depth_ros.geometry import PointCloud, pose_to_translation_quaternion


def typestore() -> Any:
    """The rosbags type store used for writing (the newest ROS 2 release it knows)."""
    from rosbags.typesys import Stores, get_typestore

    for name in ('ROS2_KILTED', 'ROS2_JAZZY', 'ROS2_HUMBLE'):
        store = getattr(Stores, name, None)
        if store is not None:
            return get_typestore(store)
    raise BagError('rosbags knows none of the ROS 2 releases Kilted, Jazzy or Humble.')


def header_msg(types: dict[str, Any], stamp_ns: int, frame_id: str) -> Any:
    """A ``std_msgs/Header`` stamped ``stamp_ns`` (int nanoseconds) in ``frame_id``."""
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=frame_id)


def image_msg(types: dict[str, Any], header: Any, array: np.ndarray, encoding: str) -> Any:
    """A ``sensor_msgs/Image`` of ``array`` in ``encoding`` (e.g. (H, W, 3) uint8 ``rgb8``)."""
    data, step = encodings.encode_image(array, encoding)
    return types[IMAGE_TYPE](header=header, height=array.shape[0], width=array.shape[1],
                             encoding=encoding, is_bigendian=0, step=step, data=data)


def camera_info_msg(types: dict[str, Any], header: Any, intrinsics: Intrinsics,
                 baseline_m: float = 0.0) -> Any:
    """A ``sensor_msgs/CameraInfo``; ``baseline_m`` > 0 makes it a rectified right camera."""
    f = encodings.intrinsics_to_fields(intrinsics)
    f['p'][3] = -intrinsics.fx * baseline_m
    model, d = f['distortion_model'], f['d']
    if model in ('', 'none'):
        # A pinhole camera is written the way ROS calibration tools do: plumb_bob, D = 0.
        model, d = 'plumb_bob', np.zeros(5)
    roi = types['sensor_msgs/msg/RegionOfInterest'](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return types[CAMERA_INFO_TYPE](
        header=header, height=f['height'], width=f['width'], distortion_model=model,
        d=np.asarray(d, np.float64), k=f['k'], r=f['r'], p=f['p'], binning_x=0, binning_y=0,
        roi=roi)


def pose_msg(types: dict[str, Any], header: Any, T: np.ndarray) -> Any:
    """A ``geometry_msgs/PoseStamped`` of a 4x4 transform (metres)."""
    t, q = pose_to_translation_quaternion(T)
    point = types['geometry_msgs/msg/Point'](x=float(t[0]), y=float(t[1]), z=float(t[2]))
    quaternion = types['geometry_msgs/msg/Quaternion'](
        x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
    return types[POSE_TYPE](
        header=header, pose=types['geometry_msgs/msg/Pose'](position=point,
                                                             orientation=quaternion))


def cloud_msg(types: dict[str, Any], header: Any, cloud: PointCloud) -> Any:
    """A ``sensor_msgs/PointCloud2``: x, y, z (and packed rgb) float32, 16-byte points."""
    # The layout of ros.conversions.cloud_to_pointcloud2 (which builds rclpy messages).
    points = np.asarray(cloud.points, dtype='<f4').reshape(-1, 3)
    packed = np.zeros((points.shape[0], 4), dtype='<f4')
    packed[:, :3] = points
    names = ['x', 'y', 'z']
    if cloud.colors is not None:
        rgb = np.asarray(cloud.colors, dtype=np.uint32).reshape(-1, 3)
        # PCL's packed colour: 0x00RRGGBB in the bytes of a float32.
        packed.view('<u4')[:, 3] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
        names.append('rgb')
    point_field = types['sensor_msgs/msg/PointField']
    point_fields = [point_field(name=n, offset=4 * i, datatype=point_field.FLOAT32, count=1)
                    for i, n in enumerate(names)]
    return types[POINT_CLOUD_TYPE](
        header=header, height=cloud.height, width=cloud.width, fields=point_fields,
        is_bigendian=False, point_step=16, row_step=16 * cloud.width,
        data=packed.view(np.uint8).ravel(), is_dense=cloud.is_dense)
