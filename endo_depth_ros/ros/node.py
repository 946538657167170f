"""The live node ``endo_depth``: endoscope images in; depth, point clouds and poses out.

A thin adapter over :class:`endo_depth_ros.pipeline.Pipeline`:

- subscriptions (sensor-data QoS, so live drivers and bag replay both connect):
  ``image`` (``sensor_msgs/Image``) or ``image/compressed`` and ``camera_info``;
- publications, stamped with the input image's header (reliable, shallow queue):
  ``depth/image`` (32FC1 metres, NaN invalid), ``depth/camera_info``,
  ``depth/colormap`` (rgb8 turbo), ``depth/points`` (PointCloud2), ``pose``
  (PoseStamped in ``odom``), ``odom`` (nav_msgs/Odometry), TF ``odom -> camera``
  (when tf2_ros is importable) and ``/diagnostics`` (~1 Hz).

It never falls behind the camera: the image callback only drops the newest message
into a one-slot mailbox (an unprocessed older one is dropped and counted) and a worker
thread runs the pipeline and publishes. Work for outputs nobody subscribes to is
skipped. Bad inputs are dropped with one rate-limited warning per cause and counted in
diagnostics; the node keeps serving. Start-up errors (bad parameters, a model that
cannot load) end the process with a clear message and exit code 2.

Parameters are listed with their defaults and meaning in ``config/depth.yaml``;
:func:`parameter_specs` is the authoritative list.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator
import contextlib
from dataclasses import MISSING, dataclass, fields
import importlib
import math
import re
import sys
import textwrap
import threading
import time
import traceback
from typing import Any

import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
import numpy as np
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
import rclpy
from rclpy.context import Context
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import (
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from endo_depth_ros.cli.common import EXIT_USAGE
from endo_depth_ros.errors import BadInputError, ConfigError, EndoDepthError
from endo_depth_ros.geometry import CloudConfig
from endo_depth_ros.models import DepthModel
from endo_depth_ros.odometry import OdometryConfig
from endo_depth_ros.pipeline import FrameResult, ModelConfig, Pipeline, PipelineConfig
from endo_depth_ros.ros import conversions
from endo_depth_ros.temporal import AlignmentConfig
from endo_depth_ros.visualize import colorize_depth

NODE_NAME = 'endo_depth'
#: Frame used for outputs when neither the input nor ``frame_ids.camera_frame`` names one.
FALLBACK_CAMERA_FRAME = 'endoscope_optical_frame'
#: A warning about the same kind of bad input is repeated at most this often (s).
WARN_PERIOD_S = 5.0
#: Consecutive frames with stamps before the last accepted one after which the input is
#: taken as a restarted stream (a looping bag, a restarted driver) and the pipeline resets.
STAMP_RESTART_FRAMES = 5
#: Camera infos kept for pairing with images by stamp.
CAMERA_INFO_HISTORY = 32
#: Latency samples kept for the diagnostics percentiles.
LATENCY_HISTORY = 200
#: Pipeline sections whose dataclass fields become ``<section>.<field>`` parameters,
#: with whether a change can apply while running.
_SECTIONS: tuple[tuple[str, type, bool], ...] = (
    ('model', ModelConfig, False),
    ('alignment', AlignmentConfig, False),
    ('geometry', CloudConfig, True),
    ('odometry', OdometryConfig, False),
)

ParameterValue = bool | int | float | str | list[float] | list[int] | list[str] | list[bool]


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter.

    Attributes:
        name: full dotted name (``'model.name'``).
        default: typed default; its type is the parameter's type.
        description: one line shown by ``ros2 param describe``.
        live: whether a change is applied while running (else it is refused).
    """

    name: str
    default: ParameterValue
    description: str
    live: bool = False


#: The node's own parameters (the pipeline's come from its config dataclasses).
_NODE_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec('input.use_compressed', False,
                  'subscribe to image/compressed (CompressedImage) instead of image'),
    ParameterSpec('input.camera_info_tolerance_s', 0.001,
                  'largest stamp difference (s) for pairing an image with a camera_info',
                  live=True),
    ParameterSpec('input.camera_info_wait_s', 0.1,
                  'how long (s) an image waits for the camera_info of its stamp', live=True),
    ParameterSpec('outputs.depth', True, 'publish depth/image (32FC1 m) and depth/camera_info'),
    ParameterSpec('outputs.colormap', True, 'publish depth/colormap (rgb8 turbo, near = red)'),
    ParameterSpec('outputs.points', True, 'publish depth/points (PointCloud2)'),
    ParameterSpec('outputs.pose', True, 'publish pose (PoseStamped in the odom frame)'),
    ParameterSpec('outputs.odom', True, 'publish odom (nav_msgs/Odometry with covariance)'),
    ParameterSpec('outputs.tf', True, 'broadcast the odom -> camera transform (needs tf2_ros)'),
    ParameterSpec('outputs.queue_depth', 2, 'history depth of the reliable publishers (1-5)'),
    ParameterSpec('frame_ids.odom_frame', 'odom', 'parent frame of pose, odom and TF'),
    ParameterSpec('frame_ids.camera_frame', '',
                  "frame of the outputs; '' uses the input image's frame_id"),
    ParameterSpec('diagnostics.period_s', 1.0, 'period (s) of the /diagnostics status'),
)


def parameter_specs() -> list[ParameterSpec]:
    """Every parameter of the node, in declaration order, with typed defaults."""
    specs: list[ParameterSpec] = []
    for prefix, cls, live in _SECTIONS:
        docs = _attribute_docs(cls)
        instance = cls()
        for f in fields(cls):
            if not f.init:
                continue
            default = _ros_value(getattr(instance, f.name))
            if default is None:
                continue  # no ROS parameter type for it (None / nested value)
            specs.append(ParameterSpec(f'{prefix}.{f.name}', default,
                                       docs.get(f.name, ''), live))
    specs.extend(_NODE_PARAMETERS)
    return specs


def pipeline_config_from_parameters(values: dict[str, Any]) -> PipelineConfig:
    """Build the pipeline configuration from ``{'<section>.<field>': value}``.

    Missing keys keep the dataclass defaults; values are validated by the dataclasses.

    Raises:
        ConfigError: an invalid value, naming the parameter.
    """
    parts: dict[str, Any] = {}
    for prefix, cls, _live in _SECTIONS:
        parts[prefix] = _build_section(prefix, cls, values)
    return PipelineConfig(model=parts['model'], alignment=parts['alignment'],
                          cloud=parts['geometry'], odometry=parts['odometry'])


@dataclass(frozen=True)
class _Settings:
    """The node's own parameters, validated."""

    use_compressed: bool
    camera_info_tolerance_s: float
    camera_info_wait_s: float
    outputs: dict[str, bool]
    queue_depth: int
    odom_frame: str
    camera_frame: str
    diagnostics_period_s: float

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> _Settings:
        tolerance = float(values['input.camera_info_tolerance_s'])
        wait = float(values['input.camera_info_wait_s'])
        _check_seconds('input.camera_info_tolerance_s', tolerance, 0.0, 10.0)
        _check_seconds('input.camera_info_wait_s', wait, 0.0, 10.0)
        depth = int(values['outputs.queue_depth'])
        if not 1 <= depth <= 5:
            raise ConfigError(f'outputs.queue_depth must be in 1..5, got {depth}.')
        odom_frame = str(values['frame_ids.odom_frame'])
        camera_frame = str(values['frame_ids.camera_frame'])
        for name, frame in (('frame_ids.odom_frame', odom_frame),
                            ('frame_ids.camera_frame', camera_frame)):
            if frame.startswith('/') or (frame and not re.fullmatch(r'[A-Za-z0-9_/.\-]+', frame)):
                raise ConfigError(
                    f'{name} must be a TF frame id (letters, digits, _ . - /, no leading /), '
                    f'got {frame!r}.')
        if not odom_frame:
            raise ConfigError('frame_ids.odom_frame must not be empty.')
        if odom_frame == camera_frame:
            raise ConfigError(f'frame_ids.odom_frame and camera_frame are both {odom_frame!r}.')
        period = float(values['diagnostics.period_s'])
        _check_seconds('diagnostics.period_s', period, 0.05, 60.0)
        outputs = {key: bool(values[f'outputs.{key}'])
                   for key in ('depth', 'colormap', 'points', 'pose', 'odom', 'tf')}
        return cls(bool(values['input.use_compressed']), tolerance, wait, outputs, depth,
                   odom_frame, camera_frame, period)


@dataclass
class _Wanted:
    """Which outputs of a frame somebody listens to."""

    depth: bool = False
    info: bool = False
    colormap: bool = False
    points: bool = False
    pose: bool = False
    odom: bool = False
    tf: bool = False

    @property
    def any(self) -> bool:
        return any(vars(self).values())

    @property
    def needs_pose(self) -> bool:
        return self.pose or self.odom or self.tf


class _Stats:
    """Counters for diagnostics; every access holds the node's lock."""

    def __init__(self) -> None:
        self.received = 0
        self.processed = 0
        self.published = 0
        self.dropped = 0
        self.idle = 0
        self.rejected: Counter[str] = Counter()
        self.latency_ms: deque[float] = deque(maxlen=LATENCY_HISTORY)
        self.stage_ms: dict[str, deque[float]] = {}
        self.last_input = 0.0
        # Counts at the previous diagnostics tick, for rates.
        self.tick_time = time.monotonic()
        self.tick_received = 0
        self.tick_published = 0

    def add_timings(self, timings: dict[str, float]) -> None:
        for stage, ms in timings.items():
            self.stage_ms.setdefault(stage, deque(maxlen=50)).append(ms)


class DepthNode(Node):
    """The ``endo_depth`` node (see the module docstring).

    Args:
        model: an already built model to use instead of loading ``model.*`` (benchmarks).
        start_worker: start the processing thread (False: call :meth:`process_image`
            yourself, as the node benchmark does).
        **kwargs: passed to ``rclpy.node.Node`` (``context``, ``parameter_overrides``,
            ``namespace``, ``cli_args``).

    Raises:
        ConfigError: a parameter value is invalid (the message names it).
        ModelLoadError, BackendUnavailableError: the model cannot be built.
    """

    def __init__(self, *, model: DepthModel | None = None, start_worker: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._specs = {spec.name: spec for spec in parameter_specs()}
        values = self._declare_parameters()
        self._settings = _Settings.from_values(values)
        config = pipeline_config_from_parameters(values)
        self._pipeline = Pipeline(config, model=model)

        self._lock = threading.Condition()
        self._mailbox: Image | CompressedImage | None = None
        self._infos: deque[tuple[int, CameraInfo]] = deque(maxlen=CAMERA_INFO_HISTORY)
        self._info_matched = False
        self._info_fallback = False
        self._stats = _Stats()
        self._warned: dict[str, float] = {}
        self._backwards = 0
        self._stopping = False
        # Frame id and camera info of frames in flight (window alignment emits them later).
        self._frames: dict[int, tuple[str, CameraInfo]] = {}
        # Last published pose (stamp, T_odom_camera, covariance), for the odom twist.
        self._previous_pose: tuple[int, np.ndarray, np.ndarray] | None = None

        self._create_publishers()
        self._create_subscriptions()
        self._diagnostics_timer = self.create_timer(
            self._settings.diagnostics_period_s, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        model_ = self._pipeline.model
        self.get_logger().info(
            f'Ready: model {model_.name} ({model_.backend}, {model_.device}, '
            f'{model_.precision}, {model_.output_kind}), alignment '
            f'{config.alignment.mode}, listening on {self._image_topic} + '
            f'{self._info_topic}.')
        if model_.selection:
            self.get_logger().info(f'Model path: {model_.selection}')
        self._worker: threading.Thread | None = None
        if start_worker:
            self._worker = threading.Thread(target=self._run_worker, name='endo_depth_worker',
                                            daemon=True)
            self._worker.start()

    # ------------------------------------------------------------------ set-up

    def _declare_parameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for spec in self._specs.values():
            descriptor = ParameterDescriptor(
                description=spec.description,
                additional_constraints='' if spec.live else 'applied at start-up only')
            try:
                value: Any = self.declare_parameter(spec.name, spec.default, descriptor).value
            except ParameterException as err:
                hint = ''
                if isinstance(spec.default, float):
                    hint = ' (write floating-point values with a decimal point, e.g. 1.0)'
                raise ConfigError(f'Invalid parameter {spec.name}: {err}{hint}') from None
            values[spec.name] = value
        overrides = getattr(self, '_parameter_overrides', {})
        unknown = sorted(
            name for name in overrides
            if name not in self._specs and name.split('.')[0] in _OWN_PREFIXES)
        if unknown:
            raise ConfigError(f'Unknown parameter(s): {", ".join(unknown)} (typo?).')
        return values

    def _create_publishers(self) -> None:
        qos = QoSProfile(depth=self._settings.queue_depth, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE)
        enabled = self._settings.outputs
        self._pubs: dict[str, Publisher] = {}
        topics: dict[str, tuple[type, str]] = {
            'depth': (Image, 'depth/image'),
            'info': (CameraInfo, 'depth/camera_info'),
            'colormap': (Image, 'depth/colormap'),
            'points': (PointCloud2, 'depth/points'),
            'pose': (PoseStamped, 'pose'),
            'odom': (Odometry, 'odom'),
        }
        for key, (msg_type, topic) in topics.items():
            if enabled['depth' if key == 'info' else key]:
                self._pubs[key] = self.create_publisher(msg_type, topic, qos)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', qos)
        self._tf: Any = None
        if enabled['tf']:
            try:
                tf2_ros = importlib.import_module('tf2_ros')
            except ImportError:
                self.get_logger().info(
                    'tf2_ros is not importable: the odom -> camera transform is not broadcast '
                    '(pose and odom are still published).')
            else:
                self._tf = tf2_ros.TransformBroadcaster(self)

    def _create_subscriptions(self) -> None:
        if self._settings.use_compressed:
            self._image_topic = 'image/compressed'
            self.create_subscription(CompressedImage, self._image_topic, self.on_image,
                                     qos_profile_sensor_data)
        else:
            self._image_topic = 'image'
            self.create_subscription(Image, self._image_topic, self.on_image,
                                     qos_profile_sensor_data)
        self._info_topic = 'camera_info'
        self.create_subscription(CameraInfo, self._info_topic, self.on_camera_info,
                                 qos_profile_sensor_data)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        cloud_values: dict[str, Any] = {}
        settings_values: dict[str, Any] = {}
        for param in params:
            spec = self._specs.get(param.name)
            if spec is None:
                continue  # use_sim_time and other rclpy parameters
            if not spec.live:
                return SetParametersResult(
                    successful=False,
                    reason=f'{param.name} cannot change while running; restart the node '
                           '(e.g. with a new params file).')
            if param.name.startswith('geometry.'):
                cloud_values[param.name] = param.value
            else:
                settings_values[param.name] = param.value
        try:
            cloud = None
            if cloud_values:
                current = {f'geometry.{f.name}': getattr(self._pipeline.cloud_config, f.name)
                           for f in fields(CloudConfig)}
                cloud = _build_section('geometry', CloudConfig, {**current, **cloud_values})
            settings = self._settings
            if settings_values:
                current = {name: self.get_parameter(name).value for name in self._specs
                           if name.split('.')[0] in ('input', 'outputs', 'frame_ids',
                                                     'diagnostics')}
                settings = _Settings.from_values({**current, **settings_values})
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        # Validated: apply (the worker reads these attributes once per frame).
        if cloud is not None:
            self._pipeline.set_cloud_config(cloud)
        self._settings = settings
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ callbacks

    def on_image(self, msg: Image | CompressedImage) -> None:
        """Subscription callback: keep only the newest image for the worker."""
        with self._lock:
            self._stats.received += 1
            self._stats.last_input = time.monotonic()
            if self._mailbox is not None:
                self._stats.dropped += 1
            self._mailbox = msg
            self._lock.notify_all()

    def on_camera_info(self, msg: CameraInfo) -> None:
        """Subscription callback: remember recent camera infos for pairing by stamp."""
        with self._lock:
            self._infos.append((conversions.stamp_to_ns(msg.header.stamp), msg))
            self._lock.notify_all()

    def _run_worker(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._mailbox is not None or self._stopping)
                if self._stopping:
                    return
                msg, self._mailbox = self._mailbox, None
            self.handle_image(msg)

    # ------------------------------------------------------------------ processing

    def handle_image(self, msg: Image | CompressedImage) -> None:
        """Process one image message, turning any failure into a counted rejection."""
        try:
            self.process_image(msg)
        except BadInputError as err:
            self._reject(err.reason, str(err))
        except Exception as err:
            if not self.context.ok():
                return  # shutting down: publishers are gone, nothing to report
            # A bug must not stop the node serving the next frames; say what happened.
            self._reject('internal_error', f'{type(err).__name__}: {err}')
            self.get_logger().error(
                f'Unexpected error while processing a frame (the node keeps serving):\n'
                f'{traceback.format_exc()}', throttle_duration_sec=5.0)

    def process_image(self, msg: Image | CompressedImage) -> dict[str, float]:
        """Convert, run the pipeline and publish one image (called by the worker).

        Returns:
            Per-stage wall time of this call (ms): conversion, model, odometry, alignment,
            geometry, publish (stages that did not run are absent).

        Raises:
            BadInputError: the image, its camera info or its stamp cannot be used.
        """
        start = time.perf_counter()
        stamp_ns = conversions.stamp_to_ns(msg.header.stamp)
        if isinstance(msg, CompressedImage):
            rgb = conversions.compressed_to_rgb(msg)
        else:
            rgb = conversions.image_to_rgb(msg)
        info = self._camera_info_for(stamp_ns)
        intrinsics = conversions.camera_info_to_intrinsics(info, (rgb.shape[1], rgb.shape[0]))
        frame_id = self._camera_frame(msg.header.frame_id)
        conversion_ms = (time.perf_counter() - start) * 1e3

        wanted = self._wanted()
        if not wanted.any:
            with self._lock:
                self._stats.idle += 1
            return {'conversion': conversion_ms}
        self._frames[stamp_ns] = (frame_id, info)
        try:
            results = self._run_pipeline(rgb, intrinsics, stamp_ns, wanted)
        except BadInputError:
            self._frames.pop(stamp_ns, None)
            raise
        timings: dict[str, float] = {'conversion': conversion_ms}
        for result in results:
            publish_ms = self._publish(result, wanted)
            timings.update(result.timings_ms)
            timings['publish'] = publish_ms
        with self._lock:
            self._stats.processed += 1
            self._stats.add_timings(timings)
        return timings

    def _run_pipeline(self, rgb: np.ndarray, intrinsics: Any, stamp_ns: int,
                      wanted: _Wanted) -> list[FrameResult]:
        kwargs = {'compute_points': wanted.points, 'compute_pose': wanted.needs_pose}
        try:
            results = self._pipeline.process(rgb, intrinsics, stamp_ns, **kwargs)
        except BadInputError as err:
            if err.reason != 'stamp_order':
                raise
            self._backwards += 1
            if self._backwards < STAMP_RESTART_FRAMES:
                raise
            self.get_logger().warning(
                f'{self._backwards} frames in a row went back in time: taking it as a restarted '
                'stream (looping bag or restarted driver) and resetting the pipeline.')
            self._pipeline.reset()
            self._frames = {stamp_ns: self._frames[stamp_ns]}
            self._previous_pose = None
            results = self._pipeline.process(rgb, intrinsics, stamp_ns, **kwargs)
        self._backwards = 0
        return results

    def _camera_info_for(self, stamp_ns: int) -> CameraInfo:
        """The camera info paired with an image stamp (see the module docstring)."""
        tolerance_ns = round(self._settings.camera_info_tolerance_s * 1e9)
        deadline = time.monotonic() + self._settings.camera_info_wait_s
        with self._lock:
            while True:
                for info_stamp, info in reversed(self._infos):
                    if abs(info_stamp - stamp_ns) <= tolerance_ns:
                        self._info_matched = True
                        self._info_fallback = False
                        return info
                if self._infos and self._info_fallback:
                    return self._infos[-1][1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    break
                self._lock.wait(remaining)
            if not self._infos:
                raise BadInputError(
                    f'No camera_info received yet on {self.resolve_topic_name("camera_info")}; '
                    'images are dropped until one arrives.', 'no_camera_info')
            newest_stamp, newest = self._infos[-1]
            if self._info_matched:
                raise BadInputError(
                    f'No camera_info within {self._settings.camera_info_tolerance_s} s of the '
                    f'image stamp {stamp_ns} ns (newest camera_info: {newest_stamp} ns).',
                    'camera_info_stamp')
            self._info_fallback = True
        self.get_logger().warning(
            f'camera_info stamps never match image stamps (image {stamp_ns} ns, newest '
            f'camera_info {newest_stamp} ns, tolerance '
            f'{self._settings.camera_info_tolerance_s} s): using the newest camera_info for '
            'every image from now on.')
        return newest

    def _camera_frame(self, frame_id: str) -> str:
        if self._settings.camera_frame:
            return self._settings.camera_frame
        if frame_id:
            return frame_id
        self._warn_once('frame_id', "Input images have no frame_id and frame_ids.camera_frame is "
                        f"empty: publishing in '{FALLBACK_CAMERA_FRAME}'.")
        return FALLBACK_CAMERA_FRAME

    def _wanted(self) -> _Wanted:
        def listened(key: str) -> bool:
            pub = self._pubs.get(key)
            return pub is not None and pub.get_subscription_count() > 0

        wanted = _Wanted(depth=listened('depth'), info=listened('info'),
                         colormap=listened('colormap'), points=listened('points'),
                         pose=listened('pose'), odom=listened('odom'))
        # TF consumers are anonymous: broadcast whenever /tf has any subscriber.
        wanted.tf = self._tf is not None and self._tf.pub_tf.get_subscription_count() > 0
        return wanted

    def _publish(self, result: FrameResult, wanted: _Wanted) -> float:
        start = time.perf_counter()
        frame_id, info = self._frames.pop(result.stamp_ns, (None, None))
        for stamp in [s for s in self._frames if s < result.stamp_ns]:
            del self._frames[stamp]  # frames the aligner will never emit
        if frame_id is None or info is None:
            return 0.0
        stamp_ns = result.stamp_ns
        if wanted.depth:
            self._pubs['depth'].publish(conversions.depth_to_image(result.depth, stamp_ns,
                                                                   frame_id))
        if wanted.info:
            self._pubs['info'].publish(_info_with_header(info, stamp_ns, frame_id))
        if wanted.colormap:
            colours = colorize_depth(result.depth)
            self._pubs['colormap'].publish(conversions.rgb_to_image(colours, stamp_ns, frame_id))
        if wanted.points and result.cloud is not None:
            self._pubs['points'].publish(
                conversions.cloud_to_pointcloud2(result.cloud, stamp_ns, frame_id))
        estimate = result.pose
        if estimate is not None and estimate.valid:
            odom_frame = self._settings.odom_frame
            if wanted.pose:
                self._pubs['pose'].publish(
                    conversions.pose_to_pose_stamped(estimate.pose, stamp_ns, odom_frame))
            if estimate.state == 'init':
                self._previous_pose = None  # a new odom origin: no velocity across it
            if wanted.odom:
                twist = _twist(self._previous_pose, stamp_ns, estimate.pose, estimate.covariance)
                self._pubs['odom'].publish(conversions.pose_to_odometry(
                    estimate.pose, stamp_ns, odom_frame, frame_id,
                    covariance=estimate.covariance, twist=None if twist is None else twist[0],
                    twist_covariance=None if twist is None else twist[1]))
            if wanted.tf:
                self._tf.sendTransform(
                    conversions.pose_to_transform(estimate.pose, stamp_ns, odom_frame, frame_id))
            self._previous_pose = (stamp_ns, estimate.pose, estimate.covariance)
        now_ns = self.get_clock().now().nanoseconds
        with self._lock:
            self._stats.published += 1
            if now_ns > 0:  # a sim-time clock reads 0 until /clock arrives
                self._stats.latency_ms.append((now_ns - result.stamp_ns) / 1e6)
        return (time.perf_counter() - start) * 1e3

    # ------------------------------------------------------------------ reporting

    def _reject(self, reason: str, message: str) -> None:
        with self._lock:
            self._stats.rejected[reason] += 1
        now = time.monotonic()
        if now - self._warned.get(reason, -math.inf) >= WARN_PERIOD_S:
            self._warned[reason] = now
            self.get_logger().warning(f'Dropped an input ({reason}): {message}')

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned[key] = time.monotonic()
            self.get_logger().warning(message)

    def diagnostics_status(self) -> DiagnosticStatus:
        """The node's current status for /diagnostics (rates since the previous call)."""
        now = time.monotonic()
        with self._lock:
            stats = self._stats
            elapsed = max(now - stats.tick_time, 1e-6)
            input_rate = (stats.received - stats.tick_received) / elapsed
            output_rate = (stats.published - stats.tick_published) / elapsed
            stats.tick_time, stats.tick_received = now, stats.received
            stats.tick_published = stats.published
            latencies = np.array(stats.latency_ms, dtype=np.float64)
            rejected = dict(stats.rejected)
            stages = {k: float(np.median(v)) for k, v in stats.stage_ms.items() if v}
            counts = (stats.received, stats.processed, stats.published, stats.dropped,
                      stats.idle)
            silent_s = now - stats.last_input if stats.last_input else math.inf
        received, processed, published, dropped, idle = counts
        model = self._pipeline.model
        aligner_stats = self._pipeline.aligner.stats
        estimate = self._pipeline.last_pose
        p50, p95 = (np.percentile(latencies, [50, 95]) if latencies.size else (math.nan,) * 2)
        values: dict[str, object] = {
            'input_rate_hz': f'{input_rate:.2f}',
            'output_rate_hz': f'{output_rate:.2f}',
            'latency_p50_ms': f'{p50:.1f}',
            'latency_p95_ms': f'{p95:.1f}',
            'frames_received': received,
            'frames_processed': processed,
            'frames_published': published,
            'frames_dropped': dropped,
            'frames_skipped_no_subscribers': idle,
            'inputs_rejected': sum(rejected.values()),
            **{f'rejected.{reason}': n for reason, n in sorted(rejected.items())},
            'model.name': model.name,
            'model.backend': model.backend,
            'model.device': model.device,
            'model.precision': model.precision,
            'model.selection': model.selection,
            'model.output_kind': model.output_kind,
            'alignment.mode': self._pipeline.config.alignment.mode,
            'alignment.fallbacks': getattr(aligner_stats, 'fallbacks', 'n/a'),
            'alignment.resets': getattr(aligner_stats, 'resets', 'n/a'),
            'odometry.state': estimate.state if estimate is not None else 'off',
            'odometry.inliers': estimate.inliers if estimate is not None else 0,
            **{f'time_ms.{stage}': f'{ms:.2f}' for stage, ms in sorted(stages.items())},
        }
        level, message = DiagnosticStatus.OK, 'running'
        if received == 0 or silent_s > 2.0:
            level, message = DiagnosticStatus.WARN, f'no images on {self._image_topic}'
        elif estimate is not None and estimate.state == 'lost':
            level, message = DiagnosticStatus.WARN, 'odometry lost'
        elif rejected and processed == 0:
            level, message = DiagnosticStatus.WARN, 'every input was rejected'
        elif input_rate > 0 and output_rate < 0.5 * input_rate:
            message = f'model slower than the camera: serving {output_rate:.1f} of ' \
                      f'{input_rate:.1f} Hz (newest frame first)'
        status = DiagnosticStatus(
            level=level, name=f'{self.get_fully_qualified_name()}: depth pipeline', message=message,
            hardware_id=f'{model.name}@{model.device}')
        status.values = [KeyValue(key=key, value=str(value)) for key, value in values.items()]
        return status

    def _publish_diagnostics(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [self.diagnostics_status()]
        self._diagnostics_pub.publish(array)

    # ------------------------------------------------------------------ shutdown

    def destroy_node(self) -> None:
        """Stop the worker (finishing its current frame) before the node goes."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=30.0)
        super().destroy_node()


_OWN_PREFIXES = frozenset(
    {prefix for prefix, _cls, _live in _SECTIONS}
    | {spec.name.split('.')[0] for spec in _NODE_PARAMETERS})


def _build_section(prefix: str, cls: type, values: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        key = f'{prefix}.{f.name}'
        if f.init and key in values:
            value = values[key]
            default = f.default if f.default is not MISSING else None
            kwargs[f.name] = tuple(value) if isinstance(default, tuple) else value
    try:
        return cls(**kwargs)
    except ConfigError as err:
        message = str(err)
        if prefix not in message:
            message = f'{prefix}: {message}'
        raise ConfigError(message) from None
    except TypeError as err:
        raise ConfigError(f'Invalid {prefix} parameters: {err}') from None


def _ros_value(value: object) -> ParameterValue | None:
    """The value as a ROS parameter type, or None when ROS has no type for it."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list) and value:
        items = list(value)
        if all(isinstance(v, bool) for v in items):
            return [bool(v) for v in items]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            return [int(v) for v in items]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
            return [float(v) for v in items]
        if all(isinstance(v, str) for v in items):
            return [str(v) for v in items]
    return None


def _attribute_docs(cls: type) -> dict[str, str]:
    """First sentence of each attribute in a Google-style ``Attributes:`` docstring."""
    docs: dict[str, str] = {}
    text = cls.__doc__ or ''
    section = text.split('Attributes:', 1)[1] if 'Attributes:' in text else ''
    current: str | None = None
    names: list[str] = []
    for line in section.splitlines():
        match = re.match(r'^\s{4,8}([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*)*): (.*)$', line)
        if match:
            names, current = match.group(1).split(', '), match.group(2).strip()
            for name in names:
                docs[name] = current
        elif line.strip() and current is not None:
            for name in names:
                docs[name] += ' ' + line.strip()
        elif not line.strip():
            current = None
    return {name: _plain(' '.join(doc.split())) for name, doc in docs.items()}


def _plain(text: str) -> str:
    """Docstring markup (``x``, :func:`f`) as plain text for ROS descriptions."""
    return re.sub(r':\w+:`~?([^`]*)`', r'\1', text).replace('``', '')


def parameters_yaml() -> str:
    """``config/depth.yaml``: every parameter with its default and description.

    The file is generated from :func:`parameter_specs` (the dataclasses are the one source
    of defaults); ``test_node_config`` checks that the installed file matches.
    """
    lines = [
        '# Parameters of the endo_depth node (endo_depth_ros), with their defaults.',
        '#   ros2 run endo_depth_ros depth_node --ros-args --params-file depth.yaml',
        '#   ros2 launch endo_depth_ros depth.launch.py params_file:=depth.yaml',
        '# Runs the weight-free photometric model with stream alignment as is. Parameters',
        "# marked 'live' can be changed while running (ros2 param set); the others are",
        '# applied at start-up only. Write floating-point values with a decimal point.',
        '# Generated by endo_depth_ros.ros.node.parameters_yaml() from the code defaults.',
        '/**:',
        '  ros__parameters:',
    ]
    section = None
    for spec in parameter_specs():
        prefix, name = spec.name.split('.', 1)
        if prefix != section:
            section = prefix
            lines.append(f'    {prefix}:')
        note = ' (live)' if spec.live else ''
        lines.extend(textwrap.wrap(spec.description + note, width=92,
                                   initial_indent='      # ', subsequent_indent='      #   '))
        lines.append(f'      {name}: {_yaml_value(spec.default)}')
    return '\n'.join(lines) + '\n'


def _yaml_value(value: ParameterValue) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float):
        if math.isinf(value):
            return '.inf' if value > 0 else '-.inf'
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, list):
        return '[' + ', '.join(_yaml_value(v) for v in value) + ']'
    return str(value)


def _check_seconds(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f'{name} must be in [{low}, {high}] seconds, got {value}.')


def _info_with_header(info: CameraInfo, stamp_ns: int, frame_id: str) -> CameraInfo:
    """A copy of ``info`` with the output header (the input message is left untouched)."""
    return CameraInfo(
        header=conversions.make_header(stamp_ns, frame_id), height=info.height,
        width=info.width, distortion_model=info.distortion_model, d=info.d, k=info.k,
        r=info.r, p=info.p, binning_x=info.binning_x, binning_y=info.binning_y, roi=info.roi)


def _twist(previous: tuple[int, np.ndarray, np.ndarray] | None, stamp_ns: int,
           pose: np.ndarray, covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Velocity (6,) in the camera frame from the previous pose, and its covariance.

    The covariance propagates both poses' covariances through the finite difference
    (rotated into the camera frame, divided by dt²).
    """
    if previous is None:
        return None
    prev_ns, prev_pose, prev_cov = previous
    dt = (stamp_ns - prev_ns) * 1e-9
    if dt <= 0:
        return None
    T_prev_cur = np.linalg.inv(prev_pose) @ pose
    rotvec, _ = cv2.Rodrigues(T_prev_cur[:3, :3])
    # Motion expressed in the current camera frame (REP-105 twist in child_frame_id).
    R_cur_prev = T_prev_cur[:3, :3].T
    linear = R_cur_prev @ T_prev_cur[:3, 3] / dt
    angular = R_cur_prev @ rotvec.reshape(3) / dt
    R6 = np.zeros((6, 6))
    R6[:3, :3] = R6[3:, 3:] = pose[:3, :3].T
    twist_cov = R6 @ (covariance + prev_cov) @ R6.T / dt**2
    return np.concatenate([linear, angular]), twist_cov


# ---------------------------------------------------------------------------- entry points


@contextlib.contextmanager
def standalone_node(
    parameters: dict[str, ParameterValue] | None = None,
    model: DepthModel | None = None,
    domain_id: int | None = None,
) -> Iterator[DepthNode]:
    """A ``DepthNode`` in its own context without a worker, every output subscribed.

    For benchmarks and tools that feed frames by calling :meth:`DepthNode.process_image`
    (after :meth:`DepthNode.on_camera_info`) and want the full per-frame cost including
    publishing.

    Args:
        parameters: parameter overrides (``{'alignment.mode': 'window'}``).
        model: a built model to use instead of loading ``model.*``.
        domain_id: ROS domain of the context (None: ``ROS_DOMAIN_ID``).
    """
    context = Context()
    rclpy.init(context=context, domain_id=domain_id,
               signal_handler_options=SignalHandlerOptions.NO)
    node: DepthNode | None = None
    sink: Node | None = None
    try:
        overrides = [Parameter(name, value=value) for name, value in (parameters or {}).items()]
        node = DepthNode(model=model, start_worker=False, context=context,
                         parameter_overrides=overrides)
        sink = Node('endo_depth_sink', context=context)
        for pub in node._pubs.values():
            sink.create_subscription(pub.msg_type, pub.topic_name, _ignore, 1)
        _wait_until(lambda: all(p.get_subscription_count() > 0 for p in node._pubs.values()))
        yield node
    finally:
        if sink is not None:
            sink.destroy_node()
        if node is not None:
            node.destroy_node()
        context.try_shutdown()


def _ignore(_msg: object) -> None:
    """Subscription callback of ``standalone_node``'s sink (never spun)."""


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError('subscriptions did not match in time')
        time.sleep(0.01)


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C/SIGTERM; returns the process exit code.

    Exit codes: 0 after a normal shutdown, 2 when the node cannot start (bad parameter,
    model that cannot load), with the reason logged on one line.
    """
    rclpy.init(args=args)
    node: DepthNode | None = None
    try:
        node = DepthNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except EndoDepthError as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(f'Cannot start: {err}')
        return EXIT_USAGE
    except Exception:
        if rclpy.ok():
            raise
        # The signal handler shut the context down while the node was starting up.
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
