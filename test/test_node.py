"""The endo_depth node with real rclpy, each node in its own process.

A test node (this process) plays synthetic endoscope frames with camera_info and checks
what the node publishes: end to end, under overload, with bad inputs, at start-up
failures and at shutdown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import functools
import importlib.util
import math
from pathlib import Path
import signal
import threading
import time
from typing import Any
import uuid

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from ros_harness import NodeProcess, RosTestNode, TopicRecorder  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2  # noqa: E402

from endo_depth_ros.camera import Intrinsics  # noqa: E402
from endo_depth_ros.ros import conversions  # noqa: E402
from endo_depth_ros.synth import SynthConfig, SynthFrame, render_sequence  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO_ROOT / 'config' / 'depth.yaml'
WIDTH, HEIGHT = 96, 80
FRAME_ID = 'endoscope_optical_frame'
#: Generous bound for one frame to come back (discovery is sometimes slow here).
TIMEOUT_S = 20.0


@functools.lru_cache(maxsize=1)
def synthetic_frames() -> tuple[SynthFrame, ...]:
    return tuple(render_sequence(SynthConfig(width=WIDTH, height=HEIGHT, frames=24, seed=3)))


class Player:
    """Publishes frames and camera infos into one node's namespace; records its outputs."""

    def __init__(self, ros: RosTestNode, namespace: str, compressed: bool = False,
                 qos: QoSProfile | int = 10) -> None:
        self.ros = ros
        self.namespace = namespace
        self.compressed = compressed
        #: Added to the camera_info stamps (a driver whose stamps never match the images').
        self.info_offset_ns = 0
        image_type = CompressedImage if compressed else Image
        image_topic = f'{namespace}/image' + ('/compressed' if compressed else '')
        self.image_pub = ros.publisher(image_type, image_topic, qos)
        self.info_pub = ros.publisher(CameraInfo, f'{namespace}/camera_info', qos)
        self.depth = ros.subscribe(Image, f'{namespace}/depth/image')
        self.outputs: dict[str, TopicRecorder[Any]] = {'depth': self.depth}
        self.diagnostics = ros.subscribe(DiagnosticArray, '/diagnostics')

    def record(self, **topics: type) -> None:
        """Subscribe to more outputs: ``record(points=PointCloud2)`` -> ``depth/points``."""
        names = {'info': 'depth/camera_info', 'colormap': 'depth/colormap',
                 'points': 'depth/points', 'pose': 'pose', 'odom': 'odom'}
        for key, msg_type in topics.items():
            self.outputs[key] = self.ros.subscribe(msg_type, f'{self.namespace}/{names[key]}')

    def wait_connected(self, stamp: Callable[[int], int]) -> None:
        """Wait for discovery, then until a frame makes the round trip.

        Right after the "matched" event the other side may still be discovering us (a
        reliable sample is then resent only later, a best-effort one is lost), so a first
        frame is repeated until its depth comes back; attempt ``k`` is stamped ``stamp(k)``.
        """
        self.image_pub.wait_for_subscribers()
        self.info_pub.wait_for_subscribers()
        for recorder in self.outputs.values():
            assert recorder.matched.wait(TIMEOUT_S), 'an output never matched'
        deadline = time.monotonic() + TIMEOUT_S
        attempt = 0
        while time.monotonic() < deadline:
            stamp_ns = stamp(attempt)
            attempt += 1
            self.send_frame(synthetic_frames()[0], stamp_ns)
            try:
                self.wait_depth(stamp_ns, timeout=0.5)
                return
            except AssertionError:
                continue
        raise AssertionError(f'no frame made the round trip within {TIMEOUT_S} s')

    def send(self, image: Any, info: CameraInfo | None) -> None:
        if info is not None:
            self.info_pub.publish(info)
        self.image_pub.publish(image)

    def send_frame(self, frame: SynthFrame, stamp_ns: int) -> None:
        info = conversions.intrinsics_to_camera_info(
            frame.intrinsics, stamp_ns + self.info_offset_ns, FRAME_ID)
        if self.compressed:
            ok, png = cv2.imencode('.png', frame.rgb[:, :, ::-1])
            assert ok
            self.send(CompressedImage(header=conversions.make_header(stamp_ns, FRAME_ID),
                                      format='rgb8; png compressed bgr8', data=png.tobytes()),
                      info)
        else:
            self.send(conversions.rgb_to_image(frame.rgb, stamp_ns, FRAME_ID), info)

    def wait_depth(self, stamp_ns: int, timeout: float = TIMEOUT_S) -> Image:
        msgs = self.depth.wait_until(
            lambda ms: any(conversions.stamp_to_ns(m.header.stamp) == stamp_ns for m in ms),
            timeout)
        return next(m for m in msgs if conversions.stamp_to_ns(m.header.stamp) == stamp_ns)

    def diagnostic_values(self, predicate: Callable[[dict[str, str]], bool]) -> dict[str, str]:
        """Wait for a /diagnostics status of this node satisfying ``predicate``."""
        name = f'{self.namespace}/endo_depth: depth pipeline'

        def latest(msgs: list[DiagnosticArray]) -> dict[str, str] | None:
            for msg in reversed(msgs):
                for status in msg.status:
                    if status.name == name:
                        return {kv.key: kv.value for kv in status.values}
            return None

        def ok(msgs: list[DiagnosticArray]) -> bool:
            values = latest(msgs)
            return values is not None and predicate(values)

        values = latest(self.diagnostics.wait_until(ok, TIMEOUT_S))
        assert values is not None
        return values


def start_node(namespace: str, *parameters: str, params_file: Path = PARAMS_FILE) -> NodeProcess:
    args = ['-m', 'endo_depth_ros.ros.node', '--ros-args', '--params-file', str(params_file),
            '-r', f'__ns:={namespace}']
    for parameter in parameters:
        args += ['-p', parameter]
    return NodeProcess(args)


def unique_namespace() -> str:
    return f'/t{uuid.uuid4().hex[:8]}'


@pytest.fixture
def ros() -> Iterator[RosTestNode]:
    with RosTestNode() as node:
        yield node


# ------------------------------------------------------------------------- end to end


def test_synthetic_frames_come_back_as_depth_cloud_and_poses_with_the_input_headers(
        ros: RosTestNode) -> None:
    namespace = unique_namespace()
    frames = synthetic_frames()[:16]
    with start_node(namespace, 'diagnostics.period_s:=0.2') as node:
        player = Player(ros, namespace)
        player.record(info=CameraInfo, colormap=Image, points=PointCloud2, pose=PoseStamped,
                      odom=Odometry)
        stamps = [frame.stamp_ns for frame in frames]
        # The hand-shake frame is frame 0 a second earlier: it becomes the odom origin.
        player.wait_connected(lambda k: stamps[0] - 1_000_000_000 + k)
        depths = []
        for frame, stamp in zip(frames, stamps, strict=True):
            player.send_frame(frame, stamp)  # lock-step: no frame is dropped
            depths.append(player.wait_depth(stamp))
        values = player.diagnostic_values(lambda v: int(v['frames_published']) > len(frames))
        node.assert_clean_exit()
        stderr = node.stderr

    for msg, stamp in zip(depths, stamps, strict=True):
        assert conversions.stamp_to_ns(msg.header.stamp) == stamp
        assert msg.header.frame_id == FRAME_ID
        assert (msg.encoding, msg.width, msg.height) == ('32FC1', WIDTH, HEIGHT)
    depth = conversions.image_to_depth(depths[-1])
    valid = depth[np.isfinite(depth)]
    assert valid.size > 0.9 * depth.size
    assert 0.005 < np.median(valid) < 0.5  # metres, as an endoscope sees a lumen

    outputs = {key: [m for m in rec.wait_for(len(frames) + 1)
                     if conversions.stamp_to_ns(m.header.stamp) in stamps]
               for key, rec in player.outputs.items()}
    for key in ('info', 'colormap', 'points'):
        assert [m.header for m in outputs[key]] == [m.header for m in depths], key
    info = outputs['info'][-1]
    np.testing.assert_allclose(info.k, frames[-1].intrinsics.K.reshape(-1))
    colormap = outputs['colormap'][-1]
    assert (colormap.encoding, colormap.width, colormap.height) == ('rgb8', WIDTH, HEIGHT)
    points, colors = conversions.pointcloud2_to_arrays(outputs['points'][-1])
    assert len(points) > 0.5 * WIDTH * HEIGHT and colors is not None
    assert np.nanmedian(points[:, 2]) == pytest.approx(np.median(valid), rel=0.05)

    poses, odoms = outputs['pose'], outputs['odom']
    assert [conversions.stamp_to_ns(p.header.stamp) for p in poses] == stamps
    assert {p.header.frame_id for p in poses} == {'odom'}
    assert {(o.header.frame_id, o.child_frame_id) for o in odoms} == {('odom', FRAME_ID)}
    # The synthetic camera flies forward (+z of its first optical frame).
    z = [p.pose.position.z for p in poses]
    assert z[0] == pytest.approx(0.0, abs=1e-4)  # the same image as the odom origin
    assert z[-1] > 0
    assert z[-1] > abs(poses[-1].pose.position.x) and z[-1] > abs(poses[-1].pose.position.y)
    covariance = np.asarray(odoms[-1].pose.covariance).reshape(6, 6)
    assert np.all(np.diag(covariance) > 0)

    if importlib.util.find_spec('tf2_ros') is None:
        assert stderr.count('tf2_ros is not importable') == 1
    assert values['model.name'] == 'photometric'
    assert values['model.device'] == 'cpu'
    assert values['model.max_depth_m'] == 'n/a'  # a relative model has no metric scale
    assert values['model.selection'].startswith('opencv fp32: the photometric prior has no')
    assert values['frames_dropped'] == '0'
    assert values['odometry.state'] == 'tracking'


def test_compressed_input_is_decoded_when_use_compressed_is_set(ros: RosTestNode) -> None:
    namespace = unique_namespace()
    frame = synthetic_frames()[1]
    with start_node(namespace, 'input.use_compressed:=true',
                    'diagnostics.period_s:=0.2') as node:
        player = Player(ros, namespace, compressed=True)
        player.wait_connected(lambda k: frame.stamp_ns - 1000 + k)
        # A small PNG whose header announces 20000 x 20000 pixels (2.5 GB decoded) is
        # refused from its header, before decoding.
        ok, png = cv2.imencode('.png', frame.rgb[:, :, ::-1])
        bomb = bytearray(png.tobytes())
        bomb[16:24] = (20000).to_bytes(4, 'big') * 2
        bomb_stamp = frame.stamp_ns - 500
        player.send(CompressedImage(header=conversions.make_header(bomb_stamp, FRAME_ID),
                                    format='png', data=bytes(bomb)),
                    conversions.intrinsics_to_camera_info(frame.intrinsics, bomb_stamp,
                                                          FRAME_ID))
        player.diagnostic_values(lambda v: v.get('rejected.too_large') == '1')
        player.send_frame(frame, frame.stamp_ns)
        depth = player.wait_depth(frame.stamp_ns)
        node.assert_clean_exit()
    assert ok and (depth.encoding, depth.width, depth.height) == ('32FC1', WIDTH, HEIGHT)


@pytest.mark.parametrize('full_resolution', [False, True], ids=['working size', 'full size'])
def test_outputs_come_at_the_working_size_with_a_rescaled_camera_info(
        ros: RosTestNode, full_resolution: bool) -> None:
    namespace = unique_namespace()
    frame = synthetic_frames()[2]
    with start_node(namespace, 'input.max_width:=48', 'input.max_height:=48',
                    f'outputs.full_resolution:={str(full_resolution).lower()}') as node:
        player = Player(ros, namespace)
        player.record(info=CameraInfo)
        player.wait_connected(lambda k: frame.stamp_ns - 1000 + k)
        player.send_frame(frame, frame.stamp_ns)
        depth = player.wait_depth(frame.stamp_ns)
        info = next(m for m in player.outputs['info'].wait_until(
            lambda ms: any(conversions.stamp_to_ns(m.header.stamp) == frame.stamp_ns
                           for m in ms)) if conversions.stamp_to_ns(m.header.stamp)
            == frame.stamp_ns)
        node.assert_clean_exit()
    camera = frame.intrinsics if full_resolution else frame.intrinsics.scaled(48, 40)
    assert (depth.width, depth.height) == (info.width, info.height) == camera.size
    np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), camera.K)
    np.testing.assert_allclose(np.asarray(info.p).reshape(3, 4)[:, :3], camera.K)


def test_camera_info_stamps_that_never_match_fall_back_to_the_newest_with_one_warning(
        ros: RosTestNode) -> None:
    namespace = unique_namespace()
    frames = synthetic_frames()[1:4]
    with start_node(namespace) as node:
        player = Player(ros, namespace)
        player.info_offset_ns = 7_000_000  # 7 ms late, beyond the 1 ms tolerance
        player.wait_connected(lambda k: frames[0].stamp_ns - 1000 + k)
        for frame in frames:
            player.send_frame(frame, frame.stamp_ns)
            player.wait_depth(frame.stamp_ns)
        node.assert_clean_exit()
        stderr = node.stderr
    assert stderr.count('camera_info stamps never match image stamps') == 1, stderr


# ------------------------------------------------------------------------- overload


class PacedSource:
    """Publishes frames at a fixed rate from a timer of the test node (stamps = wall time)."""

    def __init__(self, player: Player, rate_hz: float, count: int) -> None:
        self.player = player
        self.count = count
        self.sent: list[int] = []
        self.done = threading.Event()
        self.frames = synthetic_frames()
        self.timer = player.ros.node.create_timer(1.0 / rate_hz, self._tick)

    def _tick(self) -> None:
        if len(self.sent) >= self.count:
            self.timer.cancel()
            self.done.set()
            return
        stamp = time.time_ns()
        self.player.send_frame(self.frames[len(self.sent) % len(self.frames)], stamp)
        self.sent.append(stamp)


def test_overloaded_node_serves_the_newest_frame_at_model_rate_with_bounded_latency(
        ros: RosTestNode) -> None:
    period_s, rate_hz, count = 0.2, 30.0, 75
    namespace = unique_namespace()
    with start_node(namespace, f'model.min_period_s:={period_s}', 'diagnostics.period_s:=0.5',
                    'odometry.enabled:=false') as node:
        player = Player(ros, namespace)
        arrivals: list[tuple[int, int]] = []
        ros.node.create_subscription(Image, f'{namespace}/depth/image', functools.partial(
            _record_arrival, arrivals), 10)
        player.wait_connected(lambda _k: time.time_ns())
        arrivals.clear()
        source = PacedSource(player, rate_hz, count)
        assert source.done.wait(count / rate_hz * 3 + TIMEOUT_S)
        last = source.sent[-1]
        player.wait_depth(last)  # the newest frame is always served
        values = player.diagnostic_values(lambda v: int(v['frames_received']) >= count + 1)
        node.process.send_signal(signal.SIGTERM)
        assert node.wait(timeout=15) == 0
        assert 'Traceback' not in node.stderr

    duration_s = (source.sent[-1] - source.sent[0]) / 1e9
    served = [stamp for stamp, _ in arrivals]
    # Output at the model's rate: one frame per period, not the camera's 30 Hz.
    assert 0.6 * duration_s / period_s <= len(served) <= 1.2 * duration_s / period_s + 2
    latencies_s = [(arrived - stamp) / 1e9 for stamp, arrived in arrivals]
    # While the camera runs, a frame waits at most for the frame in progress; the last one
    # (nothing newer replaces it) may wait a full period more.
    assert max(latencies_s[:-1]) < 2 * period_s, latencies_s
    assert latencies_s[-1] < 2 * period_s + 0.1, latencies_s
    # No growing queue: the last frames wait no longer than the first ones.
    assert np.median(latencies_s[-4:-1]) < np.median(latencies_s[:3]) + period_s / 2
    assert int(values['frames_dropped']) >= count - len(served) - 5
    assert float(values['latency_p50_ms']) < 2e3 * period_s


def test_an_overloaded_pipelined_node_accounts_for_every_frame_and_serves_them_in_order(
        ros: RosTestNode) -> None:
    """Three stages with a slow model: frames leave in stamp order, the newest is served,
    and every frame received is published or counted as dropped (by whichever stage)."""
    namespace = unique_namespace()
    count = 40
    with start_node(namespace, 'model.min_period_s:=0.05', 'diagnostics.period_s:=0.2',
                    'input.pipelined:=true') as node:
        player = Player(ros, namespace)
        player.wait_connected(lambda _k: time.time_ns())
        player.depth.clear()
        source = PacedSource(player, 100.0, count)
        assert source.done.wait(count / 100.0 * 5 + TIMEOUT_S)
        player.wait_depth(source.sent[-1])  # the newest frame is always served
        values = player.diagnostic_values(
            lambda v: int(v['frames_received']) >= count + 1 and int(v['frames_received'])
            == int(v['frames_published']) + int(v['frames_dropped'])
            + int(v['inputs_rejected']) + int(v['frames_skipped_no_subscribers']))
        node.assert_clean_exit()
    served = [conversions.stamp_to_ns(m.header.stamp) for m in player.depth.wait_for(1)]
    assert served == sorted(served) and len(set(served)) == len(served)
    assert set(served) <= set(source.sent)
    assert int(values['frames_dropped']) > 0  # the camera was faster than the model
    # Most dropped frames were never copied into the node: the middleware kept the newest
    # while the stages were busy (ros/input_gate).
    assert int(values['frames_dropped_untaken']) >= int(values['frames_dropped']) // 2 > 0
    assert int(values['inputs_rejected']) == 0


def test_the_pipelined_node_publishes_exactly_what_the_single_thread_node_does(
        ros: RosTestNode) -> None:
    """Fed one frame at a time (nothing dropped), both paths give identical outputs."""
    nodes = {pipelined: unique_namespace() for pipelined in (True, False)}
    frames = list(render_sequence(SynthConfig(width=192, height=160, frames=12, seed=3)))
    stamps = [1_700_000_000_000_000_000 + i * 33_000_000 for i in range(len(frames))]
    outputs: dict[bool, dict[str, dict[int, Any]]] = {}
    with contextlib.ExitStack() as stack:
        players = {}
        for pipelined, namespace in nodes.items():
            stack.enter_context(start_node(
                namespace, f'input.pipelined:={str(pipelined).lower()}',
                'input.max_width:=128', 'input.max_height:=128'))
            player = Player(ros, namespace)
            player.record(points=PointCloud2, pose=PoseStamped, colormap=Image)
            player.image_pub.wait_for_subscribers()
            player.info_pub.wait_for_subscribers()
            for recorder in player.outputs.values():
                assert recorder.matched.wait(TIMEOUT_S)
            players[pipelined] = player
        for frame, stamp in zip(frames, stamps, strict=True):
            for player in players.values():
                player.send_frame(frame, stamp)
            for player in players.values():
                for key, recorder in player.outputs.items():
                    if key != 'pose':  # a frame without a valid pose publishes none
                        recorder.wait_until(lambda ms, s=stamp: any(
                            conversions.stamp_to_ns(m.header.stamp) == s for m in ms),
                            TIMEOUT_S)
        poses = [player.outputs['pose'] for player in players.values()]
        with contextlib.suppress(AssertionError):  # compared below
            poses[0].wait_until(lambda ms: len(ms) == len(poses[1].messages) > 0, 2.0)
        for pipelined, player in players.items():
            outputs[pipelined] = {
                key: {conversions.stamp_to_ns(m.header.stamp): m for m in recorder.wait_for(1)}
                for key, recorder in player.outputs.items()}
    pipelined, single = outputs[True], outputs[False]
    for key in ('depth', 'colormap', 'points'):
        assert sorted(pipelined[key]) == sorted(single[key]) == stamps, key
        for stamp in stamps:
            assert bytes(pipelined[key][stamp].data) == bytes(single[key][stamp].data), key
    assert pipelined['depth'][stamps[0]].width == 128  # the working size was applied
    assert sorted(pipelined['pose']) == sorted(single['pose'])
    assert len(pipelined['pose']) >= len(stamps) // 2
    for stamp in pipelined['pose']:
        a, b = pipelined['pose'][stamp].pose, single['pose'][stamp].pose
        assert (a.position.x, a.position.y, a.position.z, a.orientation.w) == (
            b.position.x, b.position.y, b.position.z, b.orientation.w)


def _record_arrival(arrivals: list[tuple[int, int]], msg: Image) -> None:
    arrivals.append((conversions.stamp_to_ns(msg.header.stamp), time.time_ns()))


# ------------------------------------------------------------------------- bad input


_STAMPS = iter(range(1_800_000_000_000_000_000, 1_900_000_000_000_000_000, 50_000_000))


@pytest.fixture(scope='module')
def serving() -> Iterator[tuple[Player, NodeProcess]]:
    """One node for all bad-input cases; it must survive them all and exit cleanly."""
    namespace = unique_namespace()
    with RosTestNode('bad_input_player') as ros, \
            start_node(namespace, 'diagnostics.period_s:=0.2', 'outputs.points:=false') as node:
        player = Player(ros, namespace)
        player.wait_connected(lambda _k: next(_STAMPS))
        yield player, node
        node.assert_clean_exit()


def _good(stamp_ns: int) -> tuple[Image, CameraInfo]:
    frame = synthetic_frames()[0]
    return (conversions.rgb_to_image(frame.rgb, stamp_ns, FRAME_ID),
            conversions.intrinsics_to_camera_info(frame.intrinsics, stamp_ns, FRAME_ID))


def _bad_encoding(stamp: int) -> tuple[Image, CameraInfo]:
    image, info = _good(stamp)
    image.encoding = 'yuv422_yuy2'
    return image, info


def _depth_encoding(stamp: int) -> tuple[Image, CameraInfo]:
    frame = synthetic_frames()[0]
    return (conversions.depth_to_image(frame.depth, stamp, FRAME_ID), _good(stamp)[1])


def _short_buffer(stamp: int) -> tuple[Image, CameraInfo]:
    image, info = _good(stamp)
    image.data = image.data[: len(image.data) // 2]
    return image, info


def _zero_size(stamp: int) -> tuple[Image, CameraInfo]:
    image, info = _good(stamp)
    image.width = image.height = image.step = 0
    image.data = b''
    return image, info


def _nan_focal(stamp: int) -> tuple[Image, CameraInfo]:
    image, info = _good(stamp)
    info.k[0] = math.nan
    return image, info


def _zero_focal(stamp: int) -> tuple[Image, CameraInfo]:
    image, info = _good(stamp)
    info.k[0] = 0.0
    return image, info


def _size_mismatch(stamp: int) -> tuple[Image, CameraInfo]:
    image, _ = _good(stamp)
    intrinsics = Intrinsics(2 * WIDTH, 2 * HEIGHT, 100.0, 100.0, WIDTH - 0.5, HEIGHT - 0.5)
    return image, conversions.intrinsics_to_camera_info(intrinsics, stamp, FRAME_ID)


def _stamp_backwards(stamp: int) -> tuple[Image, CameraInfo]:
    return _good(stamp - 10_000_000_000)


def _camera_info_missing(stamp: int) -> tuple[Image, CameraInfo]:
    image, info = _good(stamp)
    info.header.stamp = conversions.ns_to_stamp(stamp + 20_000_000)
    return image, info


def _huge_header(stamp: int) -> tuple[Image, CameraInfo]:
    image, info = _good(stamp)
    image.width = image.height = 100_000  # 10^10 pixels announced, a few kB sent
    return image, info


def _stamp_far_ahead(stamp: int) -> tuple[Image, CameraInfo]:
    return _good(stamp + 10 * 365 * 86_400 * 10**9)  # a clock 10 years ahead (2037)


def _k22_zero(stamp: int) -> tuple[Image, CameraInfo]:
    image, info = _good(stamp)
    info.k[8] = 0.0
    return image, info


def _tiny_focal(stamp: int) -> tuple[Image, CameraInfo]:
    image, info = _good(stamp)
    info.k[0] = info.k[4] = 1e-300  # accepted before: the cloud held inf points
    return image, info


def _absurd_principal_point(stamp: int) -> tuple[Image, CameraInfo]:
    image, info = _good(stamp)
    info.k[2] = 1e6
    return image, info


def _roi_outside(stamp: int) -> tuple[Image, CameraInfo]:
    image, info = _good(stamp)
    info.roi.x_offset, info.roi.width, info.roi.height = WIDTH // 2, WIDTH, HEIGHT
    return image, info


def _huge_distortion(stamp: int) -> tuple[Image, CameraInfo]:
    image, info = _good(stamp)
    info.distortion_model = 'plumb_bob'
    info.d = [0.0] * 100_000
    return image, info


@pytest.mark.parametrize(('make', 'reason'), [
    (_huge_header, 'too_large'),
    (_stamp_far_ahead, 'stamp_jump'),
    (_k22_zero, 'intrinsics'),
    (_tiny_focal, 'intrinsics'),
    (_absurd_principal_point, 'intrinsics'),
    (_roi_outside, 'intrinsics'),
    (_huge_distortion, 'intrinsics'),
    (_bad_encoding, 'encoding'),
    (_depth_encoding, 'encoding'),
    (_short_buffer, 'buffer_size'),
    (_zero_size, 'empty'),
    (_nan_focal, 'intrinsics'),
    (_zero_focal, 'intrinsics'),
    (_size_mismatch, 'size_mismatch'),
    (_stamp_backwards, 'stamp_order'),
    (_camera_info_missing, 'camera_info_stamp'),
], ids=lambda v: getattr(v, '__name__', v))
def test_bad_input_is_dropped_counted_and_the_next_good_frame_is_served(
        serving: tuple[Player, NodeProcess],
        make: Callable[[int], tuple[Image, CameraInfo]], reason: str) -> None:
    player, node = serving
    # A good frame first: the node serves, and stamp order has a reference.
    stamp = next(_STAMPS)
    player.send(*_good(stamp))
    player.wait_depth(stamp)
    before = int(player.diagnostic_values(lambda v: True).get(f'rejected.{reason}', 0))

    bad_stamp = next(_STAMPS)
    player.send(*make(bad_stamp))
    player.diagnostic_values(lambda v: int(v.get(f'rejected.{reason}', 0)) > before)

    good_stamp = next(_STAMPS)
    player.send(*_good(good_stamp))
    assert player.wait_depth(good_stamp).width == WIDTH
    assert node.running()
    assert f'({reason})' in node.stderr  # one warning naming the cause
    # Log lines stay short whatever the input holds (100000 distortion values).
    assert max(len(line) for line in node.stderr.splitlines()) < 1000


def test_a_binned_region_of_interest_is_applied_per_rep_104(
        serving: tuple[Player, NodeProcess]) -> None:
    """The camera_info describes a sensor twice the image's size, binned by 2."""
    player, _node = serving
    stamp = next(_STAMPS)
    image, _ = _good(stamp)
    frame = synthetic_frames()[0]
    sensor = frame.intrinsics.scaled(2 * WIDTH, 2 * HEIGHT)
    info = conversions.intrinsics_to_camera_info(sensor, stamp, FRAME_ID)
    info.binning_x = info.binning_y = 2
    player.send(image, info)
    assert player.wait_depth(stamp).width == WIDTH


def test_parameters_that_cannot_change_live_are_refused_and_geometry_applies(
        serving: tuple[Player, NodeProcess]) -> None:
    player, _node = serving
    client = player.ros.node.create_client(SetParameters,
                                           f'{player.namespace}/endo_depth/set_parameters')
    assert client.wait_for_service(timeout_sec=TIMEOUT_S)

    def set_parameter(name: str, value: ParameterValue) -> Any:
        future = client.call_async(SetParameters.Request(
            parameters=[ParameterMsg(name=name, value=value)]))
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        assert done.wait(TIMEOUT_S)
        return future.result().results[0]

    refused = set_parameter('model.name', ParameterValue(
        type=ParameterType.PARAMETER_STRING, string_value='dav2-s'))
    assert not refused.successful and 'restart' in refused.reason
    invalid = set_parameter('geometry.stride', ParameterValue(
        type=ParameterType.PARAMETER_INTEGER, integer_value=0))
    assert not invalid.successful and 'stride' in invalid.reason
    applied = set_parameter('geometry.stride', ParameterValue(
        type=ParameterType.PARAMETER_INTEGER, integer_value=2))
    assert applied.successful, applied.reason


# ------------------------------------------------------------------------- start-up


@pytest.mark.parametrize(('parameters', 'message'), [
    (['model.name:=dav2-s'], 'needs a checkpoint'),
    (['model.checkpoint:=/nonexistent/weights.pth'], 'no weights'),
    (['alignment.mode:=sometimes'], 'alignment'),
    (['outputs.queue_depth:=50'], 'outputs.queue_depth'),
    (['geometry.max_range_m:=1'], 'decimal point'),
    (['model.nmae:=dav2-s'], 'Unknown parameter(s): model.nmae'),
    (['qos_overrides./q/image.subscription.reliability:=sometimes'], 'qos_overrides./q/image'),
    (['qos_overrides./q/image.subscription.history:=keep_all'], 'unbounded'),
    (['qos_overrides./q/depth/image.publisher.depth:=100000'], 'depth must be in 1..100'),
    (['input.max_width:=5'], 'max_width must be 0 (no limit) or in 16..16384'),
    (['input.max_input_pixels:=0'], 'input.max_input_pixels must be in 4..'),
], ids=lambda v: v[0] if isinstance(v, list) else None)
def test_start_up_errors_exit_non_zero_with_one_clear_line(parameters: list[str],
                                                           message: str) -> None:
    with start_node('/q', *parameters) as node:
        code = node.wait(timeout=60)
        stderr = node.stderr
    assert code == 2, stderr
    assert 'Cannot start' in stderr and message in stderr, stderr
    assert 'Traceback' not in stderr


@pytest.mark.parametrize(('ros_args', 'message'), [
    (['--params-file', '/nonexistent/depth.yaml'], '/nonexistent/depth.yaml'),
    (['--log-level', 'bogus'], 'bogus'),
    (['--remap', 'not-a-remap'], 'Cannot start'),
], ids=['missing params file', 'bad log level', 'bad remap'])
def test_bad_ros_arguments_are_one_line_and_exit_2(ros_args: list[str], message: str) -> None:
    with NodeProcess(['-m', 'endo_depth_ros.ros.node', '--ros-args', *ros_args]) as node:
        code = node.wait(timeout=60)
        stderr = node.stderr
    assert code == 2, stderr
    # One line from the node (rcl may add its own "Failed to parse" line before it).
    ours = [line for line in stderr.splitlines() if 'endo_depth' in line]
    assert len(ours) == 1 and 'Cannot start' in ours[0] and message in ours[0], stderr
    assert len(stderr.strip().splitlines()) <= 2 and 'Traceback' not in stderr, stderr


def test_a_second_sigint_during_a_long_frame_exits_at_once_without_traceback(
        ros: RosTestNode) -> None:
    namespace = unique_namespace()
    with start_node(namespace, 'model.min_period_s:=30.0', 'diagnostics.period_s:=0.2') as node:
        player = Player(ros, namespace)
        player.image_pub.wait_for_subscribers()
        player.info_pub.wait_for_subscribers()
        stamp = time.time_ns()
        player.send_frame(synthetic_frames()[0], stamp)
        # The worker is now inside a 30 s frame; the executor still reports diagnostics.
        player.diagnostic_values(lambda v: int(v['frames_received']) >= 1)
        node.process.send_signal(signal.SIGINT)
        wait_for_text(node, 'press Ctrl-C again')
        start = time.monotonic()
        node.process.send_signal(signal.SIGINT)
        code = node.wait(timeout=10)
        elapsed = time.monotonic() - start
        stderr = node.stderr
    assert code == 128 + signal.SIGINT, stderr
    assert elapsed < 5.0
    assert 'Traceback' not in stderr and 'KeyboardInterrupt' not in stderr, stderr


def wait_for_text(node: NodeProcess, text: str, timeout: float = TIMEOUT_S) -> None:
    """Wait until ``text`` appears in the process's stderr (a log file: polled)."""
    deadline = time.monotonic() + timeout
    while text not in node.stderr:
        node.check_alive()
        assert time.monotonic() < deadline, f'{text!r} not logged within {timeout} s'
        time.sleep(0.05)


def test_diagnostics_say_no_subscribers_and_log_lines_name_resolved_topics(
        ros: RosTestNode) -> None:
    namespace = unique_namespace()
    with start_node(namespace, 'diagnostics.period_s:=0.2') as node:
        image_pub = ros.publisher(Image, f'{namespace}/image')
        info_pub = ros.publisher(CameraInfo, f'{namespace}/camera_info')
        diagnostics = ros.subscribe(DiagnosticArray, '/diagnostics')
        image_pub.wait_for_subscribers()
        info_pub.wait_for_subscribers()
        name = f'{namespace}/endo_depth: depth pipeline'

        def statuses(msgs: list[DiagnosticArray]) -> list[Any]:
            return [s for m in msgs for s in m.status if s.name == name]

        deadline = time.monotonic() + TIMEOUT_S
        message = ''
        while 'no subscribers' not in message and time.monotonic() < deadline:
            image, info = _good(time.time_ns())
            info_pub.publish(info)
            image_pub.publish(image)
            found = statuses(diagnostics.wait_until(lambda ms: bool(statuses(ms))))
            message = found[-1].message
            time.sleep(0.1)  # a 10 Hz camera
        node.assert_clean_exit()
        stderr = node.stderr
    assert 'no subscribers' in message and found[-1].level == b'\x00', message
    assert 'slower than the camera' not in message
    assert f'listening on {namespace}/image + {namespace}/camera_info' in stderr, stderr


def test_a_best_effort_camera_needs_the_qos_override_and_the_node_says_so(
        ros: RosTestNode) -> None:
    best_effort = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                             reliability=ReliabilityPolicy.BEST_EFFORT)
    namespace = unique_namespace()
    with start_node(namespace) as node:
        ros.publisher(Image, f'{namespace}/image', best_effort)
        wait_for_text(node, f'qos_overrides.{namespace}/image.subscription.reliability'
                            ':=best_effort')
        node.assert_clean_exit()
    namespace = unique_namespace()
    with start_node(namespace,
                    f'qos_overrides.{namespace}/image.subscription.reliability:=best_effort',
                    f'qos_overrides.{namespace}/camera_info.subscription.reliability:='
                    'best_effort') as node:
        player = Player(ros, namespace, qos=best_effort)
        player.wait_connected(lambda k: 1_000 + k)
        node.assert_clean_exit()
        assert 'incompatible' not in node.stderr


def test_a_checkpoint_that_fails_to_load_is_a_start_up_error(tmp_path: Path) -> None:
    checkpoint = tmp_path / 'broken.pth'
    checkpoint.write_bytes(b'not a checkpoint')
    with start_node(unique_namespace(), 'model.name:=dav2-s',
                    f'model.checkpoint:={checkpoint}') as node:
        code = node.wait(timeout=120)
        stderr = node.stderr
    assert code == 2, stderr
    assert 'Cannot start' in stderr and 'broken.pth' in stderr, stderr
    assert 'Traceback' not in stderr
