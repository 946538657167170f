"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from endo_depth_ros import metrics
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, ConfigError

W, H = 64, 48
CAM = Intrinsics(width=W, height=H, fx=100.0, fy=100.0, cx=31.5, cy=23.5)


def _gt(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.02, 0.12, size=(H, W)).astype(np.float32)


def _pose(t: tuple[float, float, float] = (0.0, 0.0, 0.0), R: np.ndarray | None = None):
    T = np.eye(4)
    if R is not None:
        T[:3, :3] = R
    T[:3, 3] = t
    return T


def _rot(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * Kx + (1 - math.cos(angle)) * Kx @ Kx


# --------------------------------------------------------------------------- depth_errors


def test_prediction_ten_percent_too_far_gives_abs_rel_point_one():
    gt = _gt()
    err = metrics.depth_errors(gt, 1.1 * gt)
    assert err is not None
    g = gt.astype(np.float64)
    assert err['abs_rel'] == pytest.approx(0.1, rel=1e-5)
    assert err['sq_rel'] == pytest.approx(np.mean(0.01 * g), rel=1e-4)
    assert err['rmse'] == pytest.approx(0.1 * np.sqrt(np.mean(g**2)), rel=1e-4)
    assert err['rmse_log'] == pytest.approx(math.log(1.1), rel=1e-4)
    assert (err['a1'], err['a2'], err['a3']) == (1.0, 1.0, 1.0)


def test_depth_errors_two_pixel_example_by_hand():
    gt = np.array([[0.05, 0.1]], np.float32)
    pred = np.array([[0.1, 0.1]], np.float32)
    err = metrics.depth_errors(gt, pred)
    assert err is not None
    assert err['abs_rel'] == pytest.approx(0.5, rel=1e-6)
    assert err['sq_rel'] == pytest.approx(0.025, rel=1e-5)
    assert err['rmse'] == pytest.approx(math.sqrt(0.0025 / 2), rel=1e-5)
    assert err['rmse_log'] == pytest.approx(math.sqrt(math.log(2) ** 2 / 2), rel=1e-5)
    # max ratio 2 > 1.25**3 = 1.95 for the first pixel, 1 for the second.
    assert (err['a1'], err['a2'], err['a3']) == (0.5, 0.5, 0.5)


def test_depth_errors_ignores_invalid_out_of_range_and_masked_pixels():
    gt = np.array([[0.05, np.nan, 0.5, 0.05, 0.05]], np.float32)
    pred = np.array([[0.05, 0.07, 0.07, np.nan, 0.09]], np.float32)
    mask = np.array([[True, True, True, True, False]])
    err = metrics.depth_errors(gt, pred, mask=mask)
    assert err is not None
    assert err['abs_rel'] == 0.0


def test_depth_errors_clamps_prediction_to_range_like_monodepth2():
    gt = np.array([[0.1]], np.float32)
    pred = np.array([[0.3]], np.float32)
    clamped = metrics.depth_errors(gt, pred, max_depth=0.15)
    raw = metrics.depth_errors(gt, pred, max_depth=0.15, clamp=False)
    assert clamped is not None and raw is not None
    assert clamped['abs_rel'] == pytest.approx(0.5, rel=1e-5)
    assert raw['abs_rel'] == pytest.approx(2.0, rel=1e-5)


def test_depth_errors_returns_none_without_valid_pixel():
    gt = np.full((4, 4), 0.5, np.float32)  # all beyond max_depth
    assert metrics.depth_errors(gt, gt) is None


def test_depth_errors_rejects_shape_mismatch():
    with pytest.raises(BadInputError, match=r'\(4, 4\) differs'):
        metrics.depth_errors(np.ones((4, 4)), np.ones((4, 5)))


def test_mean_errors_drops_frames_without_valid_pixels():
    a = {k: 1.0 for k in metrics.DEPTH_METRICS}
    b = {k: 3.0 for k in metrics.DEPTH_METRICS}
    assert metrics.mean_errors([a, None, b]) == {k: 2.0 for k in metrics.DEPTH_METRICS}
    assert metrics.mean_errors([None]) is None


# --------------------------------------------------------------------------- alignment


def test_median_alignment_removes_a_global_scale():
    gt = _gt()
    aligned = metrics.align_depth(1.1 * gt, gt, 'median')
    err = metrics.depth_errors(gt, aligned)
    assert err is not None
    assert err['abs_rel'] == pytest.approx(0.0, abs=1e-6)


def test_none_protocol_keeps_metric_prediction():
    gt = _gt()
    aligned = metrics.align_depth(1.1 * gt, gt, 'none')
    np.testing.assert_allclose(aligned, 1.1 * gt, rtol=1e-6)


def test_median_scales_each_frame_separately():
    gts = np.stack([_gt(0), _gt(1)])
    preds = np.stack([2.0 * gts[0], 3.0 * gts[1]])
    aligned = metrics.align_depth(preds, gts, 'median')
    np.testing.assert_allclose(aligned, gts, rtol=1e-5)


def test_sequence_median_uses_one_scale_for_all_frames():
    gts = np.stack([_gt(0), _gt(1)])
    preds = np.stack([2.0 * gts[0], 2.0 * gts[1]])
    np.testing.assert_allclose(metrics.align_depth(preds, gts, 'sequence-median'), gts, rtol=1e-5)
    preds[1] *= 1.5  # flicker stays visible after a sequence-level fit
    aligned = metrics.align_depth(preds, gts, 'sequence-median')
    assert not np.allclose(aligned[1], gts[1], rtol=0.05)


@pytest.mark.parametrize('protocol', ['sequence-affine', 'sequence-mad'])
def test_sequence_protocols_recover_affine_disparity(protocol):
    gts = np.stack([_gt(0), _gt(1), _gt(2)])
    disparity = 0.01 / gts + 3.0  # relative model: disparity up to scale and shift
    aligned = metrics.align_depth(disparity, gts, protocol, kind='disparity')
    np.testing.assert_allclose(aligned, gts, rtol=1e-4)


def test_sequence_affine_fits_one_scale_for_the_whole_sequence():
    gts = np.stack([_gt(0), _gt(1)])
    disparity = np.stack([1.0 / gts[0], 2.0 / gts[1]])  # second frame's scale differs
    fits = metrics.fit_alignment(disparity, gts, 'sequence-affine', kind='disparity')
    assert fits[0] is fits[1]
    aligned = metrics.align_depth(disparity, gts, 'sequence-affine', kind='disparity')
    err = metrics.depth_errors(gts[1], aligned[1])
    assert err is not None and err['abs_rel'] > 0.05


def test_alignment_of_frame_without_valid_ground_truth_is_nan():
    gt = np.full((4, 4), np.nan, np.float32)
    aligned = metrics.align_depth(np.ones((4, 4), np.float32), gt, 'median')
    assert np.isnan(aligned).all()


def test_align_depth_rejects_unknown_protocol():
    with pytest.raises(ConfigError, match='mean-shift'):
        metrics.align_depth(_gt(), _gt(), 'mean-shift')


def test_align_depth_rejects_unknown_kind():
    with pytest.raises(ConfigError, match='inverse'):
        metrics.align_depth(_gt(), _gt(), 'median', kind='inverse')


# --------------------------------------------------------------------------- reprojection


def test_reproject_with_identity_returns_the_same_depth():
    depth = _gt()
    depth[3, 5] = np.nan
    out = metrics.reproject_depth(depth, CAM, np.eye(4))
    np.testing.assert_allclose(out, depth, rtol=1e-6)
    assert out.dtype == np.float32


def test_reproject_plane_lateral_translation_shifts_by_known_pixels():
    depth = np.full((H, W), 0.05, np.float32)
    # Camera moves +1 mm in x: points move -1 mm in the new camera -> -fx*dx/z = -2 px.
    out = metrics.reproject_depth(depth, CAM, _pose((-0.001, 0.0, 0.0)))
    np.testing.assert_allclose(out[:, : W - 2], 0.05, rtol=1e-6)
    assert np.isnan(out[:, W - 2:]).all()


def test_reproject_plane_forward_motion_reduces_depth():
    depth = np.full((H, W), 0.05, np.float32)
    out = metrics.reproject_depth(depth, CAM, _pose((0.0, 0.0, -0.01)))
    assert np.isfinite(out[H // 2, W // 2])
    np.testing.assert_allclose(out[np.isfinite(out)], 0.04, rtol=1e-5)


def test_reproject_keeps_the_nearest_point_on_collisions():
    depth = np.full((H, W), np.nan, np.float32)
    depth[10, 10] = 0.05
    depth[10, 12] = 0.10
    # dx = +2 mm in the destination: near point moves 4 px, far point 2 px -> both at u=14.
    out = metrics.reproject_depth(depth, CAM, _pose((0.002, 0.0, 0.0)))
    assert out[10, 14] == pytest.approx(0.05)
    assert np.isfinite(out).sum() == 1


def test_reproject_rejects_size_mismatch():
    with pytest.raises(BadInputError, match='does not match intrinsics 64x48'):
        metrics.reproject_depth(np.ones((10, 10), np.float32), CAM, np.eye(4))


# --------------------------------------------------------------------------- TAE


def _plane_sequence(n: int = 4):
    depths = np.full((n, H, W), 0.05, np.float32)
    poses = [_pose((0.001 * i, 0.0, 0.0)) for i in range(n)]
    return depths, poses


def test_tae_of_consistent_depth_is_zero():
    depths, poses = _plane_sequence()
    tae = metrics.temporal_alignment_error(depths, poses, CAM)
    assert tae == pytest.approx(0.0, abs=1e-6)


def test_tae_of_a_scale_flicker_matches_hand_value():
    depths, poses = _plane_sequence(2)
    depths[1] *= 1.1
    # forward |0.05-0.055|/0.055, backward |0.055-0.05|/0.05, averaged, x100.
    expected = 100 * (0.005 / 0.055 + 0.1) / 2
    tae = metrics.temporal_alignment_error(depths, poses, CAM)
    assert tae == pytest.approx(expected, rel=1e-4)


def test_tae_per_pair_values_and_no_overlap_is_none():
    depths, poses = _plane_sequence(3)
    per_pair = metrics.temporal_alignment_errors(depths, poses, CAM)
    assert per_pair.shape == (2,)
    far = [_pose((float(i), 0.0, 0.0)) for i in range(3)]  # 1 m apart: no overlap
    assert metrics.temporal_alignment_error(depths, far, CAM) is None


# --------------------------------------------------------------------------- trajectories


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3))
    R = _rot(np.array([0.3, -0.5, 0.8]), 0.7)
    dst = 2.5 * src @ R.T + np.array([0.1, -0.2, 0.3])
    s, R_est, t = metrics.umeyama_alignment(src, dst, with_scale=True)
    assert s == pytest.approx(2.5)
    np.testing.assert_allclose(R_est, R, atol=1e-9)
    np.testing.assert_allclose(t, [0.1, -0.2, 0.3], atol=1e-9)


def test_umeyama_without_scale_returns_unit_scale():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(20, 3))
    R = _rot(np.array([1.0, 0.0, 0.0]), 0.4)
    s, R_est, _ = metrics.umeyama_alignment(src, src @ R.T, with_scale=False)
    assert s == 1.0
    np.testing.assert_allclose(R_est, R, atol=1e-9)


def test_umeyama_rejects_too_few_points():
    with pytest.raises(BadInputError, match='at least 2 points'):
        metrics.umeyama_alignment(np.zeros((1, 3)), np.zeros((1, 3)))


def _trajectory(n: int = 20) -> np.ndarray:
    poses = []
    for i in range(n):
        R = _rot(np.array([0.0, 1.0, 0.2]), 0.02 * i)
        poses.append(_pose((0.002 * i, 0.001 * math.sin(i / 3), 0.003 * i), R))
    return np.stack(poses)


def test_ate_is_zero_for_a_similarity_transformed_trajectory_only_with_scale():
    gt = _trajectory()
    S = _pose((0.5, 0.1, -0.2), _rot(np.array([0.2, 0.1, 1.0]), 1.0))
    est = S @ gt
    est[:, :3, 3] *= 0.3  # monocular scale
    assert metrics.absolute_trajectory_error(est, gt, with_scale=True) == pytest.approx(
        0.0, abs=1e-9)
    assert metrics.absolute_trajectory_error(est, gt, with_scale=False) > 1e-3


def test_rpe_measures_a_constant_drift_per_frame():
    gt = _trajectory(10)
    gt[:, :3, :3] = np.eye(3)  # pure translation: the drift composes exactly
    est = gt.copy()
    for i in range(10):
        est[i] = gt[i] @ _pose((0.0, 0.0, 0.001 * i))  # +1 mm along the camera z per frame
    trans, rot = metrics.relative_pose_error(est, gt)
    assert trans.shape == (9,) and rot.shape == (9,)
    np.testing.assert_allclose(trans, 0.001, rtol=1e-6)
    np.testing.assert_allclose(rot, 0.0, atol=1e-5)


def test_align_trajectory_maps_estimate_onto_ground_truth():
    gt = _trajectory()
    est = _pose((1.0, 2.0, 3.0)) @ gt
    aligned = metrics.align_trajectory(est, gt, with_scale=False)
    np.testing.assert_allclose(aligned, gt, atol=1e-9)
