"""The offline evaluator runs the node's pipeline on bags and scores it like the papers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from endo_depth_ros import bags, evaluation, report
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, ConfigError, ModelLoadError
from endo_depth_ros.synth import SynthConfig, render_sequence

CAM = Intrinsics(width=32, height=24, fx=30.0, fy=30.0, cx=15.5, cy=11.5)


@pytest.fixture(scope='module')
def synth_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp('bags') / 'seq'
    bags.write_sequence(path, render_sequence(SynthConfig(width=96, height=80, frames=16)))
    return path


def _config(**kw) -> evaluation.EvalConfig:
    return evaluation.EvalConfig(**kw)


# --------------------------------------------------------------------------- scoring


def _records(n: int = 4, factor: float = 1.1) -> list[evaluation.FrameRecord]:
    # A static camera looking at a static scene: every frame sees the same depth.
    gt = np.random.default_rng(0).uniform(0.03, 0.1, (24, 32)).astype(np.float32)
    records = []
    for i in range(n):
        pose = np.eye(4)
        records.append(evaluation.FrameRecord(
            index=i, stamp_ns=i * 1000, depth=factor * gt, gt_depth=gt, gt_pose=pose,
            est_pose=pose.copy(), runtime_ms=2.0,
            rgb=np.zeros((24, 32, 3), np.uint8)))
    return records


def _score(records, protocol='none'):
    result = evaluation.RunResult(bag='b', model='m', align='stream', protocol=protocol)
    return evaluation.score_records(result, records, CAM, _config(protocol=protocol))


def test_scoring_a_ten_percent_overestimate_gives_abs_rel_point_one_without_alignment():
    result = _score(_records(), 'none')
    assert result.summary['abs_rel'] == pytest.approx(0.1, rel=1e-4)
    assert result.summary['ms_per_frame'] == pytest.approx(2.0)
    assert (result.frames_scored, result.frames_dropped, result.frames_total) == (4, 0, 4)


def test_scoring_with_median_protocol_removes_the_scale():
    result = _score(_records(), 'median')
    assert result.summary['abs_rel'] == pytest.approx(0.0, abs=1e-6)
    assert result.summary['tae'] == pytest.approx(0.0, abs=1e-6)


def test_tae_uses_a_sequence_scale_so_per_frame_flicker_is_visible_after_median():
    records = _records()
    records[1].depth = records[1].depth * 1.2  # one frame's scale jumps
    result = _score(records, 'median')
    assert result.summary['abs_rel'] == pytest.approx(0.0, abs=1e-6)
    assert result.summary['tae'] > 5.0


def test_frames_without_ground_truth_or_output_are_dropped_and_counted():
    records = _records()
    records[0].gt_depth = np.full((24, 32), np.nan, np.float32)
    records[2].depth = None
    result = _score(records, 'none')
    assert (result.frames_scored, result.frames_dropped) == (2, 2)
    assert result.per_frame['abs_rel'][0] is None and result.per_frame['abs_rel'][2] is None
    assert result.summary['abs_rel'] == pytest.approx(0.1, rel=1e-4)


def test_trajectory_errors_are_zero_for_a_scaled_copy_of_ground_truth():
    records = _records(6)
    for i, r in enumerate(records):
        r.gt_pose = np.eye(4)
        r.gt_pose[:3, 3] = [0.001 * i, 0.0005 * i * i, 0.002 * i]
        r.est_pose = r.gt_pose.copy()
        r.est_pose[:3, 3] *= 3.0
    result = _score(records, 'none')
    assert result.summary['ate'] == pytest.approx(0.0, abs=1e-9)
    assert result.summary['traj_scale'] == pytest.approx(1 / 3)
    assert result.summary['rpe_trans'] == pytest.approx(0.0, abs=1e-9)


def test_eval_config_rejects_bad_values():
    with pytest.raises(ConfigError, match=r'min_depth=0\.2'):
        _config(min_depth=0.2, max_depth=0.1)
    with pytest.raises(ConfigError, match="'sideways'"):
        _config(align_modes=('sideways',))
    with pytest.raises(ConfigError, match="'best'"):
        _config(protocol='best')


# --------------------------------------------------------------------------- on a bag


def test_gt_oracle_scores_zero_abs_rel_and_near_zero_tae(synth_bag):
    config = _config(models=(evaluation.ModelSpec('gt'),), align_modes=('stream',),
                     frames=8)
    (result,) = evaluation.evaluate([synth_bag], config)
    assert result.frames_scored == 8
    assert result.summary['abs_rel'] == pytest.approx(0.0, abs=1e-4)
    assert result.summary['a1'] == pytest.approx(1.0)
    assert result.summary['tae'] < 2.0  # nearest-pixel resampling only


def test_photometric_stream_alignment_lowers_tae_versus_none(synth_bag):
    config = _config(align_modes=('none', 'stream'))
    none, stream = evaluation.evaluate([synth_bag], config)
    assert (none.align, stream.align) == ('none', 'stream')
    assert stream.summary['tae'] < none.summary['tae']
    assert none.summary['abs_rel'] is not None and none.summary['abs_rel'] < 0.5


def test_frame_selection_uses_start_stride_and_count(synth_bag):
    config = _config(models=(evaluation.ModelSpec('gt'),), start=2, stride=3, frames=3)
    (result,) = evaluation.evaluate([synth_bag], config)
    assert result.per_frame['index'] == [2, 5, 8]


def test_unknown_model_raises_model_load_error(synth_bag):
    with pytest.raises(ModelLoadError, match='no-such-net'):
        evaluation.evaluate([synth_bag], _config(models=(evaluation.ModelSpec('no-such-net'),)))


def test_oracle_with_checkpoint_is_rejected(synth_bag):
    with pytest.raises(ConfigError, match='no checkpoint'):
        evaluation.evaluate([synth_bag], _config(models=(evaluation.ModelSpec('gt', 'w.pth'),)))


def test_oracle_output_must_match_the_image_size():
    model = evaluation.GroundTruthModel()
    model.set_next(np.ones((10, 10), np.float32))
    with pytest.raises(BadInputError, match='10x10 does not match the image 12x8'):
        model.infer(np.zeros((8, 12, 3), np.uint8))


# --------------------------------------------------------------------------- report


def test_report_writes_json_markdown_and_all_figures(synth_bag, tmp_path):
    config = _config(models=(evaluation.ModelSpec('photometric'), evaluation.ModelSpec('gt')),
                     frames=6, contact_frames=2)
    results = evaluation.evaluate([synth_bag], config)
    out = tmp_path / 'report'
    path = report.write_report(results, out, settings={'protocol': 'median'})
    text = path.read_text()
    assert '| photometric | stream |' in text and '| gt | stream |' in text
    for name in ('per_frame.png', 'trajectory.png', 'contact_photometric_stream.png',
                 'contact_gt_stream.png'):
        assert (out / name).stat().st_size > 1000, name
        assert f']({name})' in text
    doc = json.loads((out / 'results.json').read_text())
    assert [run['model'] for run in doc['runs']] == ['photometric', 'gt']
    assert len(doc['runs'][0]['per_frame']['abs_rel']) == 6
    assert doc['units']['rmse'] == 'm'
