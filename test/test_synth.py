"""The synthetic endoscope renderer: exact geometry, consistent poses, endoscope-like frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.cli.bench import main as bench_main
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.metrics import reproject_depth
from endo_depth_ros.synth import INSTRUMENT, TISSUE, Scene, SynthConfig, render_sequence
from endo_depth_ros.synth.contact_sheet import save_contact_sheet
from endo_depth_ros.synth.instrument import instrument_capsules, intersect_instrument

SMALL = SynthConfig(width=64, height=48, frames=3)


def test_straight_tube_depth_matches_the_analytic_cylinder() -> None:
    radius = 0.02
    config = SynthConfig.straight_tube(radius_mm=radius * 1e3, width=80, height=64, frames=1)
    frame = next(render_sequence(config))
    np.testing.assert_allclose(frame.pose[:3, :3], np.eye(3), atol=1e-12)
    K = frame.intrinsics
    v, u = np.mgrid[0:K.height, 0:K.width]
    analytic = radius / np.hypot((u - K.cx) / K.fx, (v - K.cy) / K.fy)
    visible = analytic < config.max_depth_m * 0.999
    assert np.isfinite(frame.depth[visible]).all()
    assert np.isnan(frame.depth[analytic > config.max_depth_m * 1.001]).all()
    rel = np.abs(frame.depth[visible] - analytic[visible]) / analytic[visible]
    assert rel.max() < 1e-4
    # A few pixels spelled out: corner, edge middle, near the centre.
    for row, col in ((0, 0), (0, K.width // 2), (K.height // 2, 0), (K.height // 2 - 3, 30)):
        assert frame.depth[row, col] == pytest.approx(analytic[row, col], rel=1e-4)


def test_reprojected_depth_of_frame_t_matches_frame_t_plus_1() -> None:
    # Frame t is reprojected into a high-resolution crop of frame t+1 (focal 1500 px) so
    # that nearest-pixel rounding in reproject_depth stays far below the tolerance.
    config = SynthConfig(width=160, height=128, frames=2, seed=4, instrument=True)
    scene = Scene(config)
    src = scene.render(scene.camera_pose(0), 0, shade=False)
    pose_src, pose_dst = scene.camera_pose(0), scene.camera_pose(1)
    T_dst_src = np.linalg.inv(pose_dst) @ pose_src
    K = config.intrinsics
    for u0, v0 in ((30.0, 64.0), (120.0, 30.0), (90.0, 110.0)):
        crop = Intrinsics(width=320, height=320, fx=1500.0, fy=1500.0,
                          cx=159.5 - 1500.0 * (u0 - K.cx) / K.fx,
                          cy=159.5 - 1500.0 * (v0 - K.cy) / K.fy)
        dst = scene.render(pose_dst, 1, crop, shade=False)
        tissue_depth = np.where(src.seg == TISSUE, src.depth, np.nan)
        predicted = reproject_depth(tissue_depth, K, T_dst_src, intrinsics_dst=crop)
        both = np.isfinite(predicted) & np.isfinite(dst.depth) & (dst.seg == TISSUE)
        assert both.sum() > 100
        rel = np.abs(predicted[both] - dst.depth[both]) / dst.depth[both]
        assert np.median(rel) < 1e-3


def test_guided_ray_cast_agrees_with_a_fine_brute_force_march() -> None:
    config = SynthConfig(width=40, height=32, frames=1, seed=2)
    scene = Scene(config)
    pose = scene.camera_pose(0)
    depth = scene.render(pose, 0, shade=False).depth.ravel()
    rays = scene.rays(config.intrinsics).reshape(-1, 3)
    reference = np.full(len(rays), np.nan, np.float32)
    for t in np.arange(0.001, config.max_depth_m, 0.0002, dtype=np.float32):
        outside = scene.lumen.gap(pose, rays, np.full(len(rays), t, np.float32)) <= 0
        reference[np.isnan(reference) & outside] = t
    both = np.isfinite(reference) & np.isfinite(depth)
    assert (np.isfinite(reference) == np.isfinite(depth)).mean() > 0.99
    # Within one march step of the reference for all but a few fold-silhouette pixels.
    close = np.abs(depth[both] - reference[both]) <= 0.0002
    assert close.mean() > 0.99


def test_frames_follow_the_contract() -> None:
    frames = list(render_sequence(SynthConfig(width=64, height=48, frames=3, fps=20.0)))
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[1].stamp_ns - frames[0].stamp_ns == 50_000_000
    for f in frames:
        assert f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8
        assert f.depth.shape == (48, 64) and f.depth.dtype == np.float32
        assert f.seg.shape == (48, 64) and f.seg.dtype == np.uint8
        assert f.intrinsics.size == (64, 48)
        R = f.pose[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) == pytest.approx(1.0)
        valid = f.depth[np.isfinite(f.depth)]
        assert valid.size > 0.95 * f.depth.size
        assert valid.min() > 0.004 and valid.max() <= 0.3
        assert np.median(valid) < 0.08
    # Pink-red tissue: red dominates on average.
    mean = frames[0].rgb.reshape(-1, 3).mean(axis=0)
    assert mean[0] > 1.3 * mean[1] and mean[0] > 1.3 * mean[2]


def test_default_camera_is_wide_angle_with_endoscope_distances() -> None:
    config = SynthConfig()
    K = config.intrinsics
    diagonal = 2 * np.degrees(np.arctan(np.hypot(K.width, K.height) / 2 / K.fx))
    assert 90 <= diagonal <= 110
    assert (config.width, config.height, config.fps, config.speed_mm) == (320, 256, 30.0, 1.0)


def test_camera_advances_speed_mm_per_frame_along_a_straight_tube() -> None:
    config = SynthConfig.straight_tube(width=32, height=24, frames=4, speed_mm=2.5)
    scene = Scene(config)
    positions = np.array([scene.camera_pose(i)[:3, 3] for i in range(4)])
    np.testing.assert_allclose(np.diff(positions, axis=0), [[0, 0, 0.0025]] * 3, atol=1e-12)


def test_same_seed_renders_identical_frames_and_other_seeds_differ() -> None:
    a = list(render_sequence(SMALL))
    b = list(render_sequence(SMALL))
    c = next(render_sequence(SMALL.with_(seed=1)))
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.rgb, y.rgb)
        assert np.array_equal(x.depth, y.depth, equal_nan=True)
        assert np.array_equal(x.pose, y.pose)
    assert not np.array_equal(a[0].rgb, c.rgb)


def test_instrument_is_labelled_and_occludes_the_tissue() -> None:
    config = SynthConfig(width=80, height=64, frames=1, instrument=True)
    scene = Scene(config)
    pose = scene.camera_pose(0)
    with_tool = scene.render(pose, 0)
    without = Scene(config.with_(instrument=False)).render(pose, 0)
    tool = with_tool.seg == INSTRUMENT
    assert 0.01 < tool.mean() < 0.5
    assert set(np.unique(with_tool.seg)) == {TISSUE, INSTRUMENT}
    behind = without.depth[tool]
    assert ((with_tool.depth[tool] < behind) | np.isnan(behind)).all()
    assert np.array_equal(with_tool.depth[~tool], without.depth[~tool], equal_nan=True)


def test_fov_mask_blackens_and_invalidates_pixels_outside_the_circle() -> None:
    config = SynthConfig(width=64, height=48, frames=1, fov_mask=True)
    frame = next(render_sequence(config))
    K = frame.intrinsics
    v, u = np.mgrid[0:K.height, 0:K.width]
    radius = config.fov_mask_radius * 0.5 * np.hypot(K.width, K.height)
    outside = (u - K.cx) ** 2 + (v - K.cy) ** 2 > radius ** 2
    assert outside[0, 0] and not outside[K.height // 2, K.width // 2]
    assert (frame.rgb[outside] == 0).all()
    assert np.isnan(frame.depth[outside]).all()
    assert np.isfinite(frame.depth[~outside]).mean() > 0.95


@pytest.mark.parametrize(('changes', 'message'), [
    ({'width': 0}, 'width must be a positive integer'),
    ({'frames': -2}, 'frames must be a positive integer'),
    ({'fps': 0.0}, 'fps must be a positive number'),
    ({'speed_mm': -1.0}, 'speed_mm must be a non-negative number'),
    ({'radius_mm': (30.0, 20.0)}, r'radius_mm must be \(min, max\)'),
    ({'fold_amplitude': 0.9}, 'fold_amplitude must be below 0.8'),
    ({'fov_deg': 200.0}, r'fov_deg must be in \[10, 170\]'),
])
def test_config_rejects_bad_values_naming_them(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SynthConfig(**changes)


def test_contact_sheet_is_written_as_png(tmp_path: Path) -> None:
    frames = list(render_sequence(SynthConfig(width=64, height=48, frames=2, instrument=True)))
    path = save_contact_sheet(frames, tmp_path / 'docs' / 'sheet.png')
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_instrument_bounding_box_never_clips_the_instrument() -> None:
    # The renderer tests only rays inside a box around the instrument; testing every ray
    # must not find more instrument pixels.
    config = SynthConfig(width=80, height=64, frames=200, instrument=True)
    scene = Scene(config)
    plain = Scene(config.with_(instrument=False))
    rays = scene.rays(config.intrinsics).reshape(-1, 3)
    for index in range(0, 200, 25):
        pose = scene.camera_pose(index)
        view = scene.render(pose, index, shade=False)
        tissue = plain.render(pose, index, shade=False).depth
        tool = intersect_instrument(rays, instrument_capsules(index / config.fps, config.seed))
        depth = tool.depth.reshape(tissue.shape)
        expected = np.isfinite(depth) & ~(depth > tissue)
        assert expected.any()
        assert np.array_equal(view.seg == INSTRUMENT, expected)


def test_benchmark_prints_frames_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(['synth', '--sizes', '48x40', '--repeats', '2']) == 0
    out = capsys.readouterr().out
    assert 'frames/s' in out and '48x40' in out and 'rosbag2 mcap' in out
