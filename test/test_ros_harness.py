"""The real-middleware harness works: a publisher in another process reaches this one."""

from __future__ import annotations

import os

import pytest

rclpy = pytest.importorskip('rclpy')

from ros_harness import NodeProcess, RosTestNode  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402


def test_session_keeps_dds_on_loopback_with_a_private_domain() -> None:
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert os.environ['ROS_LOCALHOST_ONLY'] == '1'
    assert 1 <= int(os.environ['ROS_DOMAIN_ID']) <= 200


def test_images_published_by_another_process_arrive_intact() -> None:
    count, width, height = 5, 64, 48
    with RosTestNode() as ros:
        recorder = ros.subscribe(Image, 'harness/image', 10)
        with NodeProcess(['test/fixtures/image_publisher.py', 'harness/image',
                          str(count), str(width), str(height)]) as publisher:
            messages = recorder.wait_for(count)
            publisher.assert_clean_exit()

    assert [m.header.stamp.sec for m in messages] == list(range(1, count + 1))
    for i, msg in enumerate(messages):
        assert (msg.width, msg.height, msg.encoding) == (width, height, 'rgb8')
        assert msg.step == width * 3
        assert msg.header.frame_id == 'endoscope_optical_frame'
        assert len(msg.data) == width * height * 3
        assert set(bytes(msg.data)) == {i}


def test_a_process_that_fails_is_reported() -> None:
    with NodeProcess(['-c', 'raise SystemExit(3)']) as proc:
        assert proc.wait(timeout=30) == 3
