"""Metric scale sources (endo_depth_ros.scale): stereo, kinematics, and their plumbing."""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest

from endo_depth_ros import bags, metrics
from endo_depth_ros.errors import BadInputError, ConfigError
from endo_depth_ros.motion_stereo import MotionStereo
from endo_depth_ros.odometry import PoseEstimate
from endo_depth_ros.pipeline import Pipeline, PipelineConfig
from endo_depth_ros.scale import (
    LOW_COVERAGE,
    NO_RIGHT_IMAGE,
    NOT_ENOUGH_MOTION,
    KinematicTrack,
    MetricScale,
    ScaleConfig,
    StereoDepth,
    StereoPair,
    baseline_from_projection,
    fit_inverse_depth,
    usable_pixels,
)
from endo_depth_ros.synth import SynthConfig, SynthFrame, render_sequence
from endo_depth_ros.synth.stereo import right_projection

BASELINE_MM = 4.0


@functools.lru_cache(maxsize=1)
def flight() -> tuple[SynthFrame, ...]:
    return tuple(render_sequence(SynthConfig(
        width=160, height=128, frames=9, seed=3, stereo_baseline_mm=BASELINE_MM,
        kinematics_noise_m=2e-4)))


def test_baseline_comes_from_the_right_projection_and_a_left_one_is_refused() -> None:
    K = flight()[0].intrinsics.K
    assert baseline_from_projection(right_projection(K, 0.0042)) == pytest.approx(0.0042)
    with pytest.raises(BadInputError, match='baseline'):
        baseline_from_projection(right_projection(K, 0.0))
    with pytest.raises(BadInputError, match='12 finite'):
        baseline_from_projection([1.0, 2.0])


def test_robust_fit_recovers_scale_and_shift_despite_outliers() -> None:
    rng = np.random.default_rng(0)
    mono = rng.uniform(10, 50, 2000)
    stereo = 0.02 * mono + 0.1
    stereo[:200] = rng.uniform(0, 5, 200)  # 10 % gross outliers (an instrument)
    a, b = fit_inverse_depth(mono, stereo, with_shift=True, trim_fraction=0.2)
    assert (a, b) == (pytest.approx(0.02, rel=1e-3), pytest.approx(0.1, abs=1e-3))
    a, b = fit_inverse_depth(mono, 0.03 * mono, with_shift=False, trim_fraction=0.2)
    assert (a, b) == (pytest.approx(0.03), 0.0)
    assert fit_inverse_depth(mono[:5], mono[:5], with_shift=False, trim_fraction=0) is None


def test_semi_global_matching_measures_the_rendered_pair_in_metres() -> None:
    frame = flight()[2]
    assert frame.right is not None and frame.baseline_m == pytest.approx(BASELINE_MM * 1e-3)
    inverse = StereoDepth(ScaleConfig()).inverse_depth(
        frame.rgb, frame.right.rgb, frame.intrinsics, frame.baseline_m)
    truth = cv2.resize(frame.depth, inverse.shape[::-1], interpolation=cv2.INTER_NEAREST)
    measured = np.isfinite(inverse) & np.isfinite(truth)
    assert measured.mean() > 0.4
    ratio = (1.0 / inverse[measured]) / truth[measured]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.03)
    # The left strip SGBM does not search by itself (its disparity range) is measured
    # too, as accurately.
    strip = measured[:, :ScaleConfig().stereo_max_disparity_px]
    assert strip.mean() > 0.4
    left = (1.0 / inverse[:, :strip.shape[1]][strip]) / truth[:, :strip.shape[1]][strip]
    assert np.median(left) == pytest.approx(1.0, abs=0.03)


def test_stereo_pipeline_is_metric_and_depth_cloud_and_pose_share_the_scale() -> None:
    # Scale only (a relative model fits a shift by default; see the test below).
    pipeline = Pipeline(PipelineConfig(scale=ScaleConfig(source='stereo', fit_shift='never')))
    fixed = Pipeline(PipelineConfig())
    for frame in flight():
        assert frame.right is not None
        (out,) = pipeline.process(frame.rgb, frame.intrinsics, frame.stamp_ns,
                                  stereo=StereoPair(frame.right.rgb, frame.baseline_m))
        (ref,) = fixed.process(frame.rgb, frame.intrinsics, frame.stamp_ns)
    errors = metrics.depth_errors(frame.depth, out.depth)
    assert errors is not None and errors['abs_rel'] < 0.5
    assert np.nanmedian(out.depth / frame.depth) == pytest.approx(1.0, abs=0.08)
    factor = pipeline.scale.stats.scale
    # One factor on the whole aligned depth (the alignments differ slightly: odometry's
    # keyframe points come from stereo, and the aligner reprojects with its poses).
    ratio = out.depth / ref.depth
    assert np.nanmedian(ratio) == pytest.approx(factor, rel=0.02)
    assert np.nanpercentile(ratio, 90) / np.nanpercentile(ratio, 10) < 1.03
    assert out.points is not None
    assert np.nanmedian(out.points.reshape(-1, 3)[:, 2]) == pytest.approx(
        np.nanmedian(out.depth), rel=0.02)
    # The pose is metric: the camera's displacement since the first frame, in metres
    # (the fixed policy's is twice too short here; over a long flight see the bench).
    assert out.pose is not None and out.pose.valid
    moved = (np.linalg.inv(flight()[0].pose) @ frame.pose)[:3, 3]
    assert np.linalg.norm(out.pose.pose[:3, 3]) == pytest.approx(np.linalg.norm(moved),
                                                                 rel=0.1)
    assert 'scale' in out.timings_ms


def test_a_shift_is_fitted_by_default_for_relative_models_not_for_metric_ones() -> None:
    frame = flight()[1]
    assert frame.right is not None
    pair = StereoPair(frame.right.rgb, frame.baseline_m)
    # Aligned depth of an affine model: inverse depth 2 * (1/z) + 20 (1/m).
    depth = (1.0 / (2.0 / frame.depth + np.float32(20.0))).astype(np.float32)
    relative = MetricScale(ScaleConfig(source='stereo'))
    metric_model = MetricScale(ScaleConfig(source='stereo'), affine=False)
    forced = MetricScale(ScaleConfig(source='stereo', fit_shift='always'), affine=False)
    assert relative.fit_shift and forced.fit_shift and not metric_model.fit_shift
    out, _ = relative.apply(depth, frame.rgb, frame.intrinsics, 0, None, pair)
    assert relative.stats.shift != 0.0
    assert np.nanmedian(out / frame.depth) == pytest.approx(1.0, abs=0.03)
    metric_model.apply(depth, frame.rgb, frame.intrinsics, 0, None, pair)
    assert metric_model.stats.shift == 0.0
    assert Pipeline(PipelineConfig(scale=ScaleConfig(source='stereo'))).scale.fit_shift


def test_missing_right_frames_and_an_occluded_view_keep_the_last_good_scale() -> None:
    scale = MetricScale(ScaleConfig(source='stereo', fit_shift='never'))
    frame = flight()[1]
    assert frame.right is not None
    depth = frame.depth * np.float32(2.0)  # an aligned depth twice the truth
    metric, _ = scale.apply(depth, frame.rgb, frame.intrinsics, 0, None, None)
    assert scale.stats.reasons == {NO_RIGHT_IMAGE: 1} and not scale.stats.measured
    np.testing.assert_array_equal(metric, depth)  # before any fit: the alignment's policy
    pair = StereoPair(frame.right.rgb, frame.baseline_m)
    scale.apply(depth, frame.rgb, frame.intrinsics, 1, None, pair)
    good = scale.stats.scale
    assert good == pytest.approx(0.5, rel=0.03)
    black = StereoPair(np.zeros_like(frame.right.rgb), frame.baseline_m)
    metric, _ = scale.apply(depth, frame.rgb, frame.intrinsics, 2, None, black)
    assert scale.stats.reasons[LOW_COVERAGE] == 1 and scale.stats.fallbacks == 2
    assert scale.stats.scale == good
    np.testing.assert_allclose(metric, depth * np.float32(good), rtol=1e-6)


def test_kinematic_track_interpolates_and_restarts_on_an_earlier_stamp() -> None:
    track = KinematicTrack()
    a, b = np.eye(4), np.eye(4)
    b[:3, :3] = cv2.Rodrigues(np.array([0.0, 0.0, 0.2]))[0]
    b[:3, 3] = (0.01, 0.0, 0.02)
    track.add(1_000, a)
    track.add(2_000, b)
    mid = track.at(1_500)
    assert mid is not None
    np.testing.assert_allclose(mid[:3, 3], (0.005, 0.0, 0.01))
    assert cv2.Rodrigues(mid[:3, :3])[0].ravel()[2] == pytest.approx(0.1)
    assert track.at(500) is None and track.at(3_000) is None
    assert track.at(3_000, hold=True) is b
    track.add(100, a)  # a looping bag
    assert len(track) == 1
    with pytest.raises(BadInputError, match='finite 4x4'):
        track.add(200, np.full((4, 4), np.nan))


def _grey(frame: SynthFrame) -> np.ndarray:
    return cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY)


def _motion(later: SynthFrame, earlier: SynthFrame) -> np.ndarray:
    """The true ``T_s_t`` (camera of ``later`` to camera of ``earlier``, metres)."""
    return np.linalg.inv(earlier.pose) @ later.pose


def test_motion_stereo_measures_the_scale_from_the_baseline_length() -> None:
    later, earlier = flight()[3], flight()[1]
    grey = _grey(later)
    aligned = later.depth * np.float32(2.5)  # an aligned depth 2.5x too far
    inverse = 1.0 / np.where(later.seg == 0, aligned, np.nan)
    motion = MotionStereo(trim_fraction=0.2, with_shift=False)
    T = _motion(later, earlier)
    exact = motion.fit(grey, _grey(earlier), usable_pixels(grey, 2.0), inverse,
                       later.intrinsics, T)
    assert exact is not None and exact.points > 1000
    assert 1.0 / exact.k == pytest.approx(0.4, rel=0.03)  # metric = aligned * 0.4
    # The robot's direction and rotation are off (kinematic noise, hand-eye error): the
    # fit corrects them and keeps only the baseline length.
    wrong = T.copy()
    wrong[:3, :3] = wrong[:3, :3] @ cv2.Rodrigues(np.radians([0.5, -0.5, 0.3]))[0]
    wrong[:3, 3] = cv2.Rodrigues(np.radians([0.0, 6.0, 0.0]))[0] @ T[:3, 3]
    refined = motion.fit(grey, _grey(earlier), usable_pixels(grey, 2.0), inverse,
                         later.intrinsics, wrong)
    assert refined is not None and refined.direction_change_deg > 3.0
    assert 1.0 / refined.k == pytest.approx(0.4, rel=0.04)
    # A shift in disparity (a model affine in disparity) is recovered with fit_shift.
    affine = inverse + 5.0  # the true inverse depth is 2.5 * (affine - 5)
    shifted = MotionStereo(trim_fraction=0.2, with_shift=True).fit(
        grey, _grey(earlier), usable_pixels(grey, 2.0), affine, later.intrinsics, T)
    assert shifted is not None and shifted.beta < 0
    metric_inverse = shifted.k * affine + shifted.beta
    assert np.nanmedian(metric_inverse * later.depth) == pytest.approx(1.0, abs=0.03)


def test_motion_stereo_refuses_a_view_without_texture() -> None:
    later, earlier = flight()[3], flight()[1]
    flat = np.full_like(_grey(later), 128)
    inverse = 1.0 / later.depth
    fit = MotionStereo(0.2, False).fit(flat, flat, usable_pixels(flat, 2.0), inverse,
                                       later.intrinsics, _motion(later, earlier))
    assert fit is None


def test_kinematic_velocity_is_a_line_fit_over_the_span() -> None:
    track = KinematicTrack()
    rng = np.random.default_rng(0)
    assert track.velocity(0, 0.5) is None
    for i in range(20):
        pose = np.eye(4)
        pose[:3, 3] = np.array([0.03, 0.0, -0.01]) * i / 30 + rng.normal(0, 3e-4, 3)
        track.add(round(i / 30 * 1e9), pose)
    velocity = track.velocity(round(19 / 30 * 1e9), 0.6)
    assert velocity is not None
    np.testing.assert_allclose(velocity, (0.03, 0.0, -0.01), atol=2e-3)  # m/s
    # Three samples covering 0.07 s are too short a track for a 0.6 s fit.
    short = KinematicTrack()
    for i in range(3):
        short.add(i * 33_000_000, np.eye(4))
    assert short.velocity(66_000_000, 0.6) is None


def test_kinematic_scale_is_measured_on_the_published_depth_once_the_robot_moved() -> None:
    frames = flight()
    config = ScaleConfig(source='kinematics', kinematics_time_offset_s=0.03)
    scale = MetricScale(config)
    measured = []
    for frame in frames:
        assert frame.kinematic_pose is not None
        scale.add_kinematics(frame.stamp_ns, frame.kinematic_pose)
        aligned = frame.depth * np.float32(2.5)
        metric, _ = scale.apply(aligned, frame.rgb, frame.intrinsics, frame.stamp_ns, None,
                                None)
        if scale.stats.measured:
            measured.append(float(np.nanmedian(metric / frame.depth)))
    # No measurement before the track covers a fifth of the smoothing span; the first
    # ones rest on a few noisy samples (0.2 mm here), later ones on more.
    assert scale.stats.reasons[NOT_ENOUGH_MOTION] >= 2
    assert len(measured) >= 5
    assert measured[0] == pytest.approx(1.0, abs=0.12)
    assert measured[-4:] == [pytest.approx(1.0, abs=0.05)] * 4
    # Once measured, one frame in kinematics_every (2) is matched; the others hold.
    assert scale.stats.held >= len(measured) // 2 - 1 and scale.stats.fits < len(measured)
    assert scale.stats.baseline_m >= config.kinematics_min_motion_m


def test_kinematic_poses_replace_odometry_relative_to_the_first_frame() -> None:
    scale = MetricScale(ScaleConfig(kinematics_odometry='kinematics'))
    base = np.eye(4)
    base[:3, 3] = (1.0, 2.0, 3.0)
    moved = base.copy()
    moved[2, 3] += 0.005
    estimate = PoseEstimate(pose=np.eye(4), valid=True, covariance=np.eye(6))
    depth = np.ones((4, 4), np.float32)
    rgb = np.zeros((4, 4, 3), np.uint8)
    camera = flight()[0].intrinsics.scaled(4, 4)
    scale.add_kinematics(0, base)
    scale.add_kinematics(10, moved)
    _, first = scale.apply(depth, rgb, camera, 0, estimate, None)
    _, second = scale.apply(depth, rgb, camera, 10, estimate, None)
    assert first is not None and second is not None
    np.testing.assert_allclose(first.pose, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(second.pose[:3, 3], (0, 0, 0.005), atol=1e-12)
    _, lost = scale.apply(depth, rgb, camera, 10**9, estimate, None)
    assert lost is not None and not lost.valid


@pytest.mark.parametrize(('field', 'value', 'match'), [
    ('source', 'lidar', 'source'), ('kinematics_odometry', 'gps', 'kinematics_odometry'),
    ('stereo_block_size', 4, 'odd'), ('smoothing', 1.0, 'smoothing'),
    ('fit_shift', 'on', 'fit_shift'), ('kinematics_every', 0, 'kinematics_every'),
    ('kinematics_time_offset_s', 5.0, 'kinematics_time_offset_s')])
def test_bad_scale_settings_are_refused_naming_the_setting(field: str, value: object,
                                                            match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ScaleConfig(**{field: value})  # type: ignore[arg-type]


def test_stereo_and_kinematic_topics_round_trip_through_a_bag(tmp_path: Path) -> None:
    frames = flight()[:3]
    bags.write_sequence(tmp_path / 'bag', frames)
    topics = bags.detect_topics(tmp_path / 'bag')
    assert (topics.image, topics.right_image) == (bags.TOPIC_IMAGE, bags.TOPIC_RIGHT_IMAGE)
    assert topics.right_camera_info == bags.TOPIC_RIGHT_CAMERA_INFO
    assert (topics.kinematics, topics.pose) == (bags.TOPIC_KINEMATICS, bags.TOPIC_POSE)
    read = list(bags.read_frames(tmp_path / 'bag', topics))
    assert len(read) == 3
    for got, frame in zip(read, frames, strict=True):
        assert frame.right is not None and frame.kinematic_pose is not None
        np.testing.assert_array_equal(got.right_rgb, frame.right.rgb)
        assert got.baseline_m == pytest.approx(BASELINE_MM * 1e-3)
        assert got.kinematics is not None and got.kinematics[0] == frame.stamp_ns
        np.testing.assert_allclose(got.kinematics[1], frame.kinematic_pose, atol=1e-9)


def test_acc_2cm_counts_pixels_within_two_centimetres() -> None:
    gt = np.array([[0.05, 0.05], [0.05, 0.05]], np.float32)
    pred = np.array([[0.06, 0.069], [0.075, 0.02]], np.float32)
    errors = metrics.depth_errors(gt, pred, clamp=False)
    assert errors is not None and errors['acc_2cm'] == pytest.approx(0.5)
