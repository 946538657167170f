"""End-to-end throughput of the node: a camera at a fixed rate, every output subscribed.

The node runs in its own process, as it does live. This process is the camera (one
pre-built frame published with fresh stamps at the rate, from a thread) and the consumer
(raw subscriptions to every output: the messages cross the middleware but are not
deserialised, as a recorder takes them). Measured over a window after a warm-up: frames
published per second (counted by the consumer), the node's own counters from
``/diagnostics`` (received, dropped, lost in transport), and the CPU time of the node
process (``/proc``) per published frame, next to the CPU of this process (camera +
consumer), both sharing the machine's cores with the node.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
from dataclasses import dataclass
import math
import os
import threading
import time
from typing import Any
import uuid

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import EndoDepthError
from endo_depth_ros.ros import conversions
from endo_depth_ros.ros.process import NodeProcess
from endo_depth_ros.ros.spinning import SpinningNode

FRAME_ID = 'endoscope_optical_frame'
#: Outputs the consumer subscribes to (topic in the node's namespace -> type).
OUTPUTS: dict[str, type] = {
    'depth/image': Image, 'depth/camera_info': CameraInfo, 'depth/colormap': Image,
    'depth/points': PointCloud2, 'pose': PoseStamped, 'odom': Odometry}
#: Longest wait for discovery and the first frame back (s).
CONNECT_TIMEOUT_S = 60.0


@dataclass
class Throughput:
    """One measurement window.

    Attributes:
        sent_hz: camera frames sent per second.
        published_hz: depth images received by the consumer per second.
        received, dropped, lost, rejected: the node's counters over the window (frames
            received, dropped by a busy stage, lost in transport, rejected inputs).
        untaken: of ``dropped``, the frames the middleware replaced before the node took
            them (never copied into the node).
        node_cpu_ms: CPU time of the node process per published frame (ms).
        node_faults: minor page faults of the node process per published frame (memory
            the kernel had to map in: big buffers allocated afresh for every frame).
        node_cores: CPU time of the node process per second of wall time.
        bench_cores: the same for this process (camera + consumer).
        latency_p50_ms: the node's median stamp-to-publish latency (ms).
        stage_ms: the node's median wall time per stage (ms), from /diagnostics.
    """

    sent_hz: float
    published_hz: float
    received: int
    dropped: int
    untaken: int
    lost: int
    rejected: int
    node_cpu_ms: float
    node_faults: float
    node_cores: float
    bench_cores: float
    latency_p50_ms: float
    stage_ms: dict[str, float]


def measure(rgb: np.ndarray, intrinsics: Intrinsics, parameters: dict[str, Any], *,
            rate_hz: float, seconds: float, warmup_s: float = 2.0,
            env: dict[str, str] | None = None) -> Throughput:
    """Run a node with ``parameters`` and feed it ``rgb`` at ``rate_hz``; see the module.

    ``env``: extra environment of the node and of this process's camera and consumer
    (e.g. a middleware profile, ``endo_depth_ros.bench.qos.middleware_env``); this
    process's environment gets it only while the camera node starts.

    Raises:
        EndoDepthError: the node exited, or no frame came back within
            ``CONNECT_TIMEOUT_S``.
    """
    namespace = f'/throughput_{uuid.uuid4().hex[:8]}'
    args = ['-m', 'endo_depth_ros.ros.node', '--ros-args', '-r', f'__ns:={namespace}',
            '-p', 'diagnostics.period_s:=0.25']
    for name, value in parameters.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ['-p', f'{name}:={text}']
    with NodeProcess(args, env, name='The node') as node:
        with _environment(env or {}):
            bench = SpinningNode('endo_depth_camera')  # its middleware reads the environment
        with bench:
            return _Run(bench, node, namespace, rgb, intrinsics).measure(
                rate_hz, seconds, warmup_s)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` inside the block, restored after it."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _Run:
    def __init__(self, bench: SpinningNode, node: NodeProcess, namespace: str,
                 rgb: np.ndarray, intrinsics: Intrinsics) -> None:
        self.node = node
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                         reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = bench.node.create_publisher(Image, f'{namespace}/image', qos)
        self.info_pub = bench.node.create_publisher(CameraInfo, f'{namespace}/camera_info', qos)
        self.image = conversions.rgb_to_image(rgb, 0, FRAME_ID)  # built once
        self.info = conversions.intrinsics_to_camera_info(intrinsics, 0, FRAME_ID)
        self.lock = threading.Lock()
        self.published = 0
        self.status: dict[str, str] = {}
        self.subs = [bench.node.create_subscription(
            msg_type, f'{namespace}/{topic}',
            self._on_depth if topic == 'depth/image' else _ignore, 10, raw=True)
            for topic, msg_type in OUTPUTS.items()]
        self.status_name = f'{namespace}/endo_depth: depth pipeline'
        self.subs.append(bench.node.create_subscription(
            DiagnosticArray, '/diagnostics', self._on_diagnostics, 10))

    def _on_depth(self, _msg: bytes) -> None:
        with self.lock:
            self.published += 1

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.status_name:
                with self.lock:
                    self.status = {kv.key: kv.value for kv in status.values}

    def send(self) -> None:
        stamp = conversions.ns_to_stamp(time.time_ns())
        self.info.header.stamp = stamp
        self.image.header.stamp = stamp
        self.info_pub.publish(self.info)
        self.image_pub.publish(self.image)

    def _wait(self, condition: Any, what: str, *, send_hz: float = 0.0) -> None:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not condition():
            self.node.check_alive()
            if time.monotonic() > deadline:
                raise EndoDepthError(f'Throughput: {what} within {CONNECT_TIMEOUT_S} s.')
            if send_hz:
                self.send()
            time.sleep(1.0 / send_hz if send_hz else 0.05)

    def measure(self, rate_hz: float, seconds: float, warmup_s: float) -> Throughput:
        self._wait(lambda: self.image_pub.get_subscription_count() > 0
                   and self.info_pub.get_subscription_count() > 0
                   and all(s.get_publisher_count() > 0 for s in self.subs),
                   'the node and its outputs did not match')
        self._wait(lambda: self.published > 0 and self.status, 'no frame came back',
                   send_hz=2.0)
        stop = threading.Event()
        sent = [0]

        def camera() -> None:
            start = time.perf_counter()
            while not stop.is_set():
                delay = start + sent[0] / rate_hz - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                self.send()
                sent[0] += 1

        thread = threading.Thread(target=camera, name='camera', daemon=True)
        thread.start()
        try:
            time.sleep(warmup_s)
            before = self._snapshot(sent[0])
            time.sleep(seconds)
            after = self._snapshot(sent[0])
        finally:
            stop.set()
            thread.join(5.0)
        self.node.check_alive()
        return _difference(before, after)

    def _snapshot(self, sent: int) -> dict[str, Any]:
        with self.lock:
            status = dict(self.status)
            published = self.published
        return {'wall': time.monotonic(), 'sent': sent, 'published': published,
                'node_cpu': _process_cpu_s(self.node.process.pid),
                'node_faults': _process_minor_faults(self.node.process.pid),
                'bench_cpu': time.process_time(), 'status': status}


def _difference(before: dict[str, Any], after: dict[str, Any]) -> Throughput:
    wall = after['wall'] - before['wall']
    published = after['published'] - before['published']
    b, a = before['status'], after['status']

    def delta(key: str) -> int:
        return int(a.get(key, 0)) - int(b.get(key, 0))

    node_cpu = after['node_cpu'] - before['node_cpu']
    return Throughput(
        sent_hz=(after['sent'] - before['sent']) / wall, published_hz=published / wall,
        received=delta('frames_received'), dropped=delta('frames_dropped'),
        untaken=delta('frames_dropped_untaken'),
        lost=delta('frames_lost_in_transport'), rejected=delta('inputs_rejected'),
        node_cpu_ms=1e3 * node_cpu / published if published else math.inf,
        node_faults=((after['node_faults'] - before['node_faults']) / published
                     if published else math.inf),
        node_cores=node_cpu / wall, bench_cores=(after['bench_cpu'] - before['bench_cpu']) / wall,
        latency_p50_ms=float(a.get('latency_p50_ms', 'nan')),
        stage_ms={key.removeprefix('time_ms.'): float(value) for key, value in a.items()
                  if key.startswith('time_ms.')})


def _process_cpu_s(pid: int) -> float:
    """User + system CPU time (s) of process ``pid`` and its threads (Linux /proc)."""
    fields = _proc_stat(pid)
    if not fields:
        return math.nan
    # Fields 14 and 15 of proc(5) (utime, stime), counted after the ")" of the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _process_minor_faults(pid: int) -> float:
    """Minor page faults of process ``pid`` so far (Linux /proc; field 10 of proc(5))."""
    fields = _proc_stat(pid)
    return float(fields[7]) if fields else math.nan


def _proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the process name (empty: unreadable)."""
    try:
        with open(f'/proc/{pid}/stat') as stat:
            return stat.read().rsplit(')', 1)[1].split()
    except OSError:
        return []


def _ignore(_msg: bytes) -> None:
    """Raw output subscription: arrival is all the consumer needs."""
