"""ROS 2 messages <-> the package's arrays and objects, at the door of the node.

Thin by design: pixel layouts live in :mod:`endo_depth_ros.encodings` (shared with the
rosbags reader/writer), geometry in :mod:`endo_depth_ros.geometry`; this module only
moves fields between rclpy message objects and those functions.

Conventions: stamps are int nanoseconds, images RGB uint8 (H, W, 3), depth (H, W)
float32 metres with NaN invalid, poses 4x4 float64 ``T_frame_child``.
"""

from __future__ import annotations

import array

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseStamped, Quaternion, TransformStamped, Vector3
from nav_msgs.msg import Odometry
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from endo_depth_ros import encodings
from endo_depth_ros.camera import Intrinsics, check_camera_matrix, crop_and_bin
from endo_depth_ros.errors import BadInputError
from endo_depth_ros.geometry import (
    PointCloud,
    pose_from_translation_quaternion,
    pose_to_translation_quaternion,
)

_NS_PER_S = 1_000_000_000

#: Bytes per point in the PointCloud2 messages we publish: x, y, z, rgb (or padding).
POINT_STEP = 16
_XYZ_FIELDS = (('x', 0), ('y', 4), ('z', 8))
_XYZ_THEN_4_BYTES = np.dtype([('xyz', 'V12'), ('rest', 'V4')])


# ---------------------------------------------------------------------------------------
# Stamps and headers


def stamp_to_ns(stamp: Time) -> int:
    """Nanoseconds since the epoch of a ``builtin_interfaces/Time``."""
    return int(stamp.sec) * _NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    """``builtin_interfaces/Time`` of an int nanosecond stamp."""
    sec, nanosec = divmod(int(stamp_ns), _NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def make_header(stamp_ns: int, frame_id: str) -> Header:
    """``std_msgs/Header`` with the given stamp (ns) and frame."""
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def _byte_array(data: np.ndarray) -> array.array:
    """One copy into the ``array.array('B')`` rclpy stores (skips per-element checks)."""
    out = array.array('B')
    out.frombytes(np.ascontiguousarray(data).data.cast('B'))
    return out


# ---------------------------------------------------------------------------------------
# Images in


def image_to_array(msg: Image) -> np.ndarray:
    """Pixels of a ``sensor_msgs/Image`` (see :func:`encodings.decode_image`).

    Returns:
        (H, W) or (H, W, C) array in the message's encoding and channel order; a
        view of the message data when the layout allows (copy it before writing).

    Raises:
        BadInputError: unsupported encoding, empty image, or data/step mismatch.
    """
    return encodings.decode_image(
        msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, msg.data)


def image_to_rgb(msg: Image, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a colour or grey ``sensor_msgs/Image``.

    Args:
        msg: the image.
        max_pixels: refuse larger images, from the header, before touching the data
            (None: no limit).

    Raises:
        BadInputError: as :func:`image_to_array`, reason ``'encoding'`` for depth
            encodings, ``'too_large'`` above ``max_pixels``.
    """
    encodings.check_pixels(msg.width, msg.height, max_pixels)
    return encodings.to_rgb(image_to_array(msg), msg.encoding)


def image_to_depth(msg: Image) -> np.ndarray:
    """(H, W) float32 metres (NaN invalid) of a 32FC1 (m) or 16UC1 (mm) depth image.

    Raises:
        BadInputError: as :func:`image_to_array`, or reason ``'encoding'`` for other
            encodings.
    """
    return encodings.depth_from_encoding(image_to_array(msg), msg.encoding)


def compressed_to_array(msg: CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """Decoded ``sensor_msgs/CompressedImage``: (H, W, 3) uint8 RGB or (H, W) grey.

    Args:
        msg: the compressed image.
        max_pixels: refuse larger images, from the PNG/JPEG header, before decoding
            (None: no limit).

    Raises:
        BadInputError: format neither JPEG nor PNG, no data, undecodable bytes, or
            reason ``'too_large'`` above ``max_pixels``.
    """
    return encodings.decode_compressed(msg.format, msg.data, max_pixels)


def compressed_to_rgb(msg: CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a ``sensor_msgs/CompressedImage`` (grey is replicated)."""
    image = compressed_to_array(msg, max_pixels)
    if image.ndim == 3:
        return image
    return encodings.to_rgb(image, 'mono8' if image.dtype == np.uint8 else 'mono16')


def camera_info_to_intrinsics(
    msg: CameraInfo, image_size: tuple[int, int] | None = None
) -> Intrinsics:
    """Intrinsics of the images a ``sensor_msgs/CameraInfo`` describes.

    Per REP-104, ``K`` and ``width``/``height`` describe the full sensor and the images
    hold ``roi`` (all zero: the full sensor) binned by ``binning_x``/``binning_y``; the
    result describes those images (see :func:`camera.crop_and_bin`). The camera matrix
    must be plausible for the sensor (:func:`camera.check_camera_matrix`).

    Args:
        msg: the camera info.
        image_size: ``(width, height)`` of the images it must describe, or None.

    Raises:
        BadInputError: reason ``'intrinsics'`` for an uncalibrated, invalid or
            implausible camera, or a region of interest / binning that does not fit;
            ``'size_mismatch'`` when the size differs from ``image_size``.
    """
    sensor = encodings.intrinsics_from_fields(
        msg.width, msg.height, msg.k, msg.d, msg.distortion_model)
    check_camera_matrix(np.asarray(msg.k, dtype=np.float64), sensor.width, sensor.height)
    roi = msg.roi
    intrinsics = crop_and_bin(sensor, (roi.x_offset, roi.y_offset, roi.width, roi.height),
                              (msg.binning_x, msg.binning_y))
    if image_size is not None:
        encodings.check_size(intrinsics, *image_size)
    return intrinsics


def rescaled_camera_info(
    info: CameraInfo, intrinsics: Intrinsics, stamp_ns: int, frame_id: str
) -> CameraInfo:
    """The camera info of ``info``'s camera seen as images of ``intrinsics``.

    For outputs at a working size (or cut and binned inputs): ``K`` is ``intrinsics``,
    ``P`` goes through the same per-axis map from the sensor's pixels as ``K`` did,
    ``R``, ``D`` and the distortion model are kept, and ``binning``/``roi`` are reset
    because the new size, ``K`` and ``P`` already describe the published image.

    Args:
        info: the input camera info (its ``K`` and ``P`` refer to the full sensor).
        intrinsics: the camera of the published image (from the same sensor).
        stamp_ns: stamp of the output header (ns).
        frame_id: frame of the output header.
    """
    K_in = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    K_out = intrinsics.K
    # u_out = a * u_in + b on each axis (crop, binning and rescaling are all of this form).
    a = np.array([K_out[0, 0] / K_in[0, 0], K_out[1, 1] / K_in[1, 1]])
    b = np.array([K_out[0, 2] - a[0] * K_in[0, 2], K_out[1, 2] - a[1] * K_in[1, 2]])
    P_in = np.asarray(info.p, dtype=np.float64).reshape(3, 4)
    if not np.any(P_in):
        P_out = np.hstack([K_out, np.zeros((3, 1))])
    else:
        P_out = P_in.copy()
        for row in (0, 1):
            P_out[row] = a[row] * P_in[row] + b[row] * P_in[2]
    msg = CameraInfo(header=make_header(stamp_ns, frame_id), width=intrinsics.width,
                     height=intrinsics.height, distortion_model=info.distortion_model,
                     d=info.d, k=K_out.reshape(-1), r=info.r, p=P_out.reshape(-1))
    return msg


# ---------------------------------------------------------------------------------------
# Images and camera info out


def array_to_image(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Image:
    """``sensor_msgs/Image`` holding ``array`` in ``encoding`` (little-endian, no padding).

    Raises:
        BadInputError: the array does not fit the encoding (see
            :func:`encodings.encode_image`).
    """
    data, step = encodings.encode_image(array, encoding)
    msg = Image(header=make_header(stamp_ns, frame_id), height=int(array.shape[0]),
                width=int(array.shape[1]), encoding=encoding, is_bigendian=0, step=step)
    msg.data = _byte_array(data)
    return msg


def rgb_to_image(
    rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = 'rgb8'
) -> Image:
    """``sensor_msgs/Image`` of an (H, W, 3) uint8 RGB image, as ``rgb8`` or ``bgr8``."""
    if encoding not in ('rgb8', 'bgr8'):
        raise BadInputError(
            f'Colour images are published as rgb8 or bgr8, not {encoding!r}.', 'encoding')
    pixels = rgb if encoding == 'rgb8' else np.asarray(rgb)[:, :, ::-1]
    return array_to_image(pixels, encoding, stamp_ns, frame_id)


def depth_to_image(
    depth: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = '32FC1'
) -> Image:
    """REP-118 depth image: ``32FC1`` metres with NaN invalid, or ``16UC1`` millimetres
    with 0 invalid (see :func:`encodings.depth_to_encoding`)."""
    return array_to_image(encodings.depth_to_encoding(depth, encoding), encoding,
                          stamp_ns, frame_id)


def intrinsics_to_camera_info(
    intrinsics: Intrinsics, stamp_ns: int, frame_id: str
) -> CameraInfo:
    """``sensor_msgs/CameraInfo`` of an unrectified camera (R = I, P = [K | 0])."""
    fields = encodings.intrinsics_to_fields(intrinsics)
    msg = CameraInfo(header=make_header(stamp_ns, frame_id), width=fields['width'],
                     height=fields['height'], distortion_model=fields['distortion_model'],
                     k=fields['k'], r=fields['r'], p=fields['p'])
    msg.d = array.array('d', fields['d'].tolist())
    return msg


# ---------------------------------------------------------------------------------------
# Point clouds


def cloud_to_pointcloud2(cloud: PointCloud, stamp_ns: int, frame_id: str) -> PointCloud2:
    """``sensor_msgs/PointCloud2`` in the layout PCL and RViz read.

    Fields ``x, y, z`` float32 at offsets 0, 4, 8 and, with colours, ``rgb`` float32 at
    12 holding the bytes 0xFFRRGGBB (alpha 255, as PCL packs it); ``point_step`` 16
    (bytes 12..15 are zero padding without colours), little-endian, ``row_step =
    point_step * width``; organised clouds keep their (h, w) layout, others are 1 x N;
    ``is_dense`` only when every point is finite.
    """
    points = np.ascontiguousarray(cloud.points, dtype='<f4').reshape(-1, 3)
    # Fill the message's own byte array in place: no intermediate buffer.
    data = array.array('B', b'\0') * (points.shape[0] * POINT_STEP)
    packed = np.frombuffer(data, dtype=np.uint8).reshape(-1, POINT_STEP)
    # Copy whole 12-byte xyz triples at once (much faster than float-by-float columns).
    packed.view(_XYZ_THEN_4_BYTES)[:, 0]['xyz'] = points.view(np.dtype('V12'))[:, 0]
    fields = [PointField(name=name, offset=offset, datatype=PointField.FLOAT32, count=1)
              for name, offset in _XYZ_FIELDS]
    if cloud.colors is not None:
        rgb = cloud.colors.reshape(-1, 3)
        # 0xFFRRGGBB as a little-endian uint32: bytes B, G, R, A (opaque, PCL's default).
        packed[:, 12] = rgb[:, 2]
        packed[:, 13] = rgb[:, 1]
        packed[:, 14] = rgb[:, 0]
        packed[:, 15] = 255
        fields.append(PointField(name='rgb', offset=12, datatype=PointField.FLOAT32, count=1))
    msg = PointCloud2(header=make_header(stamp_ns, frame_id), height=cloud.height,
                      width=cloud.width, fields=fields, is_bigendian=False,
                      point_step=POINT_STEP, row_step=POINT_STEP * cloud.width,
                      is_dense=cloud.is_dense)
    msg.data = data
    return msg


def pointcloud2_to_arrays(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray | None]:
    """Read back a cloud written by :func:`cloud_to_pointcloud2`.

    Returns:
        ``(points, colors)``: (height * width, 3) float32 metres (NaN kept) and
        (height * width, 3) uint8 RGB or None.

    Raises:
        BadInputError: reason ``'encoding'`` when the layout is not ours (other fields,
            offsets, point_step or byte order).
    """
    names = [(f.name, f.offset, f.datatype) for f in msg.fields]
    xyz = [(name, offset, PointField.FLOAT32) for name, offset in _XYZ_FIELDS]
    if names not in (xyz, [*xyz, ('rgb', 12, PointField.FLOAT32)]) or (
            msg.point_step != POINT_STEP or msg.is_bigendian):
        raise BadInputError(
            f'PointCloud2 layout {names} with point_step {msg.point_step} is not '
            f'x, y, z(, rgb) float32 little-endian with point_step {POINT_STEP}.', 'encoding')
    count = int(msg.height) * int(msg.width)
    raw = np.frombuffer(msg.data, dtype='<f4')
    if raw.size != count * 4:
        raise BadInputError(
            f'PointCloud2 data has {raw.size * 4} bytes, expected {count * POINT_STEP}.',
            'buffer_size')
    packed = raw.reshape(count, 4)
    points = packed[:, :3].astype(np.float32)
    if len(names) == 3:
        return points, None
    rgb = packed.view('<u4')[:, 3]
    colors = np.stack([(rgb >> 16) & 0xFF, (rgb >> 8) & 0xFF, rgb & 0xFF], axis=1)
    return points, colors.astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Poses


def pose_to_msg(T: np.ndarray) -> Pose:
    """``geometry_msgs/Pose`` of a 4x4 rigid transform.

    Raises:
        BadInputError: reason ``'pose'`` for a non-finite or non-4x4 matrix.
    """
    t, q = pose_to_translation_quaternion(T)
    msg = Pose()
    msg.position.x, msg.position.y, msg.position.z = (float(c) for c in t)
    msg.orientation = Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
    return msg


def pose_to_pose_stamped(T: np.ndarray, stamp_ns: int, frame_id: str) -> PoseStamped:
    """``geometry_msgs/PoseStamped`` of ``T_frame_child`` (e.g. T_odom_camera in ``odom``)."""
    return PoseStamped(header=make_header(stamp_ns, frame_id), pose=pose_to_msg(T))


def pose_to_odometry(
    T: np.ndarray,
    stamp_ns: int,
    frame_id: str,
    child_frame_id: str,
    covariance: np.ndarray | None = None,
    twist: np.ndarray | None = None,
    twist_covariance: np.ndarray | None = None,
) -> Odometry:
    """``nav_msgs/Odometry`` of the pose ``T_frame_child``.

    Args:
        T: 4x4 pose of ``child_frame_id`` in ``frame_id`` (metres).
        stamp_ns: stamp (ns).
        frame_id: parent frame, e.g. ``odom``.
        child_frame_id: moving frame, e.g. ``endoscope_optical_frame``.
        covariance: 6x6 pose covariance (x, y, z, rot x, rot y, rot z) or None (zeros).
        twist: (6,) linear (m/s) and angular (rad/s) velocity in ``child_frame_id``, or
            None (zeros).
        twist_covariance: 6x6 twist covariance or None (zeros).
    """
    msg = Odometry(header=make_header(stamp_ns, frame_id), child_frame_id=child_frame_id)
    msg.pose.pose = pose_to_msg(T)
    if covariance is not None:
        msg.pose.covariance = _covariance(covariance)
    if twist is not None:
        v = np.asarray(twist, dtype=np.float64).reshape(6)
        msg.twist.twist.linear = Vector3(x=float(v[0]), y=float(v[1]), z=float(v[2]))
        msg.twist.twist.angular = Vector3(x=float(v[3]), y=float(v[4]), z=float(v[5]))
    if twist_covariance is not None:
        msg.twist.covariance = _covariance(twist_covariance)
    return msg


def _covariance(matrix: np.ndarray) -> np.ndarray:
    cov = np.asarray(matrix, dtype=np.float64)
    if cov.shape != (6, 6):
        raise BadInputError(f'Covariance must be 6x6, got shape {cov.shape}.', 'pose')
    return cov.reshape(36).copy()


def pose_to_transform(
    T: np.ndarray, stamp_ns: int, frame_id: str, child_frame_id: str
) -> TransformStamped:
    """``geometry_msgs/TransformStamped`` (for tf2) of the pose ``T_frame_child``."""
    t, q = pose_to_translation_quaternion(T)
    msg = TransformStamped(header=make_header(stamp_ns, frame_id), child_frame_id=child_frame_id)
    msg.transform.translation = Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2]))
    msg.transform.rotation = Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                        w=float(q[3]))
    return msg


def pose_from_msg(msg: Pose) -> np.ndarray:
    """4x4 float64 transform of a ``geometry_msgs/Pose``."""
    p, o = msg.position, msg.orientation
    return pose_from_translation_quaternion((p.x, p.y, p.z), (o.x, o.y, o.z, o.w))
