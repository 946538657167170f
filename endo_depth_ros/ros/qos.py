"""Quality of service of the ``endo_depth`` node's topics, overridable as ROS users expect.

Every subscription and publisher is created with rclpy's ``QoSOverridingOptions``, so
history, depth and reliability can be set per topic from a params file or the command
line, with the resolved (remapped) topic name::

    --ros-args -p qos_overrides./endoscope/image_raw.subscription.reliability:=best_effort

Defaults, chosen from the delivery measurements of ``endo-depth-bench qos`` (README,
"QoS and HD video"):

- inputs: reliable. A best-effort subscription receives big frames only partly on a
  default Fast DDS install (a 1280x720 rgb8 frame is ~150 UDP fragments and one lost
  fragment loses the frame); a reliable one receives every frame from a reliable
  publisher. Drivers that publish best effort (sensor-data QoS) need the override above:
  the node warns once, naming the parameter, when such a publisher is seen.
  ``camera_info`` keeps the last 10 (paired with images by stamp). ``image`` and
  ``image/compressed`` keep the last 1: the node takes an image only when it can start
  on it, so the middleware keeps the newest and replaces older ones, which the node
  counts as dropped from the publisher's sequence numbers (``ros/input_gate``).
- outputs: reliable, keep last ``outputs.queue_depth``; ``/diagnostics`` keep last 10.

Queues stay bounded: ``keep_all`` and depths above :data:`MAX_DEPTH` are refused at
start-up.
"""

from __future__ import annotations

from rcl_interfaces.msg import SetParametersResult
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.qos_overriding_options import QoSOverridingOptions

#: Largest history depth an override may ask for (messages; every queue stays bounded).
MAX_DEPTH = 100
#: History depth of the input subscriptions.
INPUT_DEPTH = 10
#: History depth of the image subscription: the newest frame only (``ros/input_gate``).
IMAGE_DEPTH = 1


def input_qos() -> QoSProfile:
    """Default QoS of the camera_info (and right camera, pose) subscriptions."""
    return _reliable_keep_last(INPUT_DEPTH)


def image_qos() -> QoSProfile:
    """Default QoS of the image subscription: reliable, keep last 1 (see the module)."""
    return _reliable_keep_last(IMAGE_DEPTH)


def output_qos(depth: int) -> QoSProfile:
    """Default QoS of the output publishers: reliable, keep last ``depth``."""
    return _reliable_keep_last(depth)


def _reliable_keep_last(depth: int) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def overriding_options() -> QoSOverridingOptions:
    """History, depth and reliability overridable as ``qos_overrides.<topic>.*``."""
    return QoSOverridingOptions.with_default_policies(callback=check_bounded)


def check_bounded(qos: QoSProfile) -> SetParametersResult:
    """Refuse an unbounded queue (``keep_all``) or a depth above :data:`MAX_DEPTH`."""
    if qos.history == HistoryPolicy.KEEP_ALL:
        return SetParametersResult(
            successful=False, reason='history keep_all is unbounded; use keep_last')
    if not 1 <= qos.depth <= MAX_DEPTH:
        return SetParametersResult(
            successful=False, reason=f'depth must be in 1..{MAX_DEPTH}, got {qos.depth}')
    return SetParametersResult(successful=True)


def describe(qos: QoSProfile) -> str:
    """``'reliable, keep_last 2'``: a profile as a person reads it (for log lines)."""
    history = qos.history.name.lower()
    depth = f' {qos.depth}' if qos.history == HistoryPolicy.KEEP_LAST else ''
    return f'{qos.reliability.name.lower()}, {history}{depth}'
