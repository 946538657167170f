"""The shared per-frame pipeline: model -> odometry -> temporal alignment -> geometry."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from endo_depth_ros import models
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, ConfigError, ModelLoadError
from endo_depth_ros.geometry import CloudConfig
from endo_depth_ros.odometry import OdometryConfig
from endo_depth_ros.pipeline import STAGES, FrameResult, ModelConfig, Pipeline, PipelineConfig
from endo_depth_ros.synth import SynthConfig, SynthFrame, render_sequence
from endo_depth_ros.temporal import AlignmentConfig

WIDTH, HEIGHT = 96, 80


@functools.lru_cache(maxsize=1)
def frames() -> tuple[SynthFrame, ...]:
    return tuple(render_sequence(SynthConfig(width=WIDTH, height=HEIGHT, frames=16, seed=1)))


def config(mode: str = 'stream', **alignment: object) -> PipelineConfig:
    return PipelineConfig(alignment=AlignmentConfig(mode=mode, **alignment))  # type: ignore[arg-type]


def run(pipeline: Pipeline, sequence: tuple[SynthFrame, ...], **kwargs: bool
        ) -> list[FrameResult]:
    results: list[FrameResult] = []
    for frame in sequence:
        results.extend(pipeline.process(frame.rgb, frame.intrinsics, frame.stamp_ns, **kwargs))
    return results + pipeline.flush()


@pytest.mark.parametrize('mode', ['none', 'stream'])
def test_each_frame_comes_out_at_once_with_depth_cloud_pose_and_timings(mode: str) -> None:
    pipeline = Pipeline(config(mode))
    sequence = frames()[:6]
    for i, frame in enumerate(sequence):
        (result,) = pipeline.process(frame.rgb, frame.intrinsics, frame.stamp_ns)
        assert (result.index, result.stamp_ns) == (i, frame.stamp_ns)
        assert result.rgb is frame.rgb and result.intrinsics == frame.intrinsics
        assert result.raw.shape == result.depth.shape == (HEIGHT, WIDTH)
        assert result.output_kind == 'relative_disparity'
        assert result.depth.dtype == np.float32
        assert np.isfinite(result.depth).mean() > 0.9
        assert result.points is not None and result.points.shape[1] == 3
        assert result.colors is not None and len(result.colors) == len(result.points)
        assert result.pose is not None and result.pose.pose.shape == (4, 4)
        assert set(result.timings_ms) == set(STAGES) - {'scale'}  # no scale source
        assert all(ms >= 0 for ms in result.timings_ms.values())
    assert pipeline.flush() == []


def test_fixed_scale_gives_depth_near_the_reference_depth() -> None:
    pipeline = Pipeline(config('stream', scale_source='fixed', reference_depth_m=0.05))
    result = run(pipeline, frames()[:1])[0]
    assert np.nanmedian(result.depth) == pytest.approx(0.05, rel=0.25)


def test_stages_nobody_needs_are_skipped() -> None:
    pipeline = Pipeline(config())
    results = run(pipeline, frames()[:3], compute_points=False, compute_pose=False)
    assert all(r.cloud is None and r.points is None and r.pose is None for r in results)
    assert all(set(r.timings_ms) == {'model', 'alignment'} for r in results)


def test_disabled_odometry_gives_no_pose() -> None:
    pipeline = Pipeline(dataclasses.replace(config(), odometry=OdometryConfig(enabled=False)))
    assert all(r.pose is None for r in run(pipeline, frames()[:2]))


def test_odometry_follows_the_forward_flight_of_the_synthetic_camera() -> None:
    results = run(Pipeline(config()), frames())
    poses = [r.pose for r in results]
    assert all(p is not None for p in poses)
    last = poses[-1]
    assert last is not None and last.valid
    # The camera flies along +z of its first optical frame.
    t = last.pose[:3, 3]
    assert t[2] > 0 and t[2] > np.abs(t[:2]).max()


def test_window_mode_emits_every_frame_once_in_order_after_flush() -> None:
    pipeline = Pipeline(config('window'))
    sequence = frames()[:10]
    emitted_before_flush = []
    for frame in sequence:
        emitted_before_flush.extend(
            pipeline.process(frame.rgb, frame.intrinsics, frame.stamp_ns))
    # The window waits for later frames: not everything is out before the flush.
    assert len(emitted_before_flush) < len(sequence)
    results = emitted_before_flush + pipeline.flush()
    assert [r.stamp_ns for r in results] == [f.stamp_ns for f in sequence]
    assert [r.index for r in results] == list(range(len(sequence)))
    for result, frame in zip(results, sequence, strict=True):
        assert result.rgb is frame.rgb
        assert result.points is not None and result.pose is not None
        assert np.isfinite(result.depth).mean() > 0.9
    assert pipeline.flush() == []


def test_a_new_camera_completes_the_old_stream_and_restarts() -> None:
    pipeline = Pipeline(config('window'))
    sequence = frames()[:4]
    results = []
    for frame in sequence:
        results.extend(pipeline.process(frame.rgb, frame.intrinsics, frame.stamp_ns))
    small = sequence[-1].rgb[::2, ::2].copy()
    smaller = sequence[-1].intrinsics.scaled(small.shape[1], small.shape[0])
    out = pipeline.process(small, smaller, sequence[-1].stamp_ns + 1)
    results.extend(out)
    # Every frame of the old camera came out before the stream restarted.
    assert [r.stamp_ns for r in results[:len(sequence)]] == [f.stamp_ns for f in sequence]
    rest = results[len(sequence):] + pipeline.flush()
    assert [(r.index, r.depth.shape) for r in rest] == [(0, small.shape[:2])]
    assert pipeline.resets == 1


def test_reset_forgets_the_stream_and_stamp_order() -> None:
    pipeline = Pipeline(config())
    sequence = frames()[:3]
    run(pipeline, sequence)
    pipeline.reset()
    (result,) = pipeline.process(sequence[0].rgb, sequence[0].intrinsics, sequence[0].stamp_ns)
    assert result.index == 0
    assert result.pose is not None and result.pose.state == 'init'


def test_stamps_going_backwards_are_rejected_and_the_stream_continues() -> None:
    pipeline = Pipeline(config())
    first, second, third = frames()[:3]
    pipeline.process(second.rgb, second.intrinsics, second.stamp_ns)
    with pytest.raises(BadInputError, match='earlier than the previous frame') as err:
        pipeline.process(first.rgb, first.intrinsics, first.stamp_ns)
    assert err.value.reason == 'stamp_order'
    (result,) = pipeline.process(third.rgb, third.intrinsics, third.stamp_ns)
    assert result.index == 1


@pytest.mark.parametrize(('rgb', 'reason', 'match'), [
    (np.zeros((HEIGHT, WIDTH, 3), np.float32), 'encoding', 'uint8'),
    (np.zeros((HEIGHT, WIDTH), np.uint8), 'image_shape', r'\(H, W, 3\)'),
    (np.zeros((HEIGHT // 2, WIDTH, 3), np.uint8), 'size_mismatch', '96x40'),
])
def test_unusable_images_are_rejected_with_a_reason(rgb: np.ndarray, reason: str,
                                                   match: str) -> None:
    pipeline = Pipeline(config())
    with pytest.raises(BadInputError, match=match) as err:
        pipeline.process(rgb, frames()[0].intrinsics, 0)
    assert err.value.reason == reason


def test_min_period_pads_the_model_time() -> None:
    pipeline = Pipeline(PipelineConfig(model=ModelConfig(min_period_s=0.05)))
    frame = frames()[0]
    (result,) = pipeline.process(frame.rgb, frame.intrinsics, frame.stamp_ns)
    assert result.timings_ms['model'] >= 50.0


def test_a_given_model_is_used_instead_of_loading_one() -> None:
    model = models.load('photometric')
    assert Pipeline(PipelineConfig(), model=model).model is model


def test_cloud_settings_change_between_frames() -> None:
    pipeline = Pipeline(config())
    first, second = frames()[:2]
    (dense,) = pipeline.process(first.rgb, first.intrinsics, first.stamp_ns)
    pipeline.set_cloud_config(CloudConfig(stride=4))
    (sparse,) = pipeline.process(second.rgb, second.intrinsics, second.stamp_ns)
    assert dense.points is not None and sparse.points is not None
    assert len(sparse.points) < len(dense.points) / 8


@pytest.mark.parametrize(('kwargs', 'match'), [
    ({'name': ''}, 'name'),
    ({'input_size': 3}, 'input_size'),
    ({'min_period_s': -1.0}, 'min_period_s'),
])
def test_invalid_model_config_is_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**kwargs)  # type: ignore[arg-type]


def test_a_model_that_cannot_load_raises_model_load_error() -> None:
    with pytest.raises(ModelLoadError, match='needs a checkpoint'):
        Pipeline(PipelineConfig(model=ModelConfig(name='dav2-s')))


def test_intrinsics_of_the_wrong_size_are_rejected() -> None:
    frame = frames()[0]
    wrong = Intrinsics(WIDTH + 1, HEIGHT, 50.0, 50.0, WIDTH / 2, HEIGHT / 2)
    with pytest.raises(BadInputError, match='camera info') as err:
        Pipeline(config()).process(frame.rgb, wrong, 0)
    assert err.value.reason == 'size_mismatch'
