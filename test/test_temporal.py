"""Temporal alignment: exactness, robustness, drift, the window procedure, bounded memory."""

from __future__ import annotations

from dataclasses import replace
import math
from typing import Any

import numpy as np
import psutil
import pytest

from endo_depth_ros import metrics
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, ConfigError
from endo_depth_ros.synth import SynthConfig, render_sequence
from endo_depth_ros.temporal import (
    AGREEMENT_FLOOR,
    AGREEMENT_SIGMAS,
    MAD_TO_SIGMA,
    AlignedFrame,
    AlignmentConfig,
    TemporalAligner,
    disparity_to_depth,
    fit_scale_shift,
    to_disparity,
)

W, H = 64, 48
CAM = Intrinsics(width=W, height=H, fx=0.7 * W, fy=0.7 * W, cx=(W - 1) / 2, cy=(H - 1) / 2)


# --------------------------------------------------------------------------- scenes


def _static_disparity(height: int = H, width: int = W) -> np.ndarray:
    """A smooth positive disparity map (1/m) with a wide range."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    return (30 + 8 * np.sin(xx / 9.0) + 6 * np.cos(yy / 7.0)
            + 5 * np.sin((xx + yy) / 13.0) + 0.2 * xx)


def _affine_maps(rng: np.random.Generator, n: int, disparity: np.ndarray) -> list[tuple]:
    """Random per-frame (scale, shift) keeping every raw disparity positive."""
    low = float(np.nanmin(disparity))
    maps = []
    for _ in range(n):
        a = rng.uniform(0.5, 2.0)
        maps.append((a, rng.uniform(-0.5, 1.0) * a * low))
    return maps


def _corrupt(disparity: np.ndarray, rng: np.random.Generator, noise: float,
             outliers: float) -> np.ndarray:
    """Multiplicative noise and uniform outliers over the frame's range."""
    out = disparity * (1.0 + noise * rng.standard_normal(disparity.shape))
    hit = rng.random(disparity.shape) < outliers
    out[hit] = rng.uniform(np.nanmin(disparity), np.nanmax(disparity), int(hit.sum()))
    return out


def _rot(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return Ry @ Rx @ Rz


def _cavity(frames: int, *, wander_m: float, turn: float, seed: int = 0,
            radius_m: float = 0.04) -> tuple[np.ndarray, list[np.ndarray]]:
    """A camera hovering inside a bumpy spherical cavity: exact depth (m) and poses.

    Ray casting is analytic (sphere interior + spherical bumps), so even 1,000 frames
    take a fraction of a second.
    """
    rng = np.random.default_rng(seed)
    u = (np.arange(W) - CAM.cx) / CAM.fx
    v = (np.arange(H) - CAM.cy) / CAM.fy
    rays = np.stack(np.broadcast_arrays(u[None, :], v[:, None], 1.0), -1).reshape(-1, 3)
    dirs = rng.normal(size=(8, 3))
    dirs[:, 2] = np.abs(dirs[:, 2]) + 1.0
    centres = radius_m * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    radii = rng.uniform(0.006, 0.014, 8)
    phase = rng.uniform(0, 2 * np.pi, 8)
    depths, poses = [], []
    for t in range(frames):
        c = wander_m * np.array([
            math.sin(t / 97 + phase[0]) + 0.5 * math.sin(t / 23 + phase[1]),
            math.sin(t / 83 + phase[2]) + 0.5 * math.sin(t / 29 + phase[3]),
            0.6 * math.sin(t / 71 + phase[4])])
        R = _rot(turn * 0.35 * math.sin(t / 61 + phase[5]),
                 turn * 0.3 * math.sin(t / 53 + phase[6]),
                 turn * 0.3 * math.sin(t / 89 + phase[7]))
        d = rays @ R.T
        a = (d * d).sum(1)
        b = d @ c
        lam = (-b + np.sqrt(b * b - a * (c @ c - radius_m**2))) / a
        for centre, r in zip(centres, radii, strict=True):
            oc = c - centre
            bb = d @ oc
            disc = bb * bb - a * (oc @ oc - r * r)
            near = (-bb - np.sqrt(np.maximum(disc, 0.0))) / a
            lam = np.where((disc > 0) & (near > 0) & (near < lam), near, lam)
        depths.append(lam.reshape(H, W).astype(np.float32))
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = c
        poses.append(T)
    return np.array(depths), poses


def _run(aligner: TemporalAligner, raws: list[np.ndarray], poses: list | None = None,
         camera: Intrinsics | None = None) -> list[AlignedFrame]:
    out: list[AlignedFrame] = []
    for i, raw in enumerate(raws):
        pose = None if poses is None else poses[i]
        out += aligner.push(raw, pose=pose, intrinsics=camera, stamp_ns=1000 * i)
    out += aligner.flush()
    return out


def _global_affine_error(truth: np.ndarray, result: np.ndarray) -> float:
    """Largest relative error of ``result`` after ONE least-squares affine map of ``truth``."""
    valid = np.isfinite(truth) & np.isfinite(result)
    x, y = truth[valid].astype(np.float64), result[valid].astype(np.float64)
    A = np.stack([x, np.ones_like(x)], axis=1)
    (s, t), *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(np.max(np.abs(s * x + t - y) / np.abs(y)))


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(('field', 'value'), [
    ('mode', 'offline'),
    ('scale_source', 'metric'),
    ('estimator', 'median'),
    ('robust', 'ransac'),
    ('capacity', -1),
    ('reference_frames', 0),
    ('keyframes', -1),
    ('keyframes', 1.5),
    ('window', 1),
    ('overlap', 0),
    ('min_valid_pixels', 2),
    ('max_fit_pixels', 10),
    ('keyframe_overlap', 0.0),
    ('keyframe_overlap', 1.5),
    ('trim_fraction', 0.95),
    ('huber_k', 0.0),
    ('blend', 1.0),
    ('blend', math.nan),
    ('reference_depth_m', 0.0),
    ('reference_depth_m', math.inf),
    ('max_fallbacks', 0),
    ('stable_gain', -0.1),
    ('unposed_gain', 1.5),
    ('anchor_pull', 1.0),
    ('flicker_threshold', -0.1),
    ('step_sigmas', -1.0),
    ('robust_iterations', True),
    ('reproject', 'sometimes'),
    ('reproject', True),
])
def test_config_rejects_a_bad_value_naming_it(field: str, value: object) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ConfigError, match=f'{field}.*{value!r}'):
        AlignmentConfig(**kwargs)


def test_config_window_stride_must_cover_the_overlap() -> None:
    with pytest.raises(ConfigError, match=r'window \(12\) must be at least'):
        AlignmentConfig(mode='window', window=12, overlap=6, window_keyframes=2)


def test_config_capacity_below_the_window_is_rejected() -> None:
    with pytest.raises(ConfigError, match='capacity 16 is too small'):
        AlignmentConfig(mode='window', capacity=16, window=32)


def test_config_default_capacity_is_the_smallest_the_mode_needs() -> None:
    assert AlignmentConfig(mode='window', window=20, overlap=4).buffer_capacity == 20
    assert AlignmentConfig(mode='stream', reference_frames=2).buffer_capacity == 4
    assert AlignmentConfig(mode='window').stride == 32 - 2 - 8


# --------------------------------------------------------------------------- fit


@pytest.mark.parametrize('estimator', ['symmetric', 'ols'])
@pytest.mark.parametrize('robust', ['trimmed', 'huber', 'none'])
def test_fit_recovers_an_exact_affine_map(estimator: str, robust: str) -> None:
    x = np.random.default_rng(0).uniform(10, 50, 500)
    fit = fit_scale_shift(x, 1.7 * x - 4.0, estimator=estimator, robust=robust)
    assert fit.ok and fit.reason == ''
    assert fit.scale == pytest.approx(1.7, rel=1e-12)
    assert fit.shift == pytest.approx(-4.0, rel=1e-10)


@pytest.mark.parametrize('robust', ['trimmed', 'huber'])
def test_robust_fit_ignores_fifteen_percent_gross_outliers(robust: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(10, 50, 2000)
    y = 2.0 * x + 3.0
    bad = rng.random(x.size) < 0.15
    y[bad] = rng.uniform(0, 500, int(bad.sum()))
    fit = fit_scale_shift(x, y, robust=robust)
    plain = fit_scale_shift(x, y, robust='none')
    assert fit.scale == pytest.approx(2.0, rel=0.02)
    assert abs(plain.scale - 2.0) > 10 * abs(fit.scale - 2.0)


def test_symmetric_fit_is_unbiased_with_noise_on_both_sides_where_ols_shrinks() -> None:
    rng = np.random.default_rng(2)
    truth = rng.uniform(20, 40, 20000)
    x = truth * (1 + 0.1 * rng.standard_normal(truth.size))
    y = 2.0 * truth * (1 + 0.1 * rng.standard_normal(truth.size)) + 1.0
    symmetric = fit_scale_shift(x, y, estimator='symmetric', robust='none')
    ols = fit_scale_shift(x, y, estimator='ols', robust='none')
    assert symmetric.scale == pytest.approx(2.0, rel=0.02)
    # var(signal) / (var(signal) + var(noise)) = 33.3 / (33.3 + 9.2) ~ 0.78
    assert ols.scale < 0.85 * 2.0


def test_fit_without_shift_fits_a_scale_only() -> None:
    x = np.linspace(1, 2, 100)
    fit = fit_scale_shift(x, 3.0 * x, with_shift=False)
    assert fit.shift == 0.0 and fit.scale == pytest.approx(3.0)


@pytest.mark.parametrize(('x', 'y', 'reason'), [
    (np.array([1.0, 2.0]), np.array([1.0, 2.0]), 'too_few_pixels'),
    (np.full(50, np.nan), np.ones(50), 'too_few_pixels'),
    (np.full(50, 3.0), np.linspace(1, 2, 50), 'constant'),
    (np.linspace(1, 2, 50), np.linspace(2, 1, 50), 'non_positive_scale'),
    (np.linspace(1, 2, 50), np.full(50, 1.0), 'non_positive_scale'),
    (np.linspace(1, 2, 50), 1e300 * np.linspace(1, 2, 50), 'non_finite'),
])
def test_fit_reports_why_degenerate_data_cannot_be_fitted(x: np.ndarray, y: np.ndarray,
                                                          reason: str) -> None:
    fit = fit_scale_shift(x, y, min_pixels=3)
    assert not fit.ok and fit.reason == reason and math.isnan(fit.scale)


def test_fit_with_arrays_of_different_sizes_raises() -> None:
    with pytest.raises(BadInputError, match='equal sizes, got 3, 4') as err:
        fit_scale_shift(np.ones(3), np.ones(4))
    assert err.value.reason == 'size_mismatch'


def test_fit_keep_flags_exactly_the_pairs_of_the_final_fit() -> None:
    x = np.arange(100.0)
    y = 2 * x
    y[[5, 50]] = 1e4
    fit = fit_scale_shift(x, y, trim_fraction=0.1)
    assert not fit.keep[5] and not fit.keep[50] and fit.keep.sum() == fit.pixels


# --------------------------------------------------------------------------- conversions


def test_relative_disparity_is_clamped_at_zero_and_infinite_values_are_invalid() -> None:
    raw = np.array([[-1.0, 0.5, np.inf, np.nan]])
    out = to_disparity(raw, 'relative_disparity')
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0.0, 0.5, np.nan, np.nan]])


def test_metric_depth_is_inverted_and_non_positive_depth_is_invalid() -> None:
    out = to_disparity(np.array([[0.05, 0.0, -1.0, np.nan]]), 'metric_depth')
    np.testing.assert_allclose(out, [[20.0, np.nan, np.nan, np.nan]])


def test_unknown_output_kind_is_a_bad_input() -> None:
    with pytest.raises(BadInputError, match="'disparity'") as err:
        to_disparity(np.ones((2, 2)), 'disparity')
    assert err.value.reason == 'output_kind'


def test_depth_is_nan_where_the_disparity_is_not_positive() -> None:
    depth = disparity_to_depth(np.array([[4.0, 0.0, -1.0, np.nan]], np.float32))
    np.testing.assert_array_equal(depth, [[0.25, np.nan, np.nan, np.nan]])


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize('mode', ['stream', 'window'])
@pytest.mark.parametrize('robust', ['trimmed', 'huber'])
def test_per_frame_affine_maps_are_undone_exactly(mode: str, robust: str) -> None:
    truth = _static_disparity()
    rng = np.random.default_rng(3)
    maps = _affine_maps(rng, 70, truth)
    raws = [(a * truth + b).astype(np.float32) for a, b in maps]
    config = AlignmentConfig(mode=mode, robust=robust, window=16, overlap=4,
                             window_keyframes=2)
    out = _run(TemporalAligner(config), raws)
    assert [o.index for o in out] == list(range(70))
    assert not any(o.fallback for o in out)
    error = _global_affine_error(np.stack([truth] * 70), np.stack([o.disparity for o in out]))
    assert error < 1e-6


def test_reprojection_with_poses_undoes_affine_maps_exactly_when_the_view_turns() -> None:
    # Rolling 180 degrees about the optical axis maps pixels onto pixels, so the warp is
    # exact: without poses the references would not even show the same half of the scene.
    truth = _static_disparity()
    rolled = np.eye(4)
    rolled[:3, :3] = _rot(0.0, 0.0, math.pi)
    rng = np.random.default_rng(4)
    maps = _affine_maps(rng, 40, truth)
    poses = [np.eye(4) if i % 2 == 0 else rolled for i in range(40)]
    views = [truth if i % 2 == 0 else truth[::-1, ::-1] for i in range(40)]
    raws = [(a * v + b).astype(np.float32) for (a, b), v in zip(maps, views, strict=True)]
    out = _run(TemporalAligner(AlignmentConfig(reproject='always')), raws, poses, CAM)
    assert _global_affine_error(np.stack(views), np.stack([o.disparity for o in out])) < 1e-6


# --------------------------------------------------------------------------- metric policy


def test_fixed_scale_puts_the_first_median_depth_at_the_reference_distance() -> None:
    raw = (3.0 * _static_disparity()).astype(np.float32)
    out = TemporalAligner(AlignmentConfig(reference_depth_m=0.04)).push(raw)[0]
    assert np.nanmedian(out.depth) == pytest.approx(0.04, rel=1e-3)
    assert out.shift == 0.0 and out.depth.dtype == np.float32


def test_model_scale_source_keeps_metres_and_fits_a_scale_only() -> None:
    depth = (1.0 / _static_disparity()).astype(np.float32)
    aligner = TemporalAligner(AlignmentConfig(scale_source='model'))
    first = aligner.push(depth, output_kind='metric_depth')[0]
    second = aligner.push(1.5 * depth, output_kind='metric_depth')[0]  # 50 % scale flicker
    np.testing.assert_allclose(first.depth, depth, rtol=1e-6)
    np.testing.assert_allclose(second.depth, depth, rtol=1e-5)
    assert second.shift == 0.0 and second.scale == pytest.approx(1.5, rel=1e-5)


def test_model_scale_source_refuses_a_relative_model() -> None:
    aligner = TemporalAligner(AlignmentConfig(scale_source='model'))
    with pytest.raises(ConfigError, match=r"scale_source='model'.*'relative_disparity'"):
        aligner.push(np.ones((4, 4), np.float32))


def test_no_scale_source_leaves_relative_units() -> None:
    raw = _static_disparity().astype(np.float32)
    out = TemporalAligner(AlignmentConfig(scale_source='none')).push(raw)[0]
    assert (out.scale, out.shift) == (1.0, 0.0)
    np.testing.assert_allclose(out.depth, 1.0 / raw, rtol=1e-6)


def test_mode_none_keeps_the_first_frame_scale_and_so_the_flicker() -> None:
    raw = _static_disparity().astype(np.float32)
    aligner = TemporalAligner(AlignmentConfig(mode='none'))
    first, second = aligner.push(raw)[0], aligner.push(2 * raw)[0]
    assert second.scale == first.scale
    np.testing.assert_allclose(second.depth, first.depth / 2, rtol=1e-6)


# --------------------------------------------------------------------------- robustness


@pytest.fixture(scope='module')
def synthetic_video() -> tuple[np.ndarray, list[np.ndarray], Intrinsics]:
    frames = list(render_sequence(SynthConfig(width=96, height=80, frames=50, seed=3)))
    depth = np.stack([f.depth for f in frames])
    return depth, [f.pose for f in frames], frames[0].intrinsics


@pytest.mark.parametrize(('mode', 'use_poses'), [
    ('stream', False), ('stream', True), ('window', False), ('window', True)])
def test_aligned_tae_is_three_times_lower_than_raw_on_the_synthetic_video(
        synthetic_video: tuple, mode: str, use_poses: bool) -> None:
    depth, poses, camera = synthetic_video
    rng = np.random.default_rng(5)
    truth = 1.0 / depth
    maps = _affine_maps(rng, len(depth), truth)
    # Reprojection needs a depth of the right shape: the first frame's map has no shift
    # (the assumption of scale_source='fixed'; see the module docstring).
    maps[0] = (maps[0][0], 0.0)
    noisy = [_corrupt(d, rng, 0.05, 0.10) for d in truth]
    outliers = [np.abs(n / d - 1) > 0.3 for n, d in zip(noisy, truth, strict=True)]
    raws = [(a * n + b).astype(np.float32) for (a, b), n in zip(maps, noisy, strict=True)]
    reference = float(np.nanmedian(depth[0]))  # a calibrated working distance

    def tae(config: AlignmentConfig) -> float:
        out = _run(TemporalAligner(config), raws, poses if use_poses else None, camera)
        # Score the same pixels for both: not the injected outliers (garbage either way).
        scored = np.stack([np.where(o, np.nan, f.depth)
                           for o, f in zip(outliers, out, strict=True)])
        value = metrics.temporal_alignment_error(scored, poses, camera)
        assert value is not None
        return value

    raw_tae = tae(AlignmentConfig(mode='none', reference_depth_m=reference))
    aligned_tae = tae(AlignmentConfig(mode=mode, reference_depth_m=reference, window=16,
                                      overlap=4))
    assert aligned_tae * 3 < raw_tae


def test_global_scale_drifts_less_than_two_percent_over_1000_frames() -> None:
    depth, poses = _cavity(1000, wander_m=0.002, turn=0.3)
    rng = np.random.default_rng(6)
    truth = 1.0 / depth
    maps = _affine_maps(rng, len(depth), truth)
    maps[0] = (maps[0][0], 0.0)  # a depth of the right shape for reprojection
    raws = [(a * _corrupt(d, rng, 0.05, 0.10) + b).astype(np.float32)
            for (a, b), d in zip(maps, truth, strict=True)]
    # Exact poses: a flickering model's fits may be warped too ('auto' stops for them).
    aligner = TemporalAligner(AlignmentConfig(reference_depth_m=float(np.median(depth[0])),
                                              reproject='always'))
    out = _run(aligner, raws, poses, CAM)
    # Global scale: median of aligned / true depth, averaged over 25 frames (~1 s).
    ratio = np.array([np.nanmedian(o.depth / d) for o, d in zip(out, depth, strict=True)])
    smooth = np.convolve(ratio, np.ones(25) / 25, mode='valid')
    assert np.max(np.abs(smooth / smooth[0] - 1)) < 0.02
    assert aligner.stats.fallbacks == 0 and aligner.stats.fits == 999


def test_a_stable_model_keeps_following_a_changing_working_distance() -> None:
    # Exact disparity of a camera approaching and leaving the wall: the model is stable,
    # so the parameter prior keeps its parameters and the depth follows the motion. With
    # poses the fits see the approach; without them a direct fit mistakes it for a scale
    # change, which the prior damps (unposed_gain) and pulls back (anchor_pull).
    depth, poses = _cavity(200, wander_m=0.008, turn=0.3, seed=1)
    raws = [(1.0 / d).astype(np.float32) for d in depth]
    config = AlignmentConfig(reference_depth_m=float(np.median(depth[0])))

    def worst_ratio(use_poses: bool, config: AlignmentConfig) -> float:
        out = _run(TemporalAligner(config), raws, poses if use_poses else None, CAM)
        ratio = np.array([np.nanmedian(o.depth / d) for o, d in zip(out, depth, strict=True)])
        return float(np.max(np.abs(ratio / ratio[0] - 1)))

    assert worst_ratio(True, config) < 0.02
    assert worst_ratio(False, config) < 0.05
    # Without the prior, direct fits hold the depth distribution instead.
    unfiltered = replace(config, stable_gain=1.0, unposed_gain=1.0, anchor_pull=0.0)
    assert worst_ratio(False, unfiltered) > 0.1


@pytest.mark.parametrize('mode', ['stream', 'window'])
def test_step_sigmas_adopts_a_step_of_a_stable_models_scale_and_nothing_else(
        mode: str) -> None:
    # A stable model (one affine map, 2 % noise, a still camera) whose scale jumps by
    # 1.3 at frame 30, as an exposure step does to the photometric prior.
    truth = _static_disparity()
    rng = np.random.default_rng(3)
    raws = [(_corrupt(truth, rng, 0.02, 0.0) * (1.3 if i >= 30 else 1.0)).astype(np.float32)
            for i in range(60)]
    config = AlignmentConfig(mode=mode, blend=0.0)

    def level(step_sigmas: float) -> np.ndarray:
        out = _run(TemporalAligner(replace(config, step_sigmas=step_sigmas)), raws)
        return np.array([np.nanmedian(o.disparity / truth) for o in out])

    held, adopted = level(0.0), level(6.0)
    assert abs(held[40:].mean() / held[:30].mean() - 1.3) < 0.01  # the step passes
    assert abs(adopted[40:].mean() / adopted[:30].mean() - 1.0) < 0.01  # undone
    # Without the step, the noise alone is never taken for one.
    steady = [(_corrupt(truth, rng, 0.02, 0.0)).astype(np.float32) for _ in range(60)]
    out = _run(TemporalAligner(replace(config, step_sigmas=6.0)), steady)
    scales = np.array([o.scale for o in out])
    assert np.ptp(scales) < 1e-9 * scales[0]


def test_blend_smooths_the_output_but_not_the_references() -> None:
    truth = _static_disparity()
    rng = np.random.default_rng(7)
    raws = [_corrupt(truth, rng, 0.05, 0.0).astype(np.float32) for _ in range(30)]
    still = [np.eye(4)] * len(raws)  # a camera known to stand still
    plain = _run(TemporalAligner(AlignmentConfig(blend=0.0)), raws, still, CAM)
    blended_aligner = TemporalAligner(AlignmentConfig(blend=0.8))
    blended = _run(blended_aligner, raws, still, CAM)
    jitter = [np.nanstd(np.diff(np.stack([o.disparity for o in out[10:]]), axis=0))
              for out in (plain, blended)]
    assert jitter[1] < 0.5 * jitter[0]
    # Same scale and shift: the fits never saw the filtered frames.
    assert [o.scale for o in blended] == [o.scale for o in plain]


@pytest.mark.parametrize('mode', ['stream', 'window'])
def test_without_poses_nothing_is_blended_each_output_is_an_affine_map_of_its_frame(
        mode: str) -> None:
    # A moving camera whose poses are unknown (e.g. nobody asked for odometry): blending
    # the previous output in place would lag the view; the output must be the frame's own.
    video = list(render_sequence(SynthConfig(width=64, height=48, frames=20, seed=6)))
    rng = np.random.default_rng(2)
    raws = [(1.0 / f.depth * (1 + 0.05 * rng.standard_normal(f.depth.shape)))
            .astype(np.float32) for f in video]
    config = AlignmentConfig(mode=mode, blend=0.7, window=8, overlap=2)
    for out in _run(TemporalAligner(config), raws):
        own = out.scale * to_disparity(raws[out.index]) + out.shift
        np.testing.assert_allclose(out.disparity, np.maximum(own, 0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('mode', ['stream', 'window'])
def test_pose_warped_blend_removes_noise_under_motion_without_ghosting(mode: str) -> None:
    video = list(render_sequence(SynthConfig(width=96, height=80, frames=24, seed=5)))
    rng = np.random.default_rng(1)
    truth = [1.0 / f.depth for f in video]
    raws = [(d * (1 + 0.05 * rng.standard_normal(d.shape))).astype(np.float32)
            for d in truth]
    # An instrument enters the last frame: twice as near, unlike anything seen before.
    raws[-1][30:50, 40:60] *= 2.0
    reference = float(np.nanmedian(video[0].depth))

    def run(blend: float) -> list[AlignedFrame]:
        aligner = TemporalAligner(AlignmentConfig(mode=mode, blend=blend, window=8,
                                                  overlap=2, reference_depth_m=reference))
        out = []
        for raw, frame in zip(raws, video, strict=True):
            out += aligner.push(raw, pose=frame.pose, intrinsics=frame.intrinsics)
        return out + aligner.flush()

    plain, fused = run(0.0), run(0.7)
    # Error of the depth's shape (each frame and the truth normalised by their medians).
    errors = [np.nanmedian(np.abs(np.stack([o.disparity / np.nanmedian(o.disparity)
                                            - t / np.nanmedian(t)
                                            for o, t in zip(out[8:-1], truth[8:-1],
                                                            strict=True)])))
              for out in (plain, fused)]
    assert errors[1] < 0.75 * errors[0]
    # The new object disagrees with the warped past: it keeps its own value.
    patch = (slice(32, 48), slice(42, 58))
    np.testing.assert_allclose(fused[-1].disparity[patch], plain[-1].disparity[patch],
                               rtol=1e-5)


# --------------------------------------------------------------------------- window mode


def _reference_window_alignment(raws: list[np.ndarray], window: int, overlap: int,
                                keyframes: int, reference_m: float) -> list[np.ndarray]:
    """The window procedure written from the issue's text, for robust='none'.

    Windows of W frames: T keyframes from the previous window, then L overlapped frames
    (aligned by the previous window, not yet returned), then new frames. Every frame is
    brought into the window's scale by a fit against the previous frame of the window and
    the window's first T frames (keyframes keep their earlier alignment), then one scale
    and shift is fitted on the overlapped frames against their earlier alignment, the
    overlapped frames are blended with weights (j + 1) / (L + 1), the rest appended.
    """
    stride = window - keyframes - overlap

    def fit(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
        x = np.concatenate([p[0].ravel() for p in pairs]).astype(np.float64)
        y = np.concatenate([p[1].ravel() for p in pairs]).astype(np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        dx, dy = x - x.mean(), y - y.mean()
        scale = math.copysign(math.sqrt((dy @ dy) / (dx @ dx)), dx @ dy)
        return scale, y.mean() - scale * x.mean()

    def trusted(x: np.ndarray, refs: list[np.ndarray], s: float, t: float) -> np.ndarray:
        # A pixel stays a reference unless every reference disagrees with it.
        pred = s * x.astype(np.float64) + t
        first = np.abs(refs[0] - pred)
        sigma = MAD_TO_SIGMA * np.median(first[np.isfinite(first)])
        tol = max(AGREEMENT_SIGMAS * sigma, AGREEMENT_FLOOR * np.nanmedian(np.abs(pred)))
        agree = np.zeros(x.shape, bool)
        covered = np.zeros(x.shape, bool)
        for ref in refs:
            both = np.isfinite(ref) & np.isfinite(x)
            covered |= both
            agree |= both & (np.abs(ref - pred) <= tol)
        return agree | ~covered

    def apply(x: np.ndarray, s: float, t: float) -> np.ndarray:
        return np.maximum(x * np.float32(s) + np.float32(t), np.float32(0))

    n = len(raws)
    params: list[tuple[float, float]] = [(math.nan, math.nan)] * n
    refgrid: list[np.ndarray] = [np.empty(0)] * n  # aligned, NaN where untrusted
    output: list[np.ndarray] = [np.empty(0)] * n
    start, aligned_end = 0, 0
    while aligned_end < n:
        end = min(start + window, n)
        overlap_start = max(start, aligned_end - overlap)
        cons: dict[int, tuple[float, float]] = {}
        cons_grid: dict[int, np.ndarray] = {}
        last = None
        for p in range(start, end):
            if p < overlap_start:
                cons[p], cons_grid[p] = params[p], refgrid[p]
            else:
                refs = ([] if last is None else [last]) + [
                    a for a in range(start, min(start + keyframes, p)) if a != last]
                if refs:
                    s, t = fit([(raws[p], cons_grid[r]) for r in refs])
                    keep = trusted(raws[p], [cons_grid[r] for r in refs], s, t)
                elif p < aligned_end:
                    (s, t), keep = params[p], np.ones(raws[p].shape, bool)
                else:
                    s, t = 1.0 / (reference_m * np.median(raws[p])), 0.0
                    keep = np.ones(raws[p].shape, bool)
                cons[p] = (s, t)
                cons_grid[p] = np.where(keep, apply(raws[p], s, t), np.nan)
            last = p
        s_w, t_w = 1.0, 0.0
        if aligned_end > start:
            s_w, t_w = fit([(cons_grid[p], refgrid[p]) for p in range(overlap_start,
                                                                     aligned_end)])
        for p in range(overlap_start, end):
            s, t = s_w * cons[p][0], s_w * cons[p][1] + t_w
            new = apply(raws[p], s, t)
            keep = np.isfinite(cons_grid[p])
            if p < aligned_end:
                w = (p - (aligned_end - overlap) + 1) / (overlap + 1)
                new = np.float32(1 - w) * output[p] + np.float32(w) * new
                s, t = (1 - w) * params[p][0] + w * s, (1 - w) * params[p][1] + w * t
            output[p], params[p] = new, (s, t)
            refgrid[p] = np.where(keep, apply(raws[p], s, t), np.nan)
        aligned_end = end
        start = end - keyframes - overlap
        if end == n:
            break
        assert end - start == keyframes + overlap and stride > 0
    return output


def test_window_mode_matches_an_independent_implementation_of_the_procedure() -> None:
    truth = _static_disparity(24, 32)
    rng = np.random.default_rng(8)
    maps = _affine_maps(rng, 61, truth)
    # A slowly changing scene with noise, so that every fit and blend weight matters.
    raws = [(a * _corrupt(truth * (1 + 0.002 * i * np.sin(truth)), rng, 0.03, 0.0) + b)
            .astype(np.float32) for i, (a, b) in enumerate(maps)]
    config = AlignmentConfig(mode='window', window=16, overlap=4, window_keyframes=2,
                             robust='none', reference_depth_m=0.05, blend=0.0,
                             flicker_threshold=0.0)  # the procedure itself: no output
    # filter, every fit followed (no parameter prior)
    out = _run(TemporalAligner(config), raws)
    expected = _reference_window_alignment(raws, 16, 4, 2, 0.05)
    assert [o.index for o in out] == list(range(61))
    for o, e in zip(out, expected, strict=True):
        np.testing.assert_allclose(o.disparity, e, rtol=2e-5, atol=1e-5)


def test_window_mode_returns_frames_once_per_stride_in_order() -> None:
    config = AlignmentConfig(mode='window', window=12, overlap=3, window_keyframes=2)
    aligner = TemporalAligner(config)
    raw = _static_disparity(12, 16).astype(np.float32)
    counts = [len(aligner.push(raw, stamp_ns=i)) for i in range(40)]
    stride = config.stride  # 7
    # First window after W pushes returns W - L; then S per window.
    assert counts[11] == 12 - 3 and sum(counts[:11]) == 0
    assert [i for i, c in enumerate(counts) if c] == [11, 18, 25, 32, 39]
    assert all(counts[i] == stride for i in (18, 25, 32, 39))
    rest = aligner.flush()
    assert [o.index for o in rest] == list(range(9 + 4 * stride, 40))
    assert aligner.flush() == []


def test_window_mode_continues_after_a_flush_without_returning_a_frame_twice() -> None:
    config = AlignmentConfig(mode='window', window=12, overlap=3, window_keyframes=2)
    aligner = TemporalAligner(config)
    truth = _static_disparity(12, 16)
    rng = np.random.default_rng(9)
    seen = []
    for i, (a, b) in enumerate(_affine_maps(rng, 50, truth)):
        seen += [o.index for o in aligner.push((a * truth + b).astype(np.float32))]
        if i in (4, 20):
            seen += [o.index for o in aligner.flush()]
    seen += [o.index for o in aligner.flush()]
    assert seen == list(range(50))


# --------------------------------------------------------------------------- degenerate


@pytest.mark.parametrize('mode', ['stream', 'window'])
def test_all_nan_frames_come_out_all_nan_as_fallbacks(mode: str) -> None:
    raw = _static_disparity().astype(np.float32)
    empty = np.full_like(raw, np.nan)
    aligner = TemporalAligner(AlignmentConfig(mode=mode, window=8, overlap=2))
    out = _run(aligner, [empty, raw, raw, empty, raw * 2] + [raw] * 10)
    assert len(out) == 15
    for i in (0, 3):
        assert out[i].fallback and np.isnan(out[i].depth).all()
    assert not out[4].fallback
    np.testing.assert_allclose(out[4].disparity, out[2].disparity, rtol=1e-5)
    assert aligner.stats.fallbacks == 2


@pytest.mark.parametrize(('frame', 'reason'), [
    (np.full((H, W), 7.0, np.float32), 'constant'),
    (np.where(np.arange(W * H).reshape(H, W) == 5, 3.0, np.nan).astype(np.float32),
     'too_few_pixels'),
])
def test_a_degenerate_frame_falls_back_to_the_last_good_scale(frame: np.ndarray,
                                                                reason: str) -> None:
    raw = _static_disparity().astype(np.float32)
    aligner = TemporalAligner(AlignmentConfig())
    good = aligner.push(raw)[0]
    bad = aligner.push(frame)[0]
    assert bad.fallback and bad.fallback_reason == reason
    assert (bad.scale, bad.shift) == (good.scale, good.shift)
    after = aligner.push(raw)[0]  # the degenerate frame was not used as a reference
    assert not after.fallback
    np.testing.assert_allclose(after.disparity, good.disparity, rtol=1e-5)
    assert aligner.stats.rejected_fits == 1 and aligner.stats.fallbacks == 1


def test_a_stream_starting_with_a_constant_frame_anchors_on_the_next_usable_one() -> None:
    raw = _static_disparity().astype(np.float32)
    aligner = TemporalAligner(AlignmentConfig(reference_depth_m=0.05))
    first = aligner.push(np.full_like(raw, 2.0))[0]
    assert first.fallback and first.fallback_reason == 'constant'
    assert np.nanmedian(first.depth) == pytest.approx(0.05)  # best effort from itself
    second = aligner.push(raw)[0]
    assert not second.fallback and np.nanmedian(second.depth) == pytest.approx(0.05, rel=1e-3)


@pytest.mark.parametrize('mode', ['none', 'stream', 'window'])
def test_a_frame_size_change_resets_the_buffer_and_is_counted(mode: str) -> None:
    small = _static_disparity(24, 32).astype(np.float32)
    large = _static_disparity().astype(np.float32)
    aligner = TemporalAligner(AlignmentConfig(mode=mode, window=8, overlap=2))
    out = []
    for _ in range(5):
        out += aligner.push(small)
    out += aligner.push(large)  # window mode: returns the 5 small frames here
    for _ in range(9):
        out += aligner.push(large)
    out += aligner.flush()
    assert [o.index for o in out] == list(range(15))
    assert [o.depth.shape for o in out] == [(24, 32)] * 5 + [(H, W)] * 10
    assert aligner.stats.resets == 1 and aligner.stats.fallbacks == 0
    assert np.nanmedian(out[5].depth) == pytest.approx(0.05, rel=1e-3)  # a fresh scale


def test_a_change_of_output_kind_resets_the_buffer() -> None:
    raw = _static_disparity().astype(np.float32)
    aligner = TemporalAligner(AlignmentConfig())
    aligner.push(raw)
    aligner.push(1.0 / raw, output_kind='metric_depth')
    assert aligner.stats.resets == 1


def test_after_max_fallbacks_the_buffer_reanchors_on_the_new_scene() -> None:
    # The second scene is the first one upside down in disparity: every fit against the
    # old references finds a negative scale, until the buffer restarts from the new scene.
    raw = _static_disparity().astype(np.float32)
    other = (raw.max() + raw.min() - raw).astype(np.float32)
    aligner = TemporalAligner(AlignmentConfig(max_fallbacks=3))
    out = _run(aligner, [raw] * 3 + [other] * 6)
    assert [o.fallback for o in out] == [False] * 3 + [True] * 3 + [False] * 3
    assert {o.fallback_reason for o in out[3:6]} == {'non_positive_scale'}
    assert aligner.stats.reanchors == 1
    assert out[5].scale == out[2].scale  # re-anchored with the last good scale


def test_masked_pixels_are_left_out_of_the_fit_but_kept_in_the_output() -> None:
    raw = _static_disparity().astype(np.float32)
    mask = np.ones(raw.shape, bool)
    mask[:, :20] = False  # an instrument moving over the left part
    aligner = TemporalAligner(AlignmentConfig())
    first = aligner.push(raw, mask=mask)[0]
    moved = raw.copy()
    moved[:, :20] = 999.0
    second = aligner.push(2 * moved, mask=mask)[0]
    assert second.scale == pytest.approx(first.scale / 2, rel=1e-6)
    assert np.isfinite(second.depth[:, :20]).all()


@pytest.mark.parametrize(('kwargs', 'reason', 'match'), [
    ({'raw': np.ones((2, 3, 3))}, 'shape', r'\(2, 3, 3\)'),
    ({'raw': np.array([['a']])}, 'shape', 'dtype <U1'),
    ({'output_kind': 'depth'}, 'output_kind', "'depth'"),
    ({'mask': np.ones((H, W), np.uint8)}, 'mask', 'uint8'),
    ({'mask': np.ones((2, 2), bool)}, 'size_mismatch', r'\(2, 2\)'),
    ({'intrinsics': CAM.scaled(32, 24)}, 'size_mismatch', '32x24'),
    ({'pose': np.eye(3), 'intrinsics': CAM}, 'pose', r'\(3, 3\)'),
    ({'pose': np.full((4, 4), np.nan), 'intrinsics': CAM}, 'pose', 'nan'),
    ({'pose': np.eye(4)}, 'pose', 'without intrinsics'),
])
def test_bad_inputs_raise_with_the_offending_value(kwargs: dict, reason: str,
                                                   match: str) -> None:
    args = {'raw': _static_disparity().astype(np.float32), **kwargs}
    raw = args.pop('raw')
    with pytest.raises(BadInputError, match=match) as err:
        TemporalAligner().push(raw, **args)
    assert err.value.reason == reason


# --------------------------------------------------------------------------- memory, state


@pytest.mark.parametrize('mode', ['stream', 'window'])
def test_memory_stays_flat_over_10000_frames(mode: str) -> None:
    truth = _static_disparity(12, 16)
    rng = np.random.default_rng(10)
    raws = [(_corrupt(truth, rng, 0.05, 0.1) * a + b).astype(np.float32)
            for a, b in _affine_maps(rng, 64, truth)]
    config = AlignmentConfig(mode=mode, window=12, overlap=3, min_valid_pixels=20)
    aligner = TemporalAligner(config)
    process = psutil.Process()
    emitted = 0
    sizes, rss = [], []
    for i in range(10_000):
        emitted += len(aligner.push(raws[i % 64], stamp_ns=i))
        if i % 1000 == 999:
            sizes.append(aligner.buffer_nbytes)
            rss.append(process.memory_info().rss)
    emitted += len(aligner.flush())
    assert emitted == 10_000
    assert len(set(sizes)) == 1
    assert rss[-1] - rss[0] < 4 * 2**20  # bytes: no per-frame growth
    assert aligner.stats.frames == 10_000


def test_reset_forgets_the_stream_and_restarts_indices() -> None:
    raw = _static_disparity().astype(np.float32)
    aligner = TemporalAligner()
    aligner.push(raw)
    aligner.push(2 * raw)
    aligner.reset()
    out = aligner.push(3 * raw)[0]
    assert out.index == 0 and out.scale == pytest.approx(1 / (0.05 * np.median(3 * raw)))
    assert aligner.stats.resets == 1 and aligner.stats.frames == 3


def test_stats_are_a_snapshot() -> None:
    aligner = TemporalAligner()
    stats = aligner.stats
    aligner.push(_static_disparity().astype(np.float32))
    assert stats.frames == 0 and aligner.stats.frames == 1


def test_output_carries_index_stamp_and_float32_maps() -> None:
    aligner = TemporalAligner()
    out = aligner.push(_static_disparity(), stamp_ns=123)
    assert len(out) == 1
    frame = out[0]
    assert (frame.index, frame.stamp_ns, frame.fallback) == (0, 123, False)
    assert frame.depth.dtype == frame.disparity.dtype == np.float32
    np.testing.assert_allclose(frame.depth * frame.disparity, 1.0, rtol=1e-6)
