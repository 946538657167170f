"""The two ends of ``endo-depth-bench qos``: a camera-like sender and a counting receiver.

Run as processes by :mod:`endo_depth_ros.bench.qos`::

    python -m endo_depth_ros.ros.qos_probe send RELIABILITY WIDTH HEIGHT FRAMES RATE_HZ
    python -m endo_depth_ros.ros.qos_probe receive SUBSCRIPTION

Each prints one JSON line on stdout (``{"sent": N}``, ``{"received": N}``).
"""

from __future__ import annotations

import json
import signal
import sys
import time

import numpy as np
import rclpy
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.executors import ExternalShutdownException
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from endo_depth_ros.ros import conversions, qos, spinning

TOPIC = '/bench/image'
#: Pause after matching before the first frame (s): discovery may still run on the far side.
SETTLE_S = 0.5
#: How long the sender waits for the receiver to match (s); no match = incompatible QoS.
MATCH_TIMEOUT_S = 10.0
#: Time the receiver keeps listening after the last frame was sent (s).
GRACE_S = 1.5


def send(reliability: str, width: int, height: int, frames: int, rate: float) -> None:
    """Publish ``frames`` random rgb8 images at ``rate`` Hz once a receiver matched."""
    profile = QoSProfile(history=HistoryPolicy.KEEP_LAST,
                         depth=10 if reliability == 'reliable' else 5,
                         reliability=ReliabilityPolicy[reliability.upper()])
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    msg = conversions.rgb_to_image(rgb, 0, 'bench')
    matched = spinning.MatchCounter()
    with spinning.SpinningNode('qos_bench_sender') as ros:
        pub = ros.node.create_publisher(
            Image, TOPIC, profile, event_callbacks=PublisherEventCallbacks(
                matched=matched.callback(TOPIC)))
        if not matched.wait(1, timeout=MATCH_TIMEOUT_S):
            # Incompatible QoS (best-effort publisher, reliable subscription): nothing sent.
            print(json.dumps({'sent': frames, 'matched': False}), flush=True)
            return
        time.sleep(SETTLE_S)
        start = time.perf_counter()
        for i in range(frames):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            msg.header.stamp = conversions.ns_to_stamp(time.time_ns())
            pub.publish(msg)
        time.sleep(GRACE_S)
    print(json.dumps({'sent': frames}), flush=True)


def receive(subscription: str) -> None:
    """Count images until SIGINT with ``subscription`` QoS (``node``: the node's default;
    else ``reliable``/``best_effort`` with an optional ``@DEPTH``)."""
    profile = qos.input_qos()
    if subscription != 'node':
        reliability, _, depth = subscription.partition('@')
        profile.reliability = ReliabilityPolicy[reliability.upper()]
        profile.depth = int(depth or qos.INPUT_DEPTH)
    count = 0

    def on_image(_msg: Image) -> None:
        nonlocal count
        count += 1

    rclpy.init()
    node = rclpy.create_node('qos_bench_receiver')
    node.create_subscription(Image, TOPIC, on_image, profile)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(json.dumps({'received': count}), flush=True)


if __name__ == '__main__':
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    role, *rest = sys.argv[1:]
    if role == 'send':
        send(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), float(rest[4]))
    else:
        receive(rest[0])
