"""The node runs a (tiny, random-weight) Video Depth Anything over real topics, streaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('rclpy')

from ros_harness import RosTestNode
from test_models_video import official_checkpoint, random_video_network
from test_node import (
    HEIGHT,
    WIDTH,
    Player,
    start_node,
    synthetic_frames,
    unique_namespace,
)

from endo_depth_ros.ros import conversions

#: Bound for the node to import torch and load the model before it subscribes.
MODEL_START_S = 300.0


@pytest.mark.timeout(3 * MODEL_START_S)  # torch's import alone is slow on a loaded machine
def test_node_streams_a_video_model_and_reports_its_cache(tmp_path: Path) -> None:
    checkpoint = official_checkpoint(tmp_path, random_video_network())
    namespace = unique_namespace()
    frames = synthetic_frames()[:6]
    stamps = [frame.stamp_ns for frame in frames]
    with RosTestNode() as ros, start_node(
            namespace, 'model.name:=vda', f'model.checkpoint:={checkpoint}',
            'model.input_size:=28', 'model.device:=cpu', 'diagnostics.period_s:=0.2') as node:
        player = Player(ros, namespace)
        # Importing torch and loading the model take a while on a busy machine.
        player.image_pub.wait_for_subscribers(timeout=MODEL_START_S)
        player.wait_connected(lambda k: stamps[0] - 1_000_000_000 + k)
        depths = []
        for frame, stamp in zip(frames, stamps, strict=True):
            player.send_frame(frame, stamp)  # lock-step: every frame is one streaming step
            depths.append(player.wait_depth(stamp))
        values = player.diagnostic_values(
            lambda v: int(v['frames_published']) > len(frames))
        node.assert_clean_exit(timeout=MODEL_START_S)  # torch tears down slowly when loaded

    for msg in depths:
        assert (msg.encoding, msg.width, msg.height) == ('32FC1', WIDTH, HEIGHT)
        depth = conversions.image_to_depth(msg)
        # Random weights: the head's ReLU zeroes some pixels (no depth there, NaN).
        assert np.isfinite(depth).mean() > 0.5 and np.nanstd(depth) > 0
    assert values['model.name'] == 'vda'
    assert values['alignment.mode'] == 'none'  # the scale policy only (see pipeline.py)
    # The hand-shake frames and the 6 frames went through one stream (31 at most).
    fill, capacity = (int(x) for x in values['model.video_cache'].split('/'))
    assert capacity == 31 and len(frames) <= fill <= capacity
