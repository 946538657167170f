"""Tests of endo_depth_ros.ros.conversions with real rclpy message classes (no middleware)."""

from __future__ import annotations

import array
import math
import struct
from typing import Any

import cv2
from geometry_msgs.msg import PoseStamped, TransformStamped
from nav_msgs.msg import Odometry
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError
from endo_depth_ros.geometry import CloudConfig, PointCloud, make_cloud
from endo_depth_ros.ros import conversions as conv

H, W = 48, 64
STAMP = 1_700_000_000_123_456_789
FRAME = 'endoscope_optical_frame'
INTR = Intrinsics(W, H, 60.0, 61.0, 31.5, 23.5, 'plumb_bob', (-0.1, 0.01, 0.001, 0.0, 0.0))


def _round_trip(msg: Any) -> Any:
    """Serialise and deserialise: proves every field has a type the middleware accepts."""
    return deserialize_message(serialize_message(msg), type(msg))


def _random(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == 'f':
        return rng.uniform(0.01, 0.2, shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize(
    ('encoding', 'shape', 'dtype'),
    [
        ('rgb8', (H, W, 3), np.uint8), ('bgr8', (H, W, 3), np.uint8),
        ('rgba8', (H, W, 4), np.uint8), ('bgra8', (H, W, 4), np.uint8),
        ('mono8', (H, W), np.uint8), ('mono16', (H, W), np.uint16),
        ('16UC1', (H, W), np.uint16), ('32FC1', (H, W), np.float32),
    ],
)
def test_image_message_round_trip(encoding: str, shape: tuple[int, ...], dtype: type) -> None:
    image = _random(shape, dtype)
    msg = _round_trip(conv.array_to_image(image, encoding, STAMP, FRAME))
    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (H, W, encoding, 0)
    assert msg.step == image.nbytes // H and len(msg.data) == image.nbytes
    assert msg.header.frame_id == FRAME and conv.stamp_to_ns(msg.header.stamp) == STAMP
    np.testing.assert_array_equal(conv.image_to_array(msg), image)


@pytest.mark.parametrize('big_endian', [False, True])
def test_image_with_padded_step_and_byte_order_is_decoded(big_endian: bool) -> None:
    depth = _random((H, W), np.float32)
    rows = depth.astype('>f4' if big_endian else '<f4').view(np.uint8).reshape(H, -1)
    padded = np.hstack([rows, np.zeros((H, 16), np.uint8)])
    msg = Image(height=H, width=W, encoding='32FC1', is_bigendian=int(big_endian),
                step=W * 4 + 16)
    msg.data = array.array('B', padded.tobytes())
    np.testing.assert_array_equal(conv.image_to_depth(msg), depth)


def test_bgr_image_becomes_rgb() -> None:
    rgb = _random((H, W, 3), np.uint8)
    msg = conv.rgb_to_image(rgb, STAMP, FRAME, encoding='bgr8')
    assert msg.encoding == 'bgr8'
    assert bytes(msg.data[:3]) == bytes(rgb[0, 0, ::-1])
    np.testing.assert_array_equal(conv.image_to_rgb(msg), rgb)


def test_rgb_to_image_rejects_other_encodings() -> None:
    with pytest.raises(BadInputError, match="'mono8'"):
        conv.rgb_to_image(_random((H, W, 3), np.uint8), STAMP, FRAME, encoding='mono8')


@pytest.mark.parametrize('encoding', ['32FC1', '16UC1'])
def test_depth_image_round_trip(encoding: str) -> None:
    depth = np.round(_random((H, W), np.float32), 3)  # whole millimetres survive 16UC1
    depth[3, 4] = np.nan
    msg = _round_trip(conv.depth_to_image(depth, STAMP, FRAME, encoding=encoding))
    assert isinstance(msg, Image) and msg.encoding == encoding
    back = conv.image_to_depth(msg)
    assert np.isnan(back[3, 4])
    np.testing.assert_allclose(back, depth, rtol=1e-6, atol=1e-7)


def test_image_with_short_buffer_is_bad_input() -> None:
    msg = conv.array_to_image(_random((H, W, 3), np.uint8), 'rgb8', STAMP, FRAME)
    msg.data = msg.data[:-1]
    with pytest.raises(BadInputError, match='9215 bytes') as info:
        conv.image_to_rgb(msg)
    assert info.value.reason == 'buffer_size'


def test_image_with_unknown_encoding_is_bad_input() -> None:
    msg = conv.array_to_image(_random((H, W), np.uint8), 'mono8', STAMP, FRAME)
    msg.encoding = 'yuv422_yuy2'
    with pytest.raises(BadInputError, match='yuv422_yuy2') as info:
        conv.image_to_array(msg)
    assert info.value.reason == 'encoding'


@pytest.mark.parametrize(('ext', 'fmt'), [('.png', 'png'), ('.jpg', 'rgb8; jpeg compressed bgr8')])
def test_compressed_image_decodes_to_rgb(ext: str, fmt: str) -> None:
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.dstack([xx * 4, yy * 5, np.full_like(xx, 90)]).astype(np.uint8)
    ok, payload = cv2.imencode(ext, rgb[:, :, ::-1])
    assert ok
    msg = CompressedImage(format=fmt)
    msg.data = array.array('B', payload.tobytes())
    out = conv.compressed_to_rgb(_round_trip(msg))
    assert out.shape == (H, W, 3)
    assert np.abs(out.astype(int) - rgb).max() <= (0 if ext == '.png' else 12)


def test_grey_compressed_image_is_replicated_to_rgb() -> None:
    grey = _random((H, W), np.uint8)
    ok, payload = cv2.imencode('.png', grey)
    assert ok
    msg = CompressedImage(format='mono8; png compressed mono8')
    msg.data = array.array('B', payload.tobytes())
    out = conv.compressed_to_rgb(msg)
    np.testing.assert_array_equal(out[:, :, 1], grey)


def test_camera_info_round_trip() -> None:
    msg = _round_trip(conv.intrinsics_to_camera_info(INTR, STAMP, FRAME))
    assert isinstance(msg, CameraInfo)
    assert msg.distortion_model == 'plumb_bob' and list(msg.d) == list(INTR.distortion)
    assert list(msg.p) == [60.0, 0.0, 31.5, 0.0, 0.0, 61.0, 23.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert conv.camera_info_to_intrinsics(msg, image_size=(W, H)) == INTR


def test_camera_info_for_another_image_size_is_a_size_mismatch() -> None:
    msg = conv.intrinsics_to_camera_info(INTR, STAMP, FRAME)
    with pytest.raises(BadInputError, match='64x48 images but the image is 320x256') as info:
        conv.camera_info_to_intrinsics(msg, image_size=(320, 256))
    assert info.value.reason == 'size_mismatch'


def test_uncalibrated_camera_info_is_bad_input() -> None:
    msg = CameraInfo(width=W, height=H, distortion_model='plumb_bob')
    with pytest.raises(BadInputError, match='uncalibrated') as info:
        conv.camera_info_to_intrinsics(msg)
    assert info.value.reason == 'intrinsics'


def test_camera_info_with_nan_focal_length_is_bad_input() -> None:
    msg = conv.intrinsics_to_camera_info(INTR, STAMP, FRAME)
    msg.k[0] = math.nan
    with pytest.raises(BadInputError, match='fx is not finite: nan'):
        conv.camera_info_to_intrinsics(msg)


def _read_field(msg: PointCloud2, row: int, col: int, name: str, fmt: str) -> object:
    """Read one field of one point straight from the bytes, as the PointCloud2 spec says."""
    field = next(f for f in msg.fields if f.name == name)
    offset = row * msg.row_step + col * msg.point_step + field.offset
    endian = '>' if msg.is_bigendian else '<'
    return struct.unpack_from(endian + fmt, bytes(msg.data), offset)[0]


def _coloured_cloud(organized: bool) -> tuple[PointCloud, np.ndarray]:
    depth = np.full((H, W), 0.05, np.float32)
    depth[2, 2] = np.nan  # decimated pixel (1, 1)
    rgb = _random((H, W, 3), np.uint8, seed=7)
    pin = Intrinsics(W, H, 60.0, 61.0, 31.5, 23.5)
    return make_cloud(depth, pin, CloudConfig(organized=organized, stride=2), rgb=rgb), rgb


def test_pointcloud2_byte_layout_matches_the_spec_field_by_field() -> None:
    cloud, rgb = _coloured_cloud(organized=True)
    msg = _round_trip(conv.cloud_to_pointcloud2(cloud, STAMP, FRAME))
    assert isinstance(msg, PointCloud2)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ('x', 0, PointField.FLOAT32, 1), ('y', 4, PointField.FLOAT32, 1),
        ('z', 8, PointField.FLOAT32, 1), ('rgb', 12, PointField.FLOAT32, 1)]
    assert PointField.FLOAT32 == 7
    assert (msg.height, msg.width) == (H // 2, W // 2)
    assert msg.point_step == 16 and msg.row_step == 16 * (W // 2)
    assert not msg.is_bigendian and not msg.is_dense  # one NaN point at (1, 1)
    assert len(msg.data) == msg.row_step * msg.height
    assert msg.header.frame_id == FRAME and conv.stamp_to_ns(msg.header.stamp) == STAMP
    for row, col in [(0, 0), (5, 9), (H // 2 - 1, W // 2 - 1)]:
        for axis, name in enumerate('xyz'):
            assert _read_field(msg, row, col, name, 'f') == cloud.points[row, col, axis]
        packed = _read_field(msg, row, col, 'rgb', 'I')
        r, g, b = rgb[2 * row, 2 * col]
        # 0xFFRRGGBB: alpha 255 (opaque), as PCL packs colours.
        assert packed == (0xFF << 24) | (int(r) << 16) | (int(g) << 8) | int(b)
    assert math.isnan(_read_field(msg, 1, 1, 'z', 'f'))  # type: ignore[arg-type]


def test_unorganised_cloud_is_one_dense_row() -> None:
    cloud, _ = _coloured_cloud(organized=False)
    msg = conv.cloud_to_pointcloud2(cloud, STAMP, FRAME)
    n = cloud.points.shape[0]
    assert (msg.height, msg.width, msg.row_step) == (1, n, 16 * n) and msg.is_dense
    assert _read_field(msg, 0, n - 1, 'x', 'f') == cloud.points[n - 1, 0]
    points, colors = conv.pointcloud2_to_arrays(msg)
    np.testing.assert_array_equal(points, cloud.points)
    np.testing.assert_array_equal(colors, cloud.colors)


def test_cloud_without_colour_has_xyz_fields_and_zero_padding() -> None:
    cloud = PointCloud(points=np.array([[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]], np.float32),
                       colors=None, organized=False)
    msg = conv.cloud_to_pointcloud2(cloud, STAMP, FRAME)
    assert [f.name for f in msg.fields] == ['x', 'y', 'z'] and msg.point_step == 16
    assert bytes(msg.data[12:16]) == b'\x00' * 4
    points, colors = conv.pointcloud2_to_arrays(msg)
    assert colors is None
    np.testing.assert_array_equal(points, cloud.points)


def test_foreign_pointcloud2_layout_is_rejected() -> None:
    msg = PointCloud2(point_step=12, fields=[
        PointField(name='x', offset=0, datatype=PointField.FLOAT32, count=1)])
    with pytest.raises(BadInputError, match='point_step 12') as info:
        conv.pointcloud2_to_arrays(msg)
    assert info.value.reason == 'encoding'


def _pose(seed: int = 1) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], _ = cv2.Rodrigues(np.random.default_rng(seed).normal(size=3))
    T[:3, 3] = (0.01, -0.02, 0.3)
    return T


def test_pose_stamped_round_trip() -> None:
    T = _pose()
    msg = _round_trip(conv.pose_to_pose_stamped(T, STAMP, 'odom'))
    assert isinstance(msg, PoseStamped) and msg.header.frame_id == 'odom'
    np.testing.assert_allclose(conv.pose_from_msg(msg.pose), T, atol=1e-12)


def test_odometry_carries_child_frame_covariance_and_twist() -> None:
    T = _pose()
    cov = np.diag([1e-6, 2e-6, 3e-6, 1e-4, 2e-4, 3e-4])
    cov[0, 5] = 7e-7
    twist = np.array([0.001, 0.0, 0.03, 0.0, 0.1, 0.0])
    msg = _round_trip(conv.pose_to_odometry(T, STAMP, 'odom', FRAME, covariance=cov,
                                            twist=twist, twist_covariance=np.eye(6)))
    assert isinstance(msg, Odometry)
    assert (msg.header.frame_id, msg.child_frame_id) == ('odom', FRAME)
    np.testing.assert_allclose(conv.pose_from_msg(msg.pose.pose), T, atol=1e-12)
    assert msg.pose.covariance[5] == 7e-7 and msg.pose.covariance[35] == 3e-4  # row-major
    assert msg.twist.twist.linear.z == 0.03 and msg.twist.twist.angular.y == 0.1
    assert msg.twist.covariance[7] == 1.0


def test_odometry_without_covariance_or_twist_has_zeros() -> None:
    msg = conv.pose_to_odometry(np.eye(4), STAMP, 'odom', FRAME)
    assert not np.any(msg.pose.covariance) and msg.twist.twist.linear.x == 0.0
    assert msg.pose.pose.orientation.w == 1.0


def test_odometry_rejects_a_covariance_that_is_not_6x6() -> None:
    with pytest.raises(BadInputError, match=r'6x6, got shape \(3, 3\)'):
        conv.pose_to_odometry(np.eye(4), STAMP, 'odom', FRAME, covariance=np.eye(3))


def test_transform_stamped_matches_the_pose() -> None:
    T = _pose(2)
    msg = _round_trip(conv.pose_to_transform(T, STAMP, 'odom', FRAME))
    assert isinstance(msg, TransformStamped) and msg.child_frame_id == FRAME
    tr, rot = msg.transform.translation, msg.transform.rotation
    pose = conv.pose_to_pose_stamped(T, STAMP, 'odom').pose
    assert (tr.x, tr.y, tr.z) == (pose.position.x, pose.position.y, pose.position.z)
    assert (rot.x, rot.y, rot.z, rot.w) == (
        pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w)


def test_non_finite_pose_is_bad_input() -> None:
    T = np.eye(4)
    T[0, 3] = np.inf
    with pytest.raises(BadInputError, match='finite 4x4') as info:
        conv.pose_to_pose_stamped(T, STAMP, 'odom')
    assert info.value.reason == 'pose'


@pytest.mark.parametrize('stamp_ns', [0, 1, 999_999_999, 1_000_000_000, STAMP])
def test_stamp_round_trip(stamp_ns: int) -> None:
    stamp = conv.ns_to_stamp(stamp_ns)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert conv.stamp_to_ns(stamp) == stamp_ns
    assert stamp.sec == stamp_ns // 1_000_000_000


def test_camera_info_at_the_working_size_maps_k_and_p_like_the_pixels() -> None:
    sensor = Intrinsics(1920, 1080, 1000.0, 1000.0, 959.5, 539.5)
    info = conv.intrinsics_to_camera_info(sensor, STAMP, FRAME)
    p = np.asarray(info.p).reshape(3, 4)
    p[0, 3] = -50.0  # a stereo baseline term must be scaled too
    info.p = p.reshape(-1)
    info.binning_x = info.binning_y = 1
    working = sensor.scaled(640, 360)
    out = conv.rescaled_camera_info(info, working, STAMP + 1, 'other')
    assert (out.width, out.height, out.binning_x, out.binning_y) == (640, 360, 0, 0)
    np.testing.assert_allclose(np.asarray(out.k).reshape(3, 3), working.K)
    np.testing.assert_allclose(np.asarray(out.p).reshape(3, 4)[:, :3], working.K)
    assert out.p[3] == pytest.approx(-50.0 / 3)
    assert out.header.frame_id == 'other' and conv.stamp_to_ns(out.header.stamp) == STAMP + 1
    # The camera_info of the output describes the output image.
    assert conv.camera_info_to_intrinsics(out, (640, 360)) == working
