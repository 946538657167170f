"""The node's inputs for a metric scale source: the right camera and the robot's pose.

``scale.source: stereo`` subscribes to ``right/image`` and ``right/camera_info`` (a
rectified pair, ROS stereo convention); each left image is paired with the right image
of the same stamp (within ``input.camera_info_tolerance_s``, waiting at most
``input.camera_info_wait_s`` for it); a left image without one is processed without
stereo (the scale keeps its last good value, counted in /diagnostics).

``scale.source: kinematics`` (or ``scale.kinematics_odometry: kinematics``) takes the
camera's pose from the robot: from ``kinematics/pose`` (``geometry_msgs/PoseStamped``),
or, when ``scale.kinematics_frame`` is set, from TF (``scale.kinematics_base_frame`` ->
``scale.kinematics_frame``; the node refuses to start without ``tf2_ros``). Topic samples
are buffered (bounded) by the subscription and handed to the pipeline by the worker
thread before each frame; with TF the worker asks the buffer for the newest transform
before each frame and hands it over at its own stamp (the scale stage interpolates and
compensates the latency, as for the topic).
"""

from __future__ import annotations

from collections import deque
import importlib
import threading
import time
from typing import Any, Protocol

from geometry_msgs.msg import PoseStamped, TransformStamped
import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image

from endo_depth_ros.errors import BadInputError, ConfigError
from endo_depth_ros.geometry import pose_from_translation_quaternion
from endo_depth_ros.pipeline import Pipeline
from endo_depth_ros.ros import conversions
from endo_depth_ros.scale import ScaleConfig, ScaleStats, StereoPair, baseline_from_projection

#: Right images kept for pairing with left images by stamp.
RIGHT_HISTORY = 8
#: Kinematic samples waiting for the worker.
KINEMATICS_QUEUE = 256


class TransformBuffer(Protocol):
    """What the kinematic input needs of a ``tf2_ros.Buffer``."""

    def lookup_transform(self, target_frame: str, source_frame: str,
                         time: Time) -> TransformStamped:
        """``T_target_source`` at ``time`` (``Time()``: the newest available)."""
        ...


class TfKinematics:
    """The camera's pose from TF (``base_frame`` -> ``camera_frame``), one sample a frame.

    For an image stamped t the sample is the transform at ``t + offset`` (the instant the
    scale stage asks for; tf2 interpolates the robot's own high-rate stream), or, when
    that is not in the buffer yet (the robot's latency), the newest transform at its
    own stamp. Samples only move forward in time (an older one would restart the track).

    Args:
        buffer: a ``tf2_ros.Buffer`` (or anything with its ``lookup_transform``).
        base_frame, camera_frame: the robot's fixed frame and the camera's frame.
        offset_s: ``scale.kinematics_time_offset_s``.
        not_yet: the buffer's exceptions for a transform it cannot give (tf2's
            ``TransformException``: not published yet, frames not connected).
    """

    def __init__(self, buffer: TransformBuffer, base_frame: str, camera_frame: str,
                 offset_s: float, not_yet: tuple[type[Exception], ...]) -> None:
        self.buffer = buffer
        self.base_frame = base_frame
        self.camera_frame = camera_frame
        self._offset_ns = round(offset_s * 1e9)
        self._not_yet = not_yet
        self._last_ns: int | None = None
        #: Frames for which the buffer had no transform at all.
        self.misses = 0

    def sample(self, stamp_ns: int) -> tuple[int, np.ndarray] | None:
        """``(stamp_ns, T_base_camera)`` for the image stamped ``stamp_ns``, or None."""
        target = stamp_ns + self._offset_ns
        msg = self._lookup(Time(nanoseconds=target)) or self._lookup(Time())
        if msg is None:
            self.misses += 1
            return None
        sample_ns = conversions.stamp_to_ns(msg.header.stamp)
        if sample_ns == 0:  # tf2 stamps a static transform 0: it describes every instant
            sample_ns = target
        if self._last_ns is not None and sample_ns <= self._last_ns:
            return None
        self._last_ns = sample_ns
        t, q = msg.transform.translation, msg.transform.rotation
        return sample_ns, pose_from_translation_quaternion((t.x, t.y, t.z),
                                                           (q.x, q.y, q.z, q.w))

    def _lookup(self, time: Time) -> TransformStamped | None:
        try:
            return self.buffer.lookup_transform(self.base_frame, self.camera_frame, time)
        except self._not_yet:
            return None


class ScaleInputs:
    """Subscriptions and buffers for the stereo and kinematic scale sources."""

    def __init__(self, node: Node, config: ScaleConfig) -> None:
        self._node = node
        self._config = config
        self._lock = threading.Condition()
        self._right: deque[tuple[int, Image]] = deque(maxlen=RIGHT_HISTORY)
        self._baseline_m: float | None = None
        self._kinematics: deque[tuple[int, Any]] = deque(maxlen=KINEMATICS_QUEUE)
        self.tf: TfKinematics | None = None
        self.bad_inputs = 0
        if config.source == 'stereo':
            node.create_subscription(Image, 'right/image', self.on_right_image,
                                     qos_profile_sensor_data)
            node.create_subscription(CameraInfo, 'right/camera_info', self.on_right_info,
                                     qos_profile_sensor_data)
        if config.source == 'kinematics' or config.kinematics_odometry == 'kinematics':
            if config.kinematics_frame:
                self.tf = self._tf(node, config)
            else:
                node.create_subscription(PoseStamped, 'kinematics/pose', self.on_kinematics,
                                         qos_profile_sensor_data)

    def _tf(self, node: Node, config: ScaleConfig) -> TfKinematics:
        try:
            tf2_ros = importlib.import_module('tf2_ros')
        except ImportError:
            # Refused rather than silently read from a topic nobody publishes.
            raise ConfigError(
                f'scale.kinematics_frame is {config.kinematics_frame!r} (camera pose from TF) '
                'but tf2_ros is not importable: install tf2_ros (ros-<distro>-tf2-ros), or '
                'leave scale.kinematics_frame empty to read kinematics/pose '
                '(geometry_msgs/PoseStamped).') from None
        buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(buffer, node)
        return TfKinematics(buffer, config.kinematics_base_frame, config.kinematics_frame,
                            config.kinematics_time_offset_s, (tf2_ros.TransformException,))

    # ------------------------------------------------------------------ callbacks

    def on_right_image(self, msg: Image) -> None:
        """Keep recent right images for pairing by stamp."""
        with self._lock:
            self._right.append((conversions.stamp_to_ns(msg.header.stamp), msg))
            self._lock.notify_all()

    def on_right_info(self, msg: CameraInfo) -> None:
        """Read the baseline from the right camera's projection (``P[0,3] = -fx * B``)."""
        try:
            baseline = baseline_from_projection(msg.p)
        except BadInputError as err:
            self.bad_inputs += 1
            self._node.get_logger().warning(f'Ignoring right camera_info: {err}',
                                            throttle_duration_sec=5.0)
            return
        with self._lock:
            self._baseline_m = baseline

    def on_kinematics(self, msg: PoseStamped) -> None:
        """Queue a kinematic camera pose for the worker."""
        with self._lock:
            self._kinematics.append((conversions.stamp_to_ns(msg.header.stamp), msg.pose))

    # ------------------------------------------------------------------ worker side

    def stereo_for(self, stamp_ns: int, tolerance_s: float, wait_s: float,
                   left_size: tuple[int, int]) -> StereoPair | None:
        """The right image paired with a left stamp, or None (waits at most ``wait_s``)."""
        if self._config.source != 'stereo':
            return None
        tolerance_ns = round(tolerance_s * 1e9)
        deadline = time.monotonic() + wait_s
        with self._lock:
            while True:
                match = next((m for s, m in reversed(self._right)
                              if abs(s - stamp_ns) <= tolerance_ns), None)
                remaining = deadline - time.monotonic()
                if match is not None or remaining <= 0:
                    break
                self._lock.wait(remaining)
            baseline = self._baseline_m
        if match is None or baseline is None:
            return None
        try:
            right = conversions.image_to_rgb(match)
        except BadInputError as err:
            self.bad_inputs += 1
            self._node.get_logger().warning(f'Ignoring a right image: {err}',
                                            throttle_duration_sec=5.0)
            return None
        if (right.shape[1], right.shape[0]) != left_size:
            self.bad_inputs += 1
            self._node.get_logger().warning(
                f'Right image {right.shape[1]}x{right.shape[0]} does not match the left '
                f'{left_size[0]}x{left_size[1]}: stereo skipped.', throttle_duration_sec=5.0)
            return None
        return StereoPair(right, baseline)

    def feed_kinematics(self, pipeline: Pipeline, stamp_ns: int) -> None:
        """Hand the queued kinematic samples (or a TF sample for the image stamped
        ``stamp_ns``) to the pipeline."""
        if self.tf is not None:
            sample = self.tf.sample(stamp_ns)
            samples = [sample] if sample is not None else []
        else:
            with self._lock:
                messages = list(self._kinematics)
                self._kinematics.clear()
            samples = [(stamp, conversions.pose_from_msg(pose)) for stamp, pose in messages]
        for sample_ns, pose in samples:
            try:
                pipeline.add_kinematics(sample_ns, pose)
            except BadInputError:
                self.bad_inputs += 1

    def diagnostics(self, stats: ScaleStats) -> dict[str, object]:
        """``scale.*`` key-values for /diagnostics."""
        if stats.source == 'none' and self._config.kinematics_odometry == 'visual':
            return {'scale.source': 'none'}
        values: dict[str, object] = {
            'scale.source': stats.source,
            'scale.factor': f'{stats.scale:.4f}',
            'scale.measured': stats.measured,
            'scale.fits': stats.fits,
            'scale.fallbacks': stats.fallbacks,
            **{f'scale.fallbacks.{k}': n for k, n in sorted(stats.reasons.items())},
            'scale.bad_inputs': self.bad_inputs,
        }
        if self.tf is not None:
            values['scale.tf_misses'] = self.tf.misses
        if stats.source == 'kinematics':
            values['scale.kinematics_baseline_mm'] = f'{1e3 * stats.baseline_m:.2f}'
            values['scale.held'] = stats.held
            values['scale.matched_fraction'] = f'{stats.coverage:.3f}'

        if stats.source == 'stereo':
            values['scale.stereo_coverage'] = f'{stats.coverage:.3f}'
            values['scale.baseline_mm'] = (f'{1e3 * self._baseline_m:.3f}'
                                           if self._baseline_m else 'none')
        return values

