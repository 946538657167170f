"""Field-of-view detection on rendered endoscope frames (noisy, JPEG-compressed surround,
soft off-centre circle) and its use by the pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from endo_depth_ros import masks
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.pipeline import Pipeline, PipelineConfig
from endo_depth_ros.synth import SynthConfig, render_sequence
from endo_depth_ros.synth.view import endoscope_view_mask

VIEW = {'view_circle': True, 'jpeg_quality': 70, 'surround_noise': 4.0}


@pytest.fixture(scope='module')
def flight() -> tuple[SynthConfig, list[np.ndarray]]:
    config = SynthConfig(width=320, height=256, frames=8, seed=4, **VIEW)
    return config, [f.rgb for f in render_sequence(config)]


def test_detected_view_matches_the_true_circle(flight: tuple[SynthConfig, list]) -> None:
    config, frames = flight
    truth = endoscope_view_mask(config, config.width, config.height)
    fov = masks.FieldOfView(masks.FieldOfViewConfig(margin_px=0, detect_frames=5))
    views = [fov.update(rgb) for rgb in frames]
    assert all(v is not None for v in views)
    ious = [masks.iou(v, truth) for v in views if v is not None]
    assert min(ious) >= 0.98, ious
    # Stable: detected once, then the very same mask for every later frame.
    assert fov.detections == 1
    assert all(v is views[5] for v in views[5:])


def test_margin_shrinks_the_view_and_noise_outside_never_enters(
        flight: tuple[SynthConfig, list]) -> None:
    config, frames = flight
    truth = endoscope_view_mask(config, config.width, config.height)
    fov = masks.FieldOfView(masks.FieldOfViewConfig(margin_px=3, detect_frames=3))
    for rgb in frames[:3]:
        view = fov.update(rgb)
    assert view is not None
    assert not (view & ~truth).any()
    assert view.sum() < truth.sum()


def test_frames_without_a_dark_surround_get_no_mask() -> None:
    fov = masks.FieldOfView()
    for frame in render_sequence(SynthConfig(width=160, height=128, frames=4, seed=1)):
        assert fov.update(frame.rgb) is None


def test_view_is_recomputed_on_a_size_change_and_when_it_stops_fitting(
        flight: tuple[SynthConfig, list]) -> None:
    config, frames = flight
    fov = masks.FieldOfView(masks.FieldOfViewConfig(margin_px=0, detect_frames=2,
                                                    check_every=1))
    first = [fov.update(rgb) for rgb in frames[:2]][-1]
    assert first is not None
    # Another scope: the same images through a smaller window.
    small = config.with_(view_radius=0.3, view_offset=(0.0, 0.0))
    truth_small = endoscope_view_mask(small, config.width, config.height)
    shrunk = [np.where(truth_small[..., None], rgb, 3).astype(np.uint8) for rgb in frames]
    views = [fov.update(rgb) for rgb in shrunk]
    assert views[-1] is not None and masks.iou(views[-1], truth_small) > 0.95
    assert fov.detections >= 2
    # A new image size starts over.
    half = np.ascontiguousarray(frames[0][::2, ::2])
    assert fov.update(half) is not None
    assert fov.mask is not None and fov.mask.shape == half.shape[:2]


def test_circle_and_off_modes_and_config_validation() -> None:
    rgb = np.zeros((100, 200, 3), np.uint8)
    circle = masks.FieldOfView(masks.FieldOfViewConfig(mode='circle', center_x=0.25,
                                                       radius=0.4, margin_px=0))
    view = circle.update(rgb)
    assert view is not None and view[50, 50] and not view[50, 150]
    assert masks.FieldOfView(masks.FieldOfViewConfig(mode='off')).update(rgb) is None
    with pytest.raises(ConfigError, match='mode'):
        masks.FieldOfViewConfig(mode='square')
    with pytest.raises(ConfigError, match='radius'):
        masks.FieldOfViewConfig(radius=0.0)


def test_pipeline_outputs_nothing_outside_the_view(flight: tuple[SynthConfig, list]) -> None:
    config, frames = flight
    intrinsics = config.intrinsics
    pipeline = Pipeline(PipelineConfig())
    for i, rgb in enumerate(frames[:4]):
        (result,) = pipeline.process(rgb, intrinsics, config.stamp_ns(i))
    view = result.view
    assert view is not None
    assert np.isnan(result.depth[~view]).all() and np.isnan(result.raw[~view]).all()
    assert np.isfinite(result.depth[view]).mean() > 0.9
    # Every point of the cloud projects into the view.
    points = result.points
    assert points is not None and len(points) > 1000
    u = np.round(points[:, 0] / points[:, 2] * intrinsics.fx + intrinsics.cx).astype(int)
    v = np.round(points[:, 1] / points[:, 2] * intrinsics.fy + intrinsics.cy).astype(int)
    assert view[v, u].all()
    off = Pipeline(PipelineConfig(field_of_view=masks.FieldOfViewConfig(mode='off')))
    (plain,) = off.process(frames[0], intrinsics, config.stamp_ns(0))
    assert plain.view is None and plain.points is not None and len(plain.points) > len(points)


def test_node_parameters_set_the_field_of_view() -> None:
    from endo_depth_ros.ros.node import parameter_specs, pipeline_config_from_parameters

    names = {spec.name for spec in parameter_specs()}
    assert {'field_of_view.mode', 'field_of_view.margin_px', 'field_of_view.radius'} <= names
    config = pipeline_config_from_parameters({'field_of_view.mode': 'circle',
                                              'field_of_view.radius': 0.45})
    assert config.field_of_view == masks.FieldOfViewConfig(mode='circle', radius=0.45)
    with pytest.raises(ConfigError, match='field_of_view'):
        pipeline_config_from_parameters({'field_of_view.mode': 'oval'})


def test_synthetic_endoscope_view_bag_is_scored_inside_the_detected_view(tmp_path) -> None:
    import json

    from endo_depth_ros.cli import eval as eval_cli
    from endo_depth_ros.cli import synth as synth_cli

    assert synth_cli.main([str(tmp_path / 'flight'), '--frames', '4', '--width', '200',
                           '--height', '160', '--endoscope-view', '--jpeg-quality', '70',
                           '--quiet']) == 0
    out = tmp_path / 'eval'
    assert eval_cli.main([str(tmp_path / 'flight'), '--model', 'gt', '--align', 'none',
                          '--out', str(out), '--no-progress', '--contact-frames', '2']) == 0
    run = json.loads((out / 'results.json').read_text())['runs'][0]
    assert run['metrics']['abs_rel'] == pytest.approx(0.0, abs=1e-6)
    assert run['frames_scored'] == 4
    assert any(p.name.startswith('contact_') for p in out.iterdir())


def test_odometry_detects_features_only_inside_the_view(
        flight: tuple[SynthConfig, list]) -> None:
    from endo_depth_ros.odometry import VisualOdometry

    config, frames = flight
    intrinsics = config.intrinsics
    view = masks.circle_mask(config.width, config.height, 0.3, 0.5, 0.3)  # the left part
    odometry = VisualOdometry()
    odometry.track(frames[0], intrinsics, view=view)
    assert odometry.set_reference_depth(np.full((config.height, config.width), 0.03))
    keyframe = odometry._keyframe  # the corners are what is checked
    assert keyframe is not None and len(keyframe.pixels) > 20
    cols = np.round(keyframe.pixels[:, 0]).astype(int)
    rows = np.round(keyframe.pixels[:, 1]).astype(int)
    assert view[rows, cols].all()
