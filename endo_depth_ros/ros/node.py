"""The live node ``endo_depth``: endoscope images in; depth, point clouds and poses out.

A thin adapter over :class:`endo_depth_ros.pipeline.Pipeline`:

- subscriptions (reliable; every QoS overridable with ``qos_overrides.<topic>.*``, see
  :mod:`endo_depth_ros.ros.qos`): ``image`` (``sensor_msgs/Image``) or
  ``image/compressed``, keep last 1, taken only when the stages can start on it
  (:mod:`endo_depth_ros.ros.input_gate`), and ``camera_info``, keep last 10;
- publications at the working size (``input.max_width``/``max_height``), stamped with
  the input image's header (reliable, shallow queue):
  ``depth/image`` (32FC1 metres, NaN invalid), ``depth/camera_info``,
  ``depth/colormap`` (rgb8 turbo), ``depth/points`` (PointCloud2), ``pose``
  (PoseStamped in ``odom``), ``odom`` (nav_msgs/Odometry), TF ``odom -> camera``
  (when tf2_ros is importable) and ``/diagnostics`` (~1 Hz).

It never falls behind the camera: the middleware keeps only the newest image until the
stages can start on it (older ones are counted as dropped), the image callback only drops
it into a one-slot mailbox (an unprocessed older one is dropped and counted) and worker
threads run the pipeline and publish. With ``input.pipelined`` (default) the work is
split into three stages, each in its own thread with a one-slot mailbox in front
(:mod:`endo_depth_ros.stages`): decode + working size + model (``Pipeline.prepare``),
odometry + alignment (``Pipeline.complete``), cloud (``Pipeline.add_cloud``) +
publishing; consecutive frames
overlap on the CPU cores, frames leave in order, the newest first, drops counted.
Work for outputs nobody subscribes to is skipped. Bad inputs are dropped with one
rate-limited warning per cause and counted in diagnostics; the node keeps serving.
Start-up errors (bad parameters or ``--ros-args``, a model that cannot load) end the
process with one line and exit code 2.

Parameters are listed with their defaults and meaning in ``config/depth.yaml``;
:func:`endo_depth_ros.ros.parameters.parameter_specs` is the authoritative list;
:mod:`endo_depth_ros.ros.diagnostics` builds the ``/diagnostics`` report.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
import contextlib
import ctypes
from dataclasses import dataclass, field, fields
import importlib
import math
import os
import re
import signal
import sys
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
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.logging import LoggingSeverity
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.qos_overriding_options import InvalidQosOverridesError
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from endo_depth_ros.cli.common import EXIT_USAGE
from endo_depth_ros.errors import BadInputError, ConfigError, EndoDepthError
from endo_depth_ros.geometry import CloudConfig
from endo_depth_ros.models import DepthModel
from endo_depth_ros.pipeline import FrameResult, Pipeline, PreparedFrame, is_video_model
from endo_depth_ros.resolution import upsample_depth
from endo_depth_ros.ros import conversions, diagnostics, qos
from endo_depth_ros.ros.input_gate import InputGate, ReplacedFrames
from endo_depth_ros.ros.parameters import (
    OWN_PREFIXES,
    NodeSettings,
    ParameterValue,
    build_section,
    parameter_specs,
    parameters_yaml,
    pipeline_config_from_parameters,
)
from endo_depth_ros.ros.scale_inputs import ScaleInputs
from endo_depth_ros.stages import StageChain
from endo_depth_ros.visualize import colorize_depth

RCLError = _rclpy.RCLError

#: Re-exported: the parameters are defined in ``endo_depth_ros.ros.parameters``.
__all__ = ['NODE_NAME', 'DepthNode', 'main', 'parameter_specs', 'parameters_yaml',
           'pipeline_config_from_parameters', 'standalone_node']

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
#: Longest log line (characters): inputs can carry huge strings (100000 distortion values).
MAX_LOG_CHARS = 500
#: Longest logged traceback of an unexpected error (characters).
MAX_TRACEBACK_CHARS = 4000


def capped(text: str, limit: int = MAX_LOG_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f'{text[:limit]}... ({len(text) - limit} more characters)'


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


@dataclass
class _Work:
    """One frame on its way through the node's stages."""

    prepared: PreparedFrame
    wanted: _Wanted
    timings: dict[str, float]
    results: list[FrameResult] = field(default_factory=list)


#: A new image is taken while the first stage still works on the previous one if that
#: stage's work (conversion, resize, model; median ms) takes at most this long: taking a
#: 6 MB HD message then overlaps the work, and the image ages at most about this much (a
#: slow model waits for a free stage instead). Measured over real topics at 1080p, 60 Hz
#: (photometric, ~10 ms): 11-12 published frames/s over UDP taking ahead, 6-9 without;
#: 18-20 either way over shared memory.
TAKE_AHEAD_MAX_MS = 50.0
#: The stages whose times :data:`TAKE_AHEAD_MAX_MS` is compared with.
FIRST_STAGE_TIMINGS = ('conversion', 'resize', 'model')


class DepthNode(Node):
    """The ``endo_depth`` node (see the module docstring).

    Args:
        model: an already built model to use instead of loading ``model.*`` (benchmarks).
        start_worker: start the processing threads (False: call :meth:`process_image`
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
        # First: destroy_node() needs these even when the rest of __init__ fails.
        self._lock = threading.Condition()
        self._stopping = False
        self._chain: StageChain | None = None
        # Held by the stages while they use the pipeline's halves (see _restart_stream).
        self._prepare_lock = threading.RLock()
        self._complete_lock = threading.RLock()
        self._specs = {spec.name: spec for spec in parameter_specs()}
        values = self._declare_parameters()
        self._settings = NodeSettings.from_values(values)
        config = pipeline_config_from_parameters(values)
        self._pipeline = Pipeline(config, model=model)

        self._infos: deque[tuple[int, CameraInfo]] = deque(maxlen=CAMERA_INFO_HISTORY)
        self._info_matched = False
        self._info_fallback = False
        self._stats = diagnostics.FrameStats()
        self._replaced = ReplacedFrames()
        self._lost_at_take = 0
        self._take_ahead = False  # until the first frame's stage times are known
        self._warned: dict[str, float] = {}
        self._backwards = 0
        # Stamp of the last processed frame, and of the last one dropped as a jump ahead.
        self._last_good_stamp: int | None = None
        self._jump_stamp: int | None = None
        self._jumps = 0
        self._last_conversion_ms = 0.0
        self._debug = self.get_logger().is_enabled_for(LoggingSeverity.DEBUG)
        # Frame id and camera info of frames in flight (window alignment emits them later).
        self._frames: dict[int, tuple[str, CameraInfo]] = {}
        # Last published pose (stamp, T_odom_camera, covariance), for the odom twist.
        self._previous_pose: tuple[int, np.ndarray, np.ndarray] | None = None

        self._create_publishers()
        self._create_subscriptions()
        self._scale_inputs = ScaleInputs(self, config.scale)  # right camera / kinematics
        self._diagnostics_timer = self.create_timer(
            self._settings.diagnostics_period_s, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        model_ = self._pipeline.model
        self.get_logger().info(
            f'Ready: model {model_.name} ({model_.backend}, {model_.device}, '
            f'{model_.precision}, {model_.output_kind}), alignment '
            f'{self._pipeline.aligner.config.mode}, listening on {self._image_topic} + '
            f'{self._info_topic}.')
        if model_.selection:
            self.get_logger().info(f'Model path: {model_.selection}')
        if start_worker:
            # A video model's stream state must follow resets in order: one thread for it.
            pipelined = self._settings.pipelined and not is_video_model(model_)
            stages = ([self._prepare_stage, self._complete_stage, self._publish_stage]
                      if pipelined else [self._whole_stage])
            names = (['endo_depth_prepare', 'endo_depth_complete', 'endo_depth_publish']
                     if pipelined else ['endo_depth_worker'])
            self._chain = StageChain(stages, names, self._on_stage_drop, self._on_stage_error,
                                     on_accepting=self._wake_executor)
            self.get_logger().debug(f'Processing threads: {", ".join(names)}.')

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
            if name not in self._specs and name.split('.')[0] in OWN_PREFIXES)
        if unknown:
            raise ConfigError(f'Unknown parameter(s): {", ".join(unknown)} (typo?).')
        return values

    def _create_publishers(self) -> None:
        out_qos = qos.output_qos(self._settings.queue_depth)
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
                self._pubs[key] = self._with_qos_overrides(
                    self.create_publisher, msg_type, topic, out_qos)
        self._diagnostics_pub = self._with_qos_overrides(
            self.create_publisher, DiagnosticArray, '/diagnostics', qos.output_qos(10))
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
        for pub in self._pubs.values():
            self.get_logger().debug(
                f'Publishing {pub.topic_name} ({qos.describe(pub.qos_profile)}).')

    def _create_subscriptions(self) -> None:
        image_type: type = CompressedImage if self._settings.use_compressed else Image
        image_topic = 'image/compressed' if self._settings.use_compressed else 'image'
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_image_qos,
                                            message_lost=self._on_image_lost)
        # Images are taken only when the first stage can start on one (see input_gate).
        self._image_sub = self._with_qos_overrides(
            self.create_subscription, image_type, image_topic, qos.image_qos(),
            self._take_image, event_callbacks=events,
            callback_group=InputGate(self._accepting_images))
        self._info_sub = self._with_qos_overrides(
            self.create_subscription, CameraInfo, 'camera_info', qos.input_qos(),
            self.on_camera_info)
        # Resolved names (namespace and remapping applied): what a user finds in `ros2 topic`.
        self._image_topic = self._image_sub.topic_name
        self._info_topic = self._info_sub.topic_name
        for sub in (self._image_sub, self._info_sub):
            self.get_logger().debug(
                f'Subscribed to {sub.topic_name} ({qos.describe(sub.qos_profile)}); override '
                f'with qos_overrides.{sub.topic_name}.subscription.reliability etc.')

    def _with_qos_overrides(self, create: Callable[..., Any], msg_type: type, topic: str,
                            profile: QoSProfile, *args: Any, **kwargs: Any) -> Any:
        """``create`` a publisher or subscription whose QoS ``qos_overrides.*`` can change."""
        try:
            return create(msg_type, topic, *args, qos_profile=profile,
                          qos_overriding_options=qos.overriding_options(), **kwargs)
        except (InvalidQosOverridesError, InvalidParameterTypeException, KeyError,
                ValueError, RuntimeError) as err:  # RuntimeError: an unknown policy value
            name = self.resolve_topic_name(topic)
            raise ConfigError(
                f'Invalid qos_overrides.{name}.*: {capped(str(err))} (reliability: reliable, '
                f'best_effort or best_available; history: keep_last; depth: '
                f'1..{qos.MAX_DEPTH}).') from None

    def _on_image_lost(self, event: Any) -> None:
        """The middleware reports images that never arrived (fragments lost, best effort)."""
        with self._lock:
            self._stats.lost += int(event.total_count_change)

    def _on_incompatible_image_qos(self, event: Any) -> None:
        """A publisher on the image topic offers a QoS our subscription cannot match."""
        self._warn_once(
            'incompatible_qos',
            f'A publisher on {self._image_topic} is incompatible with this node\'s '
            f'{qos.describe(self._image_sub.qos_profile)} subscription (last policy: '
            f'{getattr(event.last_policy_kind, "name", event.last_policy_kind)}); no images '
            'will arrive from it. A best-effort (sensor-data) camera driver needs '
            f'-p qos_overrides.{self._image_topic}.subscription.reliability:=best_effort '
            '(see README, QoS and HD video).')

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
                cloud = build_section('geometry', CloudConfig, {**current, **cloud_values})
            settings = self._settings
            if settings_values:
                current = {name: self.get_parameter(name).value for name in self._specs
                           if name.split('.')[0] in ('input', 'outputs', 'frame_ids',
                                                     'diagnostics')}
                settings = NodeSettings.from_values({**current, **settings_values})
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        # Validated: apply (the worker reads these attributes once per frame).
        if cloud is not None:
            self._pipeline.set_cloud_config(cloud)
        self._settings = settings
        return SetParametersResult(successful=True)

    def working_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` at which this node processes a ``width`` x ``height`` image."""
        return self._pipeline.config.resolution.working_size(width, height)

    # ------------------------------------------------------------------ callbacks

    def on_image(self, msg: Image | CompressedImage, info: MessageInfo | None = None) -> None:
        """Hand the image to the processing threads (newest wins).

        Args:
            msg: the image.
            info: its message info; the frames its publisher sent since the last one taken
                and that the subscription's history replaced are counted as received and
                dropped (newest frame first).
        """
        with self._lock:
            lost = self._stats.lost
            replaced = self._replaced.replaced(info, lost - self._lost_at_take)
            self._lost_at_take = lost
            self._stats.received += 1 + replaced
            self._stats.dropped += replaced
            self._stats.untaken += replaced
            self._stats.last_input = time.monotonic()
        if self._chain is not None:
            self._chain.put(msg)

    def _take_image(self, msg: Image | CompressedImage, info: MessageInfo) -> None:
        """Subscription callback (with the message info: rclpy passes it to two-argument
        callbacks)."""
        self.on_image(msg, info)

    def _accepting_images(self) -> bool:
        """Whether to take a new image now (InputGate; see TAKE_AHEAD_MAX_MS)."""
        return self._chain is None or self._chain.accepting(ahead=self._take_ahead)

    def _wake_executor(self) -> None:
        """The stages can start a frame at once: let the executor take the newest image."""
        executor = self.executor
        if executor is not None:
            executor.wake()

    def on_camera_info(self, msg: CameraInfo) -> None:
        """Subscription callback: remember recent camera infos for pairing by stamp."""
        with self._lock:
            self._infos.append((conversions.stamp_to_ns(msg.header.stamp), msg))
            self._lock.notify_all()

    def _on_stage_drop(self, _stage: int) -> None:
        """A frame waiting for a busy stage was replaced by a newer one."""
        with self._lock:
            self._stats.dropped += 1

    def _on_stage_error(self, _stage: int, err: Exception, _item: object) -> None:
        self._count_failure(err)

    # ------------------------------------------------------------------ processing

    def handle_image(self, msg: Image | CompressedImage) -> None:
        """Process one image message, turning any failure into a counted rejection."""
        try:
            self.process_image(msg)
        except Exception as err:
            self._count_failure(err)

    def _count_failure(self, err: Exception) -> None:
        """A frame failed: a bad input is a counted rejection; a bug is logged too."""
        if isinstance(err, BadInputError):
            self._reject(err.reason, str(err))
            return
        if not self.context.ok():
            return  # shutting down: publishers are gone, nothing to report
        # A bug must not stop the node serving the next frames; say what happened.
        self._reject('internal_error', f'{type(err).__name__}: {err}')
        trace = ''.join(traceback.format_exception(err))
        self.get_logger().error(capped(
            f'Unexpected error while processing a frame (the node keeps serving):\n{trace}',
            MAX_TRACEBACK_CHARS), throttle_duration_sec=5.0)

    def _whole_stage(self, msg: Image | CompressedImage) -> None:
        """The unpipelined worker: every stage of one frame in one thread."""
        self.process_image(msg)

    def process_image(self, msg: Image | CompressedImage) -> dict[str, float]:
        """Convert, run the pipeline and publish one image, all in the calling thread.

        The stages of the pipelined node run one after the other: the outputs are the
        same as those of the pipelined node when it drops nothing.

        Returns:
            Per-stage wall time of this call (ms): conversion, resize, model, odometry,
            alignment, geometry, publish (stages that did not run are absent).

        Raises:
            BadInputError: the image, its camera info or its stamp cannot be used.
        """
        work = self._prepare_stage(msg)
        if work is None:
            return {'conversion': self._last_conversion_ms}
        self._complete_stage(work)
        self._publish_stage(work)
        return work.timings

    def _prepare_stage(self, msg: Image | CompressedImage) -> _Work | None:
        """Stage 1: message -> arrays, camera info pairing, working size, model.

        Returns:
            The frame for :meth:`_complete_stage`, or None when nobody listens.
        """
        clock = self._pipeline.stage_clock
        start = clock()
        settings = self._settings
        stamp_ns = conversions.stamp_to_ns(msg.header.stamp)
        self._check_stamp_jump(stamp_ns)
        if isinstance(msg, CompressedImage):
            rgb = conversions.compressed_to_rgb(msg, settings.max_input_pixels)
        else:
            rgb = conversions.image_to_rgb(msg, settings.max_input_pixels)
        info = self._camera_info_for(stamp_ns)
        intrinsics = conversions.camera_info_to_intrinsics(info, (rgb.shape[1], rgb.shape[0]))
        frame_id = self._camera_frame(msg.header.frame_id)
        conversion_ms = self._last_conversion_ms = (clock() - start) * 1e3

        wanted = self._wanted()
        if not wanted.any:
            with self._lock:
                self._stats.idle += 1
            if self._debug:
                self.get_logger().debug(f'Frame {stamp_ns} skipped: no output is subscribed.')
            return None
        stereo = self._scale_inputs.stereo_for(
            stamp_ns, self._settings.camera_info_tolerance_s, self._settings.camera_info_wait_s,
            (rgb.shape[1], rgb.shape[0]))
        with self._prepare_lock:
            prepared = self._pipeline.prepare(rgb, intrinsics, stamp_ns, stereo=stereo)
        self._frames[stamp_ns] = (frame_id, info)
        timings = {'conversion': conversion_ms, **prepared.timings_ms}
        return _Work(prepared, wanted, timings)

    def _complete_stage(self, work: _Work) -> _Work:
        """Stage 2: odometry, alignment and scale of a prepared frame."""
        stamp_ns = work.prepared.stamp_ns
        with self._complete_lock:
            self._scale_inputs.feed_kinematics(self._pipeline, stamp_ns)
            try:
                work.results = self._run_pipeline(work.prepared, work.wanted)
            except BadInputError:
                self._frames.pop(stamp_ns, None)
                raise
            self._last_good_stamp = stamp_ns
        with self._lock:
            self._stats.processed += 1
        return work

    def _publish_stage(self, work: _Work) -> None:
        """Stage 3: point cloud, results -> messages -> publishers."""
        timings = work.timings
        for result in work.results:
            if work.wanted.points:
                self._pipeline.add_cloud(result)
            publish_ms = self._publish(result, work.wanted)
            timings.update(result.timings_ms)
            timings['publish'] = publish_ms
        with self._lock:
            self._stats.add_timings(timings)
            first_stage_ms = sum(self._stats.median_ms(stage) for stage in FIRST_STAGE_TIMINGS)
            self._take_ahead = first_stage_ms <= TAKE_AHEAD_MAX_MS
        if self._debug:
            prepared = work.prepared
            size = work.results[-1].intrinsics.size if work.results else prepared.intrinsics.size
            self.get_logger().debug(
                f'Frame {prepared.stamp_ns} ({prepared.input_size[0]}x{prepared.input_size[1]} '
                f'-> {size[0]}x{size[1]}): {len(work.results)} result(s), ' + ', '.join(
                    f'{stage} {ms:.1f} ms' for stage, ms in timings.items()))

    def _check_stamp_jump(self, stamp_ns: int) -> None:
        """Drop a frame stamped far ahead of the last good one (a wrong clock, a corrupt
        header) instead of adopting its stamp, which would make the next good frames look
        out of order; a stream that stays that far ahead is taken as restarted."""
        last = self._last_good_stamp
        jump_ns = round(self._settings.max_stamp_jump_s * 1e9)
        if last is None or stamp_ns - last <= jump_ns:
            self._jumps = 0
            return
        previous_jump = self._jump_stamp
        self._jump_stamp = stamp_ns
        # Successive jumped frames must agree with each other to count as a new timeline.
        consistent = previous_jump is not None and 0 <= stamp_ns - previous_jump <= jump_ns
        self._jumps = self._jumps + 1 if consistent else 1
        if self._jumps >= STAMP_RESTART_FRAMES:
            self.get_logger().warning(
                f'{self._jumps} frames in a row are stamped more than '
                f'{self._settings.max_stamp_jump_s} s after the last good frame: taking it as '
                'a restarted stream and resetting the pipeline.')
            self._restart_stream()
            return
        raise BadInputError(
            f'Stamp {stamp_ns} ns is {(stamp_ns - last) / 1e9:.3f} s after the last good '
            f'frame ({last} ns), more than input.max_stamp_jump_s = '
            f'{self._settings.max_stamp_jump_s} s.', 'stamp_jump')

    def _restart_stream(self) -> None:
        # Both halves of the pipeline are reset: wait for the stage using each (always in
        # this order, so that the stages cannot deadlock).
        with self._complete_lock, self._prepare_lock:
            self._pipeline.reset()
            self._frames.clear()
            self._previous_pose = None
            self._last_good_stamp = None
            self._jumps = self._backwards = 0

    def _run_pipeline(self, prepared: PreparedFrame, wanted: _Wanted) -> list[FrameResult]:
        # The kinematic scale is measured from odometry: it needs the pose.
        needs_pose = wanted.needs_pose or self._pipeline.config.scale.source == 'kinematics'
        # The cloud is built by the publishing stage (Pipeline.add_cloud), off this one.
        kwargs: dict[str, Any] = {'compute_points': False, 'compute_pose': needs_pose}
        try:
            results = self._pipeline.complete(prepared, **kwargs)
        except BadInputError as err:
            if err.reason != 'stamp_order':
                raise
            self._backwards += 1
            if self._backwards < STAMP_RESTART_FRAMES:
                raise
            self.get_logger().warning(
                f'{self._backwards} frames in a row went back in time: taking it as a restarted '
                'stream (looping bag or restarted driver) and resetting the pipeline.')
            this_frame = self._frames[prepared.stamp_ns]
            self._restart_stream()
            self._frames[prepared.stamp_ns] = this_frame
            results = self._pipeline.complete(prepared, **kwargs)
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
        clock = self._pipeline.stage_clock
        start = clock()
        frame_id, info = self._frames.pop(result.stamp_ns, (None, None))
        for stamp in [s for s in list(self._frames) if s < result.stamp_ns]:
            self._frames.pop(stamp, None)  # frames the aligner (or a busy stage) dropped
        if frame_id is None or info is None:
            return 0.0
        stamp_ns = result.stamp_ns
        depth = result.depth
        full_size = result.input_size or result.intrinsics.size
        at_input_size = self._settings.full_resolution or full_size == result.intrinsics.size
        if self._settings.full_resolution:
            depth = upsample_depth(depth, full_size)
        if wanted.depth:
            self._pubs['depth'].publish(conversions.depth_to_image(depth, stamp_ns, frame_id))
        if wanted.info:
            # At the input size the input's camera_info describes the image (REP-104 ROI
            # and binning included); at the working size K and P are rescaled.
            self._pubs['info'].publish(
                _info_with_header(info, stamp_ns, frame_id) if at_input_size else
                conversions.rescaled_camera_info(info, result.intrinsics, stamp_ns, frame_id))
        if wanted.colormap:
            colours = colorize_depth(depth)
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
                self._stats.add_latency((now_ns - result.stamp_ns) / 1e6)
        return (clock() - start) * 1e3

    # ------------------------------------------------------------------ reporting

    def _reject(self, reason: str, message: str) -> None:
        with self._lock:
            self._stats.rejected[reason] += 1
        now = time.monotonic()
        if now - self._warned.get(reason, -math.inf) >= WARN_PERIOD_S:
            self._warned[reason] = now
            self.get_logger().warning(capped(f'Dropped an input ({reason}): {message}'))

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned[key] = time.monotonic()
            self.get_logger().warning(capped(message))

    def diagnostics_status(self) -> DiagnosticStatus:
        """The node's current status for /diagnostics (rates since the previous call)."""
        with self._lock:
            tick = self._stats.tick()
        model = self._pipeline.model
        aligner_stats = self._pipeline.aligner.stats
        estimate = self._pipeline.last_pose
        values = diagnostics.values(tick)
        values.update({
            'model.name': model.name,
            'model.backend': model.backend,
            'model.device': model.device,
            'model.precision': model.precision,
            'model.selection': model.selection,
            'model.output_kind': model.output_kind,
            'model.max_depth_m': 'n/a' if model.max_depth is None else f'{model.max_depth:g}',
            'alignment.mode': self._pipeline.aligner.config.mode,
            # Video models: earlier frames in the streaming cache / most it holds.
            **({'model.video_cache': '{}/{}'.format(*getattr(model, 'cache_fill', (0, 0)))}
               if is_video_model(model) else {}),
            'alignment.fallbacks': getattr(aligner_stats, 'fallbacks', 'n/a'),
            'alignment.resets': getattr(aligner_stats, 'resets', 'n/a'),
            'odometry.state': estimate.state if estimate is not None else 'off',
            'odometry.inliers': estimate.inliers if estimate is not None else 0,
            **self._scale_inputs.diagnostics(self._pipeline.scale.stats),
        })
        level, message = diagnostics.verdict(
            tick, self._image_topic, estimate.state if estimate is not None else None)
        status = DiagnosticStatus(
            level=bytes([level]), name=f'{self.get_fully_qualified_name()}: depth pipeline',
            message=message, hardware_id=f'{model.name}@{model.device}')
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
        # A node whose __init__ failed (e.g. the model did not load) has no worker yet.
        if hasattr(self, '_chain'):
            with self._lock:
                self._stopping = True
                self._lock.notify_all()
            if self._chain is not None and not self._chain.stop(timeout=0.2):
                self.get_logger().info(
                    'Shutting down: finishing the current frame (press Ctrl-C again to '
                    'exit at once).')
                self._chain.stop(timeout=30.0)
        super().destroy_node()



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


#: glibc's ``mallopt`` options and the values the node sets (bytes): buffers up to 32 MB
#: come from the heap, and up to 128 MB of freed heap stays mapped.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
FRAME_HEAP_MAX_BYTES = 32 << 20
FREED_HEAP_KEPT_BYTES = 128 << 20


def _reuse_freed_frame_memory() -> None:
    """Let big per-frame buffers reuse freed memory instead of fresh pages (glibc only).

    By default glibc serves each 6 MB HD message (and each output) with a new memory
    mapping and unmaps it when freed, so the kernel zero-fills ~1500 pages per frame:
    taking one 1920x1080 image cost 450-600 page faults and ~30 % more CPU than with
    these settings (measured with rclpy takes of 6 MB messages). Elsewhere (musl, macOS)
    this does nothing.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, FRAME_HEAP_MAX_BYTES)
    mallopt(_M_TRIM_THRESHOLD, FREED_HEAP_KEPT_BYTES)


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C/SIGTERM; returns the process exit code.

    Exit codes: 0 after a normal shutdown; 2 when the node cannot start (bad parameter or
    ``--ros-args``, missing params file, model that cannot load), with the reason on one
    line; 128 + the signal number when a second Ctrl-C/SIGTERM arrives while the node
    is still finishing its current frame (it then exits at once).
    """
    _reuse_freed_frame_memory()
    try:
        rclpy.init(args=args)
    except Exception as err:  # RCLError from bad --ros-args: params file, log level, ...
        _startup_failure(err)
        return EXIT_USAGE
    node: DepthNode | None = None
    try:
        node = DepthNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except EndoDepthError as err:
        _startup_failure(err)
        return EXIT_USAGE
    except Exception as err:
        if not rclpy.ok():
            pass  # a signal shut the context down (while starting up or spinning)
        elif node is None and isinstance(err, RCLError):
            _startup_failure(err)  # e.g. a params file rcl cannot apply to the node
            return EXIT_USAGE
        else:
            raise
    finally:
        _exit_on_next_signal()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _startup_failure(err: BaseException) -> None:
    """Log why the node cannot start, on one line (rcl errors span several)."""
    first = next((line.strip() for line in str(err).splitlines() if line.strip()),
                 type(err).__name__)
    first = re.sub(r',? at [^,]*\.c:\d+', '', first)  # rcl's source locations
    message = capped(f'Cannot start: {first}')
    try:
        rclpy.logging.get_logger(NODE_NAME).fatal(message)
    except Exception:  # logging itself may not be initialised after a failed init
        print(f'[FATAL] [{NODE_NAME}]: {message}', file=sys.stderr, flush=True)


def _exit_on_next_signal() -> None:
    """From now on (shutting down), a second Ctrl-C/SIGTERM ends the process at once.

    The worker may be in the middle of a long frame; a user who presses Ctrl-C again
    wants out, without waiting and without a KeyboardInterrupt traceback.
    """
    def exit_now(signum: int, _frame: object) -> None:
        os.write(2, f'[{NODE_NAME}] second signal {signum}: exiting without finishing the '
                    'current frame\n'.encode())
        os._exit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, exit_now)


if __name__ == '__main__':
    sys.exit(main())
