"""Truth-referenced temporal metrics: depth-ratio error over frame gaps and scale drift."""

from __future__ import annotations

import numpy as np
import pytest

from endo_depth_ros import evaluation, metrics
from endo_depth_ros.errors import BadInputError
from endo_depth_ros.synth import SynthConfig, render_sequence


@pytest.fixture(scope='module')
def flight():
    """24 frames of a synthetic flight: (gt depths, poses, camera)."""
    frames = list(render_sequence(SynthConfig(width=80, height=64, frames=24, seed=3)))
    return ([f.depth for f in frames], [f.pose for f in frames], frames[0].intrinsics)


def _ratio(depths, gts, poses, camera, gap):
    return metrics.depth_ratio_errors(depths, gts, poses, camera, gap, max_depth=0.3)


@pytest.mark.parametrize('gap', metrics.RATIO_GAPS)
def test_a_scaled_truth_tracks_every_true_depth_change(flight, gap):
    gts, poses, camera = flight
    result = _ratio([2.5 * g for g in gts], gts, poses, camera, gap)
    assert result.pairs == len(gts) - gap
    assert result.median < 2e-3  # bilinear sampling of the prediction only
    # The camera moves: predicting "no change" is clearly worse.
    assert result.static_median > 10 * result.median


def test_a_slow_scale_drift_shows_over_long_gaps_but_hardly_in_tae(flight):
    gts, poses, camera = flight
    drift = 0.01  # 1 % per frame: smooth, so TAE barely sees it
    depths = [g * (1.0 + drift * t) for t, g in enumerate(gts)]
    exact = [g.copy() for g in gts]
    tae_drift = metrics.temporal_alignment_error(depths, poses, camera, max_depth=0.3)
    tae_exact = metrics.temporal_alignment_error(exact, poses, camera, max_depth=0.3)
    assert tae_drift - tae_exact < 1.5  # TAE x100: about 1 per frame of 1 % drift
    gap20 = _ratio(depths, gts, poses, camera, 20).median
    # log((1 + 0.01 (t + 20)) / (1 + 0.01 t)) for t = 0..3.
    assert gap20 == pytest.approx(np.log(1.215), abs=0.02)
    assert _ratio(exact, gts, poses, camera, 20).median < 2e-3
    relative, _ = metrics.per_frame_scales(depths, gts, max_depth=0.3)
    drift_max, drift_end = metrics.scale_drift(relative)
    assert drift_end == pytest.approx(1.0 / 1.23, rel=1e-3)  # best scale = gt / pred
    assert drift_max > 1.1


def test_sparse_and_up_to_scale_ground_truth_give_the_same_answer(flight):
    gts, poses, camera = flight
    rng = np.random.default_rng(0)
    depths = [g * (1.0 + 0.01 * t) for t, g in enumerate(gts)]
    dense = _ratio(depths, gts, poses, camera, 5).median
    sparse = []
    for g in gts:
        s = np.full_like(g, np.nan)
        keep = rng.random(g.shape) < 0.03  # ~150 SfM-like points per frame
        s[keep] = g[keep]
        sparse.append(s)
    assert _ratio(depths, sparse, poses, camera, 5).median == pytest.approx(dense, abs=5e-3)
    # Ground truth and poses in another unit (an SfM reconstruction): same ratios.
    k = 7.0
    scaled_poses = [p.copy() for p in poses]
    for p in scaled_poses:
        p[:3, 3] *= k
    scaled = metrics.depth_ratio_errors(depths, [k * g for g in gts], scaled_poses, camera, 5,
                                        max_depth=0.3 * k)
    assert scaled.median == pytest.approx(dense, abs=1e-4)


def test_per_frame_scales_of_a_constant_scale_are_one():
    gt = np.random.default_rng(1).uniform(0.02, 0.1, (3, 12, 16)).astype(np.float32)
    relative, sequence = metrics.per_frame_scales(list(0.5 * gt), list(gt))
    assert sequence == pytest.approx(2.0)
    assert np.allclose(relative, 1.0)
    assert metrics.scale_drift(relative) == pytest.approx((1.0, 1.0))


def test_frames_without_valid_ground_truth_have_no_scale():
    gt = np.random.default_rng(1).uniform(0.02, 0.1, (2, 12, 16)).astype(np.float32)
    gt[1] = np.nan
    relative, _ = metrics.per_frame_scales(list(gt), list(gt))
    assert relative[0] == pytest.approx(1.0) and np.isnan(relative[1])
    assert metrics.scale_drift(np.array([np.nan])) == (None, None)


def test_ratio_errors_reject_bad_arguments(flight):
    gts, poses, camera = flight
    with pytest.raises(BadInputError, match='gap'):
        metrics.depth_ratio_errors(gts, gts, poses, camera, 0)
    with pytest.raises(BadInputError, match='poses'):
        metrics.depth_ratio_errors(gts, gts, poses[:-1], camera, 1)


def test_evaluator_reports_truth_referenced_metrics_and_the_identity_rpe(flight):
    gts, poses, camera = flight
    records = [evaluation.FrameRecord(index=i, stamp_ns=i, depth=1.3 * g, gt_depth=g,
                                      gt_pose=p, est_pose=p.copy())
               for i, (g, p) in enumerate(zip(gts, poses, strict=True))]
    result = evaluation.RunResult(bag='b', model='m', align='stream', protocol='median')
    evaluation.score_records(result, records, camera,
                             evaluation.EvalConfig(max_depth=0.3))
    s = result.summary
    for gap in metrics.RATIO_GAPS:
        assert s[f'ratio_error_gap{gap}'] < 2e-3
        assert s[f'ratio_static_gap{gap}'] > 0.01
    assert s['scale_drift_max'] == pytest.approx(1.0, abs=1e-3)
    assert s['scale_drift_end'] == pytest.approx(1.0, abs=1e-3)
    assert s['abs_rel_seq'] == pytest.approx(0.0, abs=1e-5)
    assert len(result.per_frame['abs_rel_seq']) == len(gts)
    # Exact poses: RPE 0; the identity baseline is the true rotation per frame.
    assert s['rpe_rot'] == pytest.approx(0.0, abs=1e-4)
    assert s['rpe_rot_identity'] > 0.05
