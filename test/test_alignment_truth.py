"""Alignment judged against the truth on short synthetic flights (the evaluator's metrics).

Temporally stable models (the photometric prior, a metric model, a stable relative
model) must not be made less consistent with the truth than ``none`` (depth-ratio error,
scale drift; ``no_harm`` of ``endo-depth-bench consistency``, which measures the same on
longer flights); a flickering per-frame model must improve clearly. The odometry's
rotation must beat "no rotation" on a slow flight.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from endo_depth_ros import bags, evaluation
from endo_depth_ros.bench.consistency import VARIANTS, make_model, mean_ratio_error, no_harm
from endo_depth_ros.pipeline import PipelineConfig
from endo_depth_ros.synth import CameraEffects, SynthConfig, render_sequence
from endo_depth_ros.temporal import AlignmentConfig

FRAMES = 60


def _bag(tmp: Path, name: str, frames: int = FRAMES, **changes: object) -> Path:
    path = tmp / name
    config = SynthConfig(width=128, height=96, frames=frames).with_(**changes)
    bags.write_sequence(path, render_sequence(config))
    return path


@pytest.fixture(scope='module')
def nuisance_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Auto-exposure steps and ramps, white balance, blur, flashes, JPEG.
    return _bag(tmp_path_factory.mktemp('truth'), 'nuisance', seed=1,
                camera=CameraEffects.endoscope())


@pytest.fixture(scope='module')
def slow_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Slow forward motion with small rotations, like the real sinus clip.
    return _bag(tmp_path_factory.mktemp('truth'), 'slow', seed=3, speed_mm=0.3,
                roll_deg=10.0, tilt_deg=3.0, camera=CameraEffects.endoscope())


def _runs(path: Path, model: str, modes: tuple[str, ...] = ('none', 'stream', 'window'),
          variant: str = 'default') -> dict[str, evaluation.RunResult]:
    topics = bags.detect_topics(path)
    alignment = replace(AlignmentConfig(), **VARIANTS[variant])  # type: ignore[arg-type]
    config = evaluation.EvalConfig(max_depth=0.3, contact_frames=0,
                                   pipeline=PipelineConfig(alignment=alignment))
    spec = evaluation.ModelSpec(evaluation.ORACLE if model == 'gt' else model)
    return {mode: evaluation.evaluate_run(path, topics, spec, make_model(model), mode, config)
            for mode in modes}


def _drift(result: evaluation.RunResult) -> float:
    value = result.summary['scale_drift_max']
    assert value is not None
    return float(value)


def test_alignment_does_not_worsen_the_photometric_prior_against_the_truth(
        nuisance_bag: Path) -> None:
    runs = _runs(nuisance_bag, 'photometric')
    none = runs['none']
    for mode in ('stream', 'window'):
        assert no_harm(runs[mode], none), mode


@pytest.mark.parametrize(('model', 'hurt_mode'), [('gt', 'stream'), ('stable', 'window')])
def test_alignment_leaves_stable_models_as_none_does_where_the_damped_prior_drifted(
        slow_bag: Path, model: str, hurt_mode: str) -> None:
    # The previous parameter prior followed 30 % of each fit of a stable model: on this
    # slow flight that drifted a metric model (stream) and a stable relative model
    # (window) away from the truth. Stable models now keep their own scale.
    runs = _runs(slow_bag, model)
    none = runs['none']
    for mode in ('stream', 'window'):
        assert no_harm(runs[mode], none), mode
        assert _drift(runs[mode]) < 1.01, mode
    old = _runs(slow_bag, model, (hurt_mode,), variant='gain-0.3')[hurt_mode]
    assert not no_harm(old, none)


def test_window_mode_leaves_a_stable_model_as_none_does_on_the_default_flight(
        tmp_path: Path) -> None:
    # The parameter prior used to measure each fit's change on the fit pooled over the
    # window's first frames: without poses those mistake 15-30 frames of motion for a
    # change of scale, the stable model passed for flickering for a few frames and kept
    # their parameters (drift 1.10, ratio error 1.7x none's on this flight). The change
    # is now measured against the most recent frame alone.
    path = _bag(tmp_path, 'flight', frames=40, seed=0)
    runs = _runs(path, 'stable', ('none', 'window'))
    assert no_harm(runs['window'], runs['none'])
    assert _drift(runs['window']) < 1.01


def test_adopting_exposure_steps_cuts_the_photometric_priors_drift(tmp_path: Path) -> None:
    # Auto-exposure steps change the photometric prior's scale; held, the stream keeps
    # them (drift 1.49 on this flight), adopted (step_sigmas) they are undone (1.07).
    path = _bag(tmp_path, 'nuisance5', seed=5, camera=CameraEffects.endoscope())
    held = _runs(path, 'photometric', ('none', 'stream'))
    adopted = _runs(path, 'photometric', ('stream',), variant='adopt-steps')['stream']
    assert no_harm(adopted, held['none'])
    assert _drift(adopted) - 1 < 0.5 * (_drift(held['stream']) - 1)


def test_alignment_cuts_the_ratio_error_of_a_flickering_model_three_times(
        nuisance_bag: Path) -> None:
    runs = _runs(nuisance_bag, 'flicker')
    for mode in ('stream', 'window'):
        assert mean_ratio_error(runs[mode]) < mean_ratio_error(runs['none']) / 3, mode
        assert _drift(runs[mode]) < _drift(runs['none'])


def test_odometry_rotation_beats_the_identity_on_a_slow_flight(slow_bag: Path) -> None:
    run = _runs(slow_bag, 'photometric', ('stream',))['stream']
    identity = run.summary['rpe_rot_identity']
    assert identity is not None and identity < 0.35  # a slow flight: <= 0.3 deg/frame
    assert run.summary['rpe_rot'] is not None and run.summary['rpe_rot'] <= identity
