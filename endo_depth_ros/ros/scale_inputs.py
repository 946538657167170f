"""The node's inputs for a metric scale source: the right camera and the robot's pose.

``scale.source: stereo`` subscribes to ``right/image`` and ``right/camera_info`` (a
rectified pair, ROS stereo convention); each left image is paired with the right image
of the same stamp (within ``input.camera_info_tolerance_s``, waiting at most
``input.camera_info_wait_s`` for it); a left image without one is processed without
stereo (the scale keeps its last good value, counted in /diagnostics).

``scale.source: kinematics`` (or ``scale.kinematics_odometry: kinematics``) takes the
camera's pose from the robot: from TF (``scale.kinematics_base_frame`` ->
``scale.kinematics_frame``) when that frame is set and ``tf2_ros`` is importable, else
from ``kinematics/pose`` (``geometry_msgs/PoseStamped``). Samples are buffered (bounded)
by the subscription and handed to the pipeline by the worker thread before each frame.
"""

from __future__ import annotations

from collections import deque
import importlib
import threading
import time
from typing import Any

from geometry_msgs.msg import Pose, PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image

from endo_depth_ros.errors import BadInputError
from endo_depth_ros.pipeline import Pipeline
from endo_depth_ros.ros import conversions
from endo_depth_ros.scale import ScaleConfig, ScaleStats, StereoPair, baseline_from_projection

#: Right images kept for pairing with left images by stamp.
RIGHT_HISTORY = 8
#: Kinematic samples waiting for the worker.
KINEMATICS_QUEUE = 256


class ScaleInputs:
    """Subscriptions and buffers for the stereo and kinematic scale sources."""

    def __init__(self, node: Node, config: ScaleConfig) -> None:
        self._node = node
        self._config = config
        self._lock = threading.Condition()
        self._right: deque[tuple[int, Image]] = deque(maxlen=RIGHT_HISTORY)
        self._baseline_m: float | None = None
        self._kinematics: deque[tuple[int, Any]] = deque(maxlen=KINEMATICS_QUEUE)
        self._tf_buffer: Any = None
        self.bad_inputs = 0
        if config.source == 'stereo':
            node.create_subscription(Image, 'right/image', self.on_right_image,
                                     qos_profile_sensor_data)
            node.create_subscription(CameraInfo, 'right/camera_info', self.on_right_info,
                                     qos_profile_sensor_data)
        if config.source == 'kinematics' or config.kinematics_odometry == 'kinematics':
            self._tf_buffer = self._tf(node) if config.kinematics_frame else None
            if self._tf_buffer is None:
                node.create_subscription(PoseStamped, 'kinematics/pose', self.on_kinematics,
                                         qos_profile_sensor_data)

    def _tf(self, node: Node) -> Any:
        try:
            tf2_ros = importlib.import_module('tf2_ros')
        except ImportError:
            node.get_logger().warning(
                'scale.kinematics_frame is set but tf2_ros is not importable: reading the '
                'camera pose from kinematics/pose (PoseStamped) instead.')
            return None
        buffer = tf2_ros.Buffer()
        self._tf_listener = tf2_ros.TransformListener(buffer, node)
        return buffer

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
        """Hand the queued kinematic samples (or a TF lookup) to the pipeline."""
        if self._tf_buffer is not None:
            self._lookup_tf(pipeline, stamp_ns)
            return
        with self._lock:
            samples = list(self._kinematics)
            self._kinematics.clear()
        for sample_ns, pose in samples:
            try:
                pipeline.add_kinematics(sample_ns, conversions.pose_from_msg(pose))
            except BadInputError:
                self.bad_inputs += 1

    def _lookup_tf(self, pipeline: Pipeline, stamp_ns: int) -> None:
        target_ns = stamp_ns + round(self._config.kinematics_time_offset_s * 1e9)
        try:
            transform = self._tf_buffer.lookup_transform(
                self._config.kinematics_base_frame, self._config.kinematics_frame,
                Time(nanoseconds=target_ns))
        except Exception:  # tf2's Lookup/Extrapolation/Connectivity errors: not yet known
            return
        t, q = transform.transform.translation, transform.transform.rotation
        pose = Pose()
        pose.position.x, pose.position.y, pose.position.z = t.x, t.y, t.z
        pose.orientation = q
        # Stored at the instant it describes, where the scale source looks it up.
        pipeline.add_kinematics(target_ns, conversions.pose_from_msg(pose))

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
        if stats.source == 'stereo':
            values['scale.stereo_coverage'] = f'{stats.coverage:.3f}'
            values['scale.baseline_mm'] = (f'{1e3 * self._baseline_m:.3f}'
                                           if self._baseline_m else 'none')
        return values

