"""Live replay: a bag goes through the node process over real topics, and the demo."""

from __future__ import annotations

import json
import struct

import pytest

pytest.importorskip('rclpy')

from endo_depth_ros import bags, evaluation
from endo_depth_ros.cli import demo
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.ros import replay
from endo_depth_ros.synth import SynthConfig, render_sequence


def test_header_stamp_is_read_from_little_and_big_endian_cdr():
    little = b'\x00\x01\x00\x00' + struct.pack('<iI', 12, 345)
    big = b'\x00\x00\x00\x00' + struct.pack('>iI', 12, 345)
    assert replay._header_stamp_ns(little) == 12_000_000_345
    assert replay._header_stamp_ns(big) == 12_000_000_345


def test_live_replay_rejects_the_gt_oracle(tmp_path):
    config = evaluation.EvalConfig(models=(evaluation.ModelSpec('gt'),))
    with pytest.raises(ConfigError, match='offline only'):
        replay.evaluate_live([tmp_path / 'x.mcap'], config)


def test_live_replay_scores_what_the_node_publishes(tmp_path):
    path = tmp_path / 'seq'
    bags.write_sequence(path, render_sequence(SynthConfig(width=64, height=48, frames=12,
                                                          fps=15.0)))
    bars = []

    class Bar:
        def __init__(self, desc, total):
            self.total, self.n, self.closed = total, 0, False
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def close(self):
            self.closed = True

    (result,) = replay.evaluate_live([path], evaluation.EvalConfig(), progress=Bar)
    assert [(b.total, b.n, b.closed) for b in bars] == [(12, 12, True)]
    assert result.mode == 'live' and result.align == 'stream'
    # At 15 fps and 64x48 the node keeps up with almost every frame.
    assert result.summary['drop_rate'] <= 0.25
    assert result.frames_scored >= 9
    assert 0 < result.summary['abs_rel'] < 0.5
    assert 0 < result.summary['latency_p50_ms'] <= result.summary['latency_p95_ms']
    assert result.summary['output_rate_hz'] > 5
    assert result.summary['poses_received'] > 0


def test_demo_runs_end_to_end_and_prints_where_the_report_is(tmp_path, capsys):
    out = tmp_path / 'demo'
    code = demo.main(['--out', str(out), '--frames', '10', '--width', '96', '--height', '80',
                      '--no-progress'])
    assert code == 0
    stdout = capsys.readouterr().out
    report_md = out / 'report' / 'report.md'
    assert f'Report: {report_md.resolve()}' in stdout
    text = report_md.read_text()
    assert '| photometric (live) | stream |' in text
    assert '## Live replay' in text
    for name in ('per_frame.png', 'trajectory.png', 'contact_photometric_stream_live.png'):
        assert (out / 'report' / name).is_file(), name
    run = json.loads((out / 'report' / 'results.json').read_text())['runs'][0]
    assert run['mode'] == 'live' and run['frames_total'] == 10
