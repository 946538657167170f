"""The kinematic scale source's TF input (endo_depth_ros.ros.scale_inputs.TfKinematics).

tf2_ros is not a wheel, so its ``Buffer`` is stood in for by a buffer of real
``geometry_msgs/TransformStamped`` messages with tf2's lookup semantics (``Time()`` is the
newest transform; a time past the newest raises, as tf2's ExtrapolationException).
The node's refusal without tf2_ros is checked over a real process in test_node_scale.py.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip('rclpy')

from geometry_msgs.msg import TransformStamped
from rclpy.time import Time

from endo_depth_ros.ros import conversions
from endo_depth_ros.ros.scale_inputs import TfKinematics
from endo_depth_ros.scale import KinematicTrack

BASE, CAMERA = 'base', 'camera'


class NotYetError(Exception):
    """Stands in for tf2's TransformException."""


class StampedBuffer:
    """Transforms ``BASE -> CAMERA`` by stamp, looked up like a tf2 buffer (no
    interpolation: exact stamps or the newest)."""

    def __init__(self) -> None:
        self.transforms: dict[int, TransformStamped] = {}
        self.lookups: list[tuple[str, str, int]] = []

    def add(self, stamp_ns: int, pose: np.ndarray) -> None:
        self.transforms[stamp_ns] = conversions.pose_to_transform(pose, stamp_ns, BASE, CAMERA)

    def lookup_transform(self, target_frame: str, source_frame: str,
                         time: Time) -> TransformStamped:
        self.lookups.append((target_frame, source_frame, time.nanoseconds))
        if (target_frame, source_frame) != (BASE, CAMERA):
            raise NotYetError(f'{target_frame} -> {source_frame} are not connected')
        if not self.transforms:
            raise NotYetError('no transform yet')
        if time.nanoseconds == 0:
            return self.transforms[max(self.transforms)]
        if time.nanoseconds not in self.transforms:
            raise NotYetError(f'extrapolation to {time.nanoseconds}')
        return self.transforms[time.nanoseconds]


def _pose(z: float) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, 3] = (0.01, 0.02, z)
    return pose


def test_tf_sample_is_the_transform_at_the_image_stamp_plus_the_offset() -> None:
    buffer = StampedBuffer()
    tf = TfKinematics(buffer, BASE, CAMERA, offset_s=0.01, not_yet=(NotYetError,))
    assert tf.sample(1_000_000_000) is None and tf.misses == 1  # nothing published yet
    for i in range(5):
        buffer.add(1_010_000_000 + i * 33_000_000, _pose(0.001 * i))
    sample = tf.sample(1_000_000_000 + 2 * 33_000_000)
    assert sample is not None
    stamp, pose = sample
    assert stamp == 1_010_000_000 + 2 * 33_000_000  # image stamp + offset
    np.testing.assert_allclose(pose, _pose(0.002), atol=1e-12)
    assert buffer.lookups[-1] == (BASE, CAMERA, stamp)


def test_tf_sample_falls_back_to_the_newest_transform_and_only_moves_forward() -> None:
    buffer = StampedBuffer()
    tf = TfKinematics(buffer, BASE, CAMERA, offset_s=0.03, not_yet=(NotYetError,))
    track = KinematicTrack()
    buffer.add(100_000_000, _pose(0.0))
    # The robot's latency: the pose of the image's instant is not in the buffer yet.
    sample = tf.sample(100_000_000)
    assert sample is not None and sample[0] == 100_000_000
    track.add(*sample)
    assert tf.sample(110_000_000) is None  # the same newest transform: nothing new
    assert tf.misses == 0
    buffer.add(133_000_000, _pose(0.001))
    sample = tf.sample(120_000_000)
    assert sample is not None and sample[0] == 133_000_000
    track.add(*sample)
    assert len(track) == 2  # in order: the track never restarted


def test_tf_static_transform_describes_every_instant() -> None:
    buffer = StampedBuffer()
    buffer.add(0, _pose(0.05))
    tf = TfKinematics(buffer, BASE, CAMERA, offset_s=0.0, not_yet=(NotYetError,))
    first, second = tf.sample(5_000), tf.sample(9_000)
    assert first is not None and second is not None
    assert (first[0], second[0]) == (5_000, 9_000)


def test_tf_unconnected_frames_are_misses_and_other_errors_propagate() -> None:
    buffer = StampedBuffer()
    buffer.add(10, _pose(0.0))
    unconnected = TfKinematics(buffer, 'world', CAMERA, offset_s=0.0, not_yet=(NotYetError,))
    assert unconnected.sample(10) is None and unconnected.misses == 1
    # Only the buffer's own "cannot give it yet" errors are expected; a bug is not hidden.
    strict = TfKinematics(buffer, 'world', CAMERA, offset_s=0.0, not_yet=(KeyError,))
    with pytest.raises(NotYetError):
        strict.sample(10)
