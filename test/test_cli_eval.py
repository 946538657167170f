"""``endo-depth-eval``: outputs on success, one clear line and exit 2 on bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from endo_depth_ros import bags
from endo_depth_ros.cli import eval as eval_cli
from endo_depth_ros.synth import SynthConfig, render_sequence

SMALL = SynthConfig(width=96, height=80, frames=6)


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp('cli') / 'seq'
    bags.write_sequence(path, render_sequence(SMALL))
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith('endo-depth-eval: error: ')
    return err[0]


def test_eval_writes_results_report_and_figures(bag, tmp_path, capsys):
    out = tmp_path / 'out'
    code = eval_cli.main([str(bag), '--model', 'photometric', '--model', 'gt',
                          '--align', 'none', '--align', 'stream', '--protocol', 'median',
                          '--frames', '5', '--out', str(out), '--no-progress'])
    assert code == 0
    stdout = capsys.readouterr().out
    assert '| gt | none |' in stdout and '| photometric | stream |' in stdout
    assert f'report: {out / "report.md"}' in stdout
    doc = json.loads((out / 'results.json').read_text())
    assert len(doc['runs']) == 4
    assert doc['settings']['max_depth_m'] == 0.15
    assert {p.name for p in out.glob('*.png')} >= {'per_frame.png', 'trajectory.png',
                                                    'contact_gt_none.png'}


def _copy_topics(src, dst, topics):
    """A bag with only some topics of ``src`` (raw messages copied)."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import Writer

    store = bags.typestore()
    with AnyReader([src]) as reader, Writer(dst, version=9) as writer:
        conns = [c for c in reader.connections if c.topic in topics]
        out = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=store) for c in conns}
        for conn, stamp, data in reader.messages(connections=conns):
            writer.write(out[conn.id], stamp, data)


def test_bag_without_ground_truth_reports_timing_only(bag, tmp_path, capsys):
    path = tmp_path / 'no_gt'
    _copy_topics(bag, path, {bags.TOPIC_IMAGE, bags.TOPIC_CAMERA_INFO})
    out = tmp_path / 'out'
    assert eval_cli.main([str(path), '--out', str(out), '--no-progress']) == 0
    run = json.loads((out / 'results.json').read_text())['runs'][0]
    assert run['has_gt_depth'] is False and run['frames_total'] == 6
    assert run['metrics']['abs_rel'] is None
    assert run['metrics']['ms_per_frame'] > 0
    assert 'timing only' in (out / 'report.md').read_text()


def test_missing_bag_exits_2_with_one_line(tmp_path, capsys):
    assert eval_cli.main([str(tmp_path / 'nope.mcap'), '--out', str(tmp_path)]) == 2
    assert 'nope.mcap' in _one_error_line(capsys)


def test_corrupt_bag_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / 'corrupt.mcap'
    path.write_bytes(b'this is not a bag' * 10)
    assert eval_cli.main([str(path), '--out', str(tmp_path / 'o')]) == 2
    assert 'corrupt.mcap' in _one_error_line(capsys)


def test_bag_without_image_topic_exits_2_with_one_line(tmp_path, capsys):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    path = tmp_path / 'strings'
    with Writer(path, version=9) as writer:
        conn = writer.add_connection('/chatter', 'std_msgs/msg/String', typestore=store)
        msg = store.types['std_msgs/msg/String'](data='hi')
        writer.write(conn, 1, store.serialize_cdr(msg, 'std_msgs/msg/String'))
    assert eval_cli.main([str(path), '--out', str(tmp_path / 'o')]) == 2
    assert 'image' in _one_error_line(capsys)


def test_mismatched_image_and_depth_sizes_exit_2(tmp_path, capsys):
    path = tmp_path / 'mismatch'
    frames = (dataclasses.replace(f, depth=f.depth[:-8]) for f in render_sequence(SMALL))
    bags.write_sequence(path, frames)
    assert eval_cli.main([str(path), '--out', str(tmp_path / 'o'), '--no-progress']) == 2
    assert '96x80' in _one_error_line(capsys)


def test_unknown_model_exits_2_with_one_line(bag, tmp_path, capsys):
    assert eval_cli.main([str(bag), '--model', 'dav9-xl', '--out', str(tmp_path)]) == 2
    assert 'dav9-xl' in _one_error_line(capsys)


def test_checkpoint_before_any_model_is_a_usage_error(bag, capsys):
    with pytest.raises(SystemExit) as exc:
        eval_cli.main([str(bag), '--checkpoint', 'w.pth'])
    assert exc.value.code == 2
    assert '--checkpoint must follow the --model' in capsys.readouterr().err


def test_checkpoint_attaches_to_the_preceding_model():
    args = eval_cli.build_parser().parse_args(
        ['b', '--model', 'dav2-s', '--checkpoint', 'w.pth', '--model', 'gt'])
    config = eval_cli.config_from_args(args)
    assert [(m.name, m.checkpoint) for m in config.models] == [('dav2-s', 'w.pth'), ('gt', '')]


def test_write_bag_stores_the_node_topics_for_viewing(bag, tmp_path):
    from rosbags.highlevel import AnyReader

    out_bag = tmp_path / 'outputs'
    assert eval_cli.main([str(bag), '--model', 'gt', '--out', str(tmp_path / 'o'),
                          '--write-bag', str(out_bag), '--no-progress']) == 0
    with AnyReader([out_bag]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts['/depth/image'] == counts['/depth/points'] == 6
    assert counts[bags.TOPIC_IMAGE] == 6 and counts['/pose'] >= 3
    frames = list(bags.read_frames(out_bag, bags.detect_topics(out_bag, depth='/depth/image')))
    gt = [f.depth_gt for f in bags.read_frames(bag)]
    np.testing.assert_allclose(frames[0].depth_gt, gt[0], rtol=1e-5)


def test_empty_frame_selection_exits_2_with_one_line(bag, tmp_path, capsys):
    out = tmp_path / 'o'
    assert eval_cli.main([str(bag), '--start', '100', '--out', str(out), '--no-progress']) == 2
    assert 'no frames in the selected range' in _one_error_line(capsys)
    assert not (out / 'report.md').exists()


def test_unwritable_out_dir_fails_before_evaluating(bag, tmp_path, capsys):
    blocker = tmp_path / 'file.txt'
    blocker.write_text('not a folder')
    code = eval_cli.main([str(bag), '--out', str(blocker / 'out')])  # progress bars on
    assert code == 2
    # One line and no progress bar: the evaluation never started.
    assert 'file.txt' in _one_error_line(capsys)
