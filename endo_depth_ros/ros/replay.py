"""Live evaluation: replay a bag into the depth node over real topics and score its outputs.

Like ``ros2 bag play --clock`` followed by a recorder, in one process:

1. the node (``python -m endo_depth_ros.ros.node``) starts in a separate process with
   ``use_sim_time``, the run's model and alignment mode, and its ``image`` /
   ``camera_info`` inputs remapped to the bag's topics;
2. once its subscriptions matched, the bag's image and camera_info messages are published
   as the raw CDR bytes stored in the bag (MCAP / sqlite3; an npz sequence folder is
   converted to messages instead) at the recorded rate times ``rate``, with
   ``rosgraph_msgs/Clock`` on ``/clock`` published before every message and at 100 Hz;
3. ``depth/image``, ``pose`` and ``depth/points`` are recorded; outputs are matched to
   inputs by header stamp, and the frames are scored by
   ``endo_depth_ros.evaluation.score_records`` like an offline run, adding latency
   (output received minus input published, wall clock) p50/p95, the drop rate (inputs
   without a depth output) and the input and output rates.

DDS is kept on this machine: unless the caller set them, ``ROS_AUTOMATIC_DISCOVERY_RANGE``
is ``LOCALHOST`` and ``ROS_DOMAIN_ID`` a random private id, for this process and the node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import os
from pathlib import Path
import random
import struct
import threading
import time
from typing import Any

from geometry_msgs.msg import PoseStamped
import numpy as np
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from endo_depth_ros import bags
from endo_depth_ros.errors import BagError, ConfigError, EndoDepthError
from endo_depth_ros.evaluation import (
    ORACLE,
    EvalConfig,
    FrameRecord,
    ModelSpec,
    Progress,
    ProgressFactory,
    RunResult,
    config_for_recording,
    progress_bar,
    score_records,
)
from endo_depth_ros.resolution import upsample_depth
from endo_depth_ros.ros import conversions
from endo_depth_ros.ros.process import NodeProcess
from endo_depth_ros.ros.spinning import MatchCounter, SpinningNode

#: How long the node may take to start and match our topics (s).
STARTUP_TIMEOUT_S = 120.0
#: After both sides matched, wait this long before the first message (s): a match seen by
#: our publisher does not mean the node's subscription has finished discovering us yet,
#: and messages sent before that are lost (as with ``ros2 bag play`` started too early).
SETTLE_S = 1.0
#: After the last input, wait for outputs until none arrived for this long (s) ...
DRAIN_IDLE_S = 3.0
#: ... but never longer than this (s).
DRAIN_MAX_S = 60.0
#: Rate of the /clock messages between bag messages (Hz), as ``ros2 bag play --clock 100``.
CLOCK_HZ = 100.0
_IMAGE_TYPES = {'sensor_msgs/msg/Image': Image, 'sensor_msgs/msg/CompressedImage': CompressedImage}


@dataclass(frozen=True)
class _Message:
    """One message to replay: bag log time, topic kind and payload (raw CDR or a msg)."""

    log_time_ns: int
    kind: str  # 'image', 'camera_info' or a key of _SCALE_INPUTS
    payload: Any
    stamp_ns: int


@dataclass
class _Capture:
    """What the node published, keyed by the input stamp (written by callbacks)."""

    depth: dict[int, np.ndarray] = field(default_factory=dict)
    received_s: dict[int, float] = field(default_factory=dict)
    pose: dict[int, np.ndarray] = field(default_factory=dict)
    points: int = 0
    last_output_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def isolate_dds() -> None:
    """Keep DDS on this machine in a private domain unless the caller configured it."""
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 200)))


def evaluate_live(
    bag_paths: Sequence[str | Path],
    config: EvalConfig,
    *,
    rate: float = 1.0,
    node_params: Sequence[str] = (),
    progress: ProgressFactory | None = None,
) -> list[RunResult]:
    """Replay every bag through a node per (model, alignment mode) and score the outputs.

    Args:
        bag_paths: bags or npz sequence folders.
        config: models, alignment modes, frame selection and scoring (as offline).
        rate: replay speed factor (1.0 = recorded rate).
        node_params: extra node parameters ``'name:=value'``.
        progress: as in ``evaluation.evaluate`` (updated once per published image).

    Returns:
        One ``RunResult`` (``mode='live'``) per combination.

    Raises:
        ConfigError: bad rate/parameter, or the ``gt`` oracle (offline only).
        BagError: unreadable bag.
        EndoDepthError: the node failed to start or died (its last log line is included).
    """
    if not 0.01 <= rate <= 100.0:
        raise ConfigError(f'Replay rate must be in [0.01, 100], got {rate}.')
    for param in node_params:
        if ':=' not in param:
            raise ConfigError(f'Node parameter {param!r} must look like name:=value.')
    if any(spec.name == ORACLE for spec in config.models):
        raise ConfigError('The gt oracle runs offline only (the node cannot read ground truth);'
                          ' drop --live or --model gt.')
    isolate_dds()
    results = []
    for spec in config.models:
        for path in bag_paths:
            topics = bags.detect_topics(path, **config.topics)
            run_config = config_for_recording(config, bags.read_recording_info(path), path)
            frames = list(bags.read_frames(path, topics, start=config.start, stop=config.stop,
                                           stride=config.stride))
            if not frames:
                raise BagError(f'{path}: no frames to replay in the selected range.')
            messages, compressed = _messages(path, topics, frames)
            for align in config.align_modes:
                with progress_bar(progress, f'{Path(path).name} {spec.label}/{align} (live)',
                                  len(frames)) as bar:
                    results.append(_replay_run(path, topics, frames, messages, compressed, spec,
                                               align, run_config, rate, node_params, bar))
    return results


def _replay_run(
    path: str | Path,
    topics: bags.BagTopics,
    frames: list[Any],
    messages: list[_Message],
    compressed: bool,
    spec: ModelSpec,
    align: str,
    config: EvalConfig,
    rate: float,
    node_params: Sequence[str],
    progress: Progress | None,
) -> RunResult:
    image_topic = topics.image
    info_topic = topics.camera_info
    if info_topic is None:
        raise BagError(f'{path}: live replay needs a camera_info topic.')
    node_args = _node_arguments(spec, align, config, image_topic, info_topic, compressed,
                                node_params)
    # The scale sources' inputs (right camera, kinematics) go to the node's names for them.
    extra = _scale_topics(topics)
    for kind, topic in extra.items():
        node_args += ['-r', f'{_SCALE_INPUTS[kind][1]}:={topic}']
    capture = _Capture()
    published_s: dict[int, float] = {}
    with NodeProcess(node_args, name='The depth node') as node_proc, _Replayer(
            image_topic, info_topic, compressed, capture, extra) as replayer:
        replayer.wait_ready(node_proc, STARTUP_TIMEOUT_S)
        t0_log = messages[0].log_time_ns
        replayer.publish_clock(t0_log)  # sim time is valid before the first image
        time.sleep(SETTLE_S)
        t0_wall = time.monotonic()
        replayer.start_clock(t0_log, t0_wall, rate)
        for msg in messages:
            target = t0_wall + (msg.log_time_ns - t0_log) / 1e9 / rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing at the recorded rate, as ros2 bag play does
            node_proc.check_alive()
            replayer.publish(msg)
            if msg.kind == 'image':
                published_s[msg.stamp_ns] = time.monotonic()
                if progress is not None:
                    progress.update(1)
        end_publish = time.monotonic()
        _drain(capture, published_s, node_proc, end_publish)
        replayer.stop_clock()
        node_proc.stop()

    records = []
    for frame in frames:
        stamp = frame.stamp_ns
        depth = capture.depth.get(stamp)
        if depth is not None:
            # The node publishes at its working size; score at the bag's size.
            depth = upsample_depth(depth, (frame.rgb.shape[1], frame.rgb.shape[0]))
        latency = None
        if stamp in capture.received_s and stamp in published_s:
            latency = 1e3 * (capture.received_s[stamp] - published_s[stamp])
        records.append(FrameRecord(
            index=frame.index, stamp_ns=stamp, depth=depth, gt_depth=frame.depth_gt,
            gt_pose=frame.pose_gt, est_pose=capture.pose.get(stamp), latency_ms=latency,
            rgb=frame.rgb))
    result = RunResult(bag=str(path), model=spec.label, align=align, protocol=config.protocol,
                       mode='live')
    score_records(result, records, frames[0].intrinsics, config)
    received = sorted(capture.received_s.values())
    sent = sorted(published_s.values())
    result.summary['drop_rate'] = 1.0 - len(capture.depth) / len(frames)
    result.summary['input_rate_hz'] = _rate(sent)
    result.summary['output_rate_hz'] = _rate(received)
    result.summary['clouds_received'] = float(capture.points)
    result.summary['poses_received'] = float(len(capture.pose))
    return result


def _rate(times: list[float]) -> float | None:
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


def _drain(capture: _Capture, published_s: dict[int, float], node_proc: NodeProcess,
           end_publish: float) -> None:
    """Wait for the outputs of the last inputs: until all arrived or the node went quiet."""
    while True:
        now = time.monotonic()
        with capture.lock:
            done = len(capture.depth) >= len(published_s)
            last = max(capture.last_output_s, end_publish)
        if done or now - last > DRAIN_IDLE_S or now - end_publish > DRAIN_MAX_S:
            return
        node_proc.check_alive()
        time.sleep(0.05)


def _node_arguments(spec: ModelSpec, align: str, config: EvalConfig, image_topic: str,
                    info_topic: str, compressed: bool, extra: Sequence[str]) -> list[str]:
    model = config.pipeline.model
    params = [
        'use_sim_time:=true',
        f'model.name:={spec.name}',
        f'model.device:={model.device}',
        f'model.input_size:={model.input_size}',
        f'model.backend:={model.backend}',
        f'model.precision:={model.precision}',
        f'model.input_resize:={model.input_resize}',
        f'alignment.mode:={align}',
    ]
    if spec.checkpoint:
        params.append(f'model.checkpoint:={spec.checkpoint}')
    if compressed:
        params.append('input.use_compressed:=true')
    params.extend(extra)
    args = ['-m', 'endo_depth_ros.ros.node', '--ros-args']
    for p in params:
        args += ['-p', p]
    image_name = 'image/compressed' if compressed else 'image'
    args += ['-r', f'{image_name}:={image_topic}', '-r', f'camera_info:={info_topic}']
    return args


# --------------------------------------------------------------------------- messages


def _messages(path: str | Path, topics: bags.BagTopics,
              frames: list[Any]) -> tuple[list[_Message], bool]:
    """The image and camera_info messages of the selected frames, in log-time order.

    Returns:
        The messages and whether the images are ``CompressedImage``.
    """
    raw = _raw_messages(path, topics, {f.stamp_ns for f in frames})
    if raw is not None:
        return raw
    # No rosbag (npz folder): build the messages from the decoded frames.
    out = []
    for f in frames:
        frame_id = getattr(f, 'frame_id', '') or 'endoscope_optical_frame'
        out.append(_Message(f.stamp_ns, 'camera_info', conversions.intrinsics_to_camera_info(
            f.intrinsics, f.stamp_ns, frame_id), f.stamp_ns))
        out.append(_Message(f.stamp_ns, 'image', conversions.rgb_to_image(
            f.rgb, f.stamp_ns, frame_id), f.stamp_ns))
    return out, False


def _open_rosbag(path: str | Path) -> Any:
    """A rosbags ``AnyReader`` for a ROS 2 bag, or None when ``path`` is not one."""
    from rosbags.highlevel import AnyReader, AnyReaderError

    p = Path(path)
    candidates = [p]
    if p.is_file() and p.suffix in ('.mcap', '.db3'):
        candidates.append(p.parent)
    for candidate in candidates:
        try:
            reader = AnyReader([candidate])
            reader.open()
        except (AnyReaderError, OSError, ValueError):
            continue
        if reader.is2:
            return reader
        reader.close()
    return None


#: The scale sources' inputs: kind -> (message type, the node's topic name).
_SCALE_INPUTS: dict[str, tuple[type, str]] = {
    'right_image': (Image, 'right/image'),
    'right_camera_info': (CameraInfo, 'right/camera_info'),
    'kinematics': (PoseStamped, 'kinematics/pose'),
}


def _scale_topics(topics: bags.BagTopics) -> dict[str, str]:
    """The bag's right camera and kinematics topics (kind -> topic), when present."""
    found = {kind: getattr(topics, kind) for kind in _SCALE_INPUTS}
    return {kind: topic for kind, topic in found.items() if topic}


def _raw_messages(path: str | Path, topics: bags.BagTopics,
                  stamps: set[int]) -> tuple[list[_Message], bool] | None:
    reader = _open_rosbag(path)
    if reader is None:
        return None
    try:
        kinds: dict[str | None, str] = {topics.image: 'image', topics.camera_info: 'camera_info'}
        kinds.update({topic: kind for kind, topic in _scale_topics(topics).items()})
        conns = [c for c in reader.connections if c.topic in kinds]
        compressed = any(_IMAGE_TYPES.get(c.msgtype) is CompressedImage for c in conns
                         if c.topic == topics.image)
        images: list[_Message] = []
        infos: list[_Message] = []
        for conn, log_time, data in reader.messages(connections=conns):
            kind = kinds[conn.topic]
            stamp = _header_stamp_ns(bytes(data))
            if kind in ('image', 'right_image', 'right_camera_info') and stamp not in stamps:
                continue
            (infos if kind == 'camera_info' else images).append(
                _Message(int(log_time), kind, bytes(data), stamp))
    finally:
        reader.close()
    # Camera infos stamped like the images: replay only those of the selected frames;
    # otherwise (a camera_info at its own rate) replay them all.
    matching = [m for m in infos if m.stamp_ns in stamps]
    if matching:
        infos = matching
    # At equal log times the left image goes last: its partners are then already there.
    ordered = sorted(images + infos, key=lambda m: (m.log_time_ns, m.kind == 'image'))
    return ordered, compressed


def _header_stamp_ns(cdr: bytes) -> int:
    """Stamp of a message whose first field is a std_msgs/Header (CDR, after 4-byte prefix)."""
    little = cdr[1] in (1, 3)  # CDR_LE / PL_CDR_LE encapsulation
    sec, nanosec = struct.unpack('<iI' if little else '>iI', cdr[4:12])
    return sec * 1_000_000_000 + nanosec


# --------------------------------------------------------------------------- ROS side


class _Replayer(SpinningNode):
    """In-process rclpy node publishing the bag and /clock and recording the outputs."""

    def __init__(self, image_topic: str, info_topic: str, compressed: bool,
                 capture: _Capture, extra: dict[str, str] | None = None) -> None:
        super().__init__('endo_depth_replay')
        self.capture = capture
        self._matched = MatchCounter()
        qos_in = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST,
                            reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = {
            'image': self.node.create_publisher(
                CompressedImage if compressed else Image, image_topic, qos_in,
                event_callbacks=PublisherEventCallbacks(matched=self._matched.callback('image'))),
            'camera_info': self.node.create_publisher(
                CameraInfo, info_topic, qos_in,
                event_callbacks=PublisherEventCallbacks(
                    matched=self._matched.callback('camera_info'))),
        }
        for kind, topic in (extra or {}).items():
            self._pubs[kind] = self.node.create_publisher(_SCALE_INPUTS[kind][0], topic, qos_in)
        self._clock_pub = self.node.create_publisher(Clock, '/clock', 10)
        qos_out = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(
            Image, '/depth/image', self._on_depth, qos_out,
            event_callbacks=SubscriptionEventCallbacks(matched=self._matched.callback('depth')))
        self.node.create_subscription(PoseStamped, '/pose', self._on_pose, qos_out)
        self.node.create_subscription(PointCloud2, '/depth/points', self._on_points, qos_out)
        self._clock_lock = threading.Lock()
        self._clock_origin: tuple[int, float, float] | None = None
        self._last_clock_ns = 0
        self._timer = self.node.create_timer(1.0 / CLOCK_HZ, self._tick_clock)

    def wait_ready(self, node_proc: NodeProcess, timeout: float) -> None:
        """Wait until the node subscribed to our inputs and publishes depth."""
        if not self._matched.wait(1, timeout, check=node_proc.check_alive):
            raise EndoDepthError(
                f'The depth node did not connect within {timeout:.0f} s '
                f'(matched: {self._matched.counts}); {node_proc.last_log_line()}')

    def _on_depth(self, msg: Image) -> None:
        now = time.monotonic()
        depth = np.array(conversions.image_to_depth(msg), dtype=np.float32, copy=True)
        stamp = conversions.stamp_to_ns(msg.header.stamp)
        with self.capture.lock:
            self.capture.depth[stamp] = depth
            self.capture.received_s[stamp] = now
            self.capture.last_output_s = now

    def _on_pose(self, msg: PoseStamped) -> None:
        stamp = conversions.stamp_to_ns(msg.header.stamp)
        with self.capture.lock:
            self.capture.pose[stamp] = conversions.pose_from_msg(msg.pose)

    def _on_points(self, msg: PointCloud2) -> None:
        with self.capture.lock:
            self.capture.points += 1

    def start_clock(self, t0_log_ns: int, t0_wall: float, rate: float) -> None:
        with self._clock_lock:
            self._clock_origin = (t0_log_ns, t0_wall, rate)

    def stop_clock(self) -> None:
        with self._clock_lock:
            self._clock_origin = None

    def _tick_clock(self) -> None:
        with self._clock_lock:
            if self._clock_origin is None:
                return
            t0_log, t0_wall, rate = self._clock_origin
            now_ns = t0_log + int((time.monotonic() - t0_wall) * rate * 1e9)
        self.publish_clock(now_ns)

    def publish_clock(self, stamp_ns: int) -> None:
        """Publish /clock at ``stamp_ns`` unless sim time already passed it."""
        with self._clock_lock:
            # Sim time never goes backwards (timer and message publication interleave).
            if stamp_ns <= self._last_clock_ns:
                return
            self._last_clock_ns = stamp_ns
        self._clock_pub.publish(Clock(clock=conversions.ns_to_stamp(stamp_ns)))

    def publish(self, msg: _Message) -> None:
        """Publish /clock at the message's log time, then the message."""
        self.publish_clock(msg.log_time_ns)
        self._pubs[msg.kind].publish(msg.payload)

