"""``endo-depth-bench scale``: metric scale from stereo and kinematics, quality and cost.

One synthetic flight (``endo_depth_ros.synth`` with a rectified right camera and a
kinematic pose stream: 0.3 mm noise, 30 ms latency, a small hand-eye error) is rendered
once and run through the ``Pipeline`` with each scale source, for two models: the
photometric prior and a flickering stand-in for a per-frame network (true disparity,
5 % noise, a random scale and shift per frame; ``bench.align.FlickeringModel``).

Table 1 (quality, ``--protocol none``, i.e. metric): AbsRel, RMSE, δ1, acc@2cm and the
rigid (SE(3)) ATE, also as a share of the path; ``AbsRel / median`` divides the metric
AbsRel by the same model's AbsRel under per-frame median scaling (an oracle's scale);
the oracle row's ATE is the Sim(3) one (the trajectory under its best scale).

Scale error: the truth scale of a frame is the per-frame oracle's, the median of
true depth / output depth over its tissue pixels (instrument and unmeasured pixels
left out); ``scale err`` is |median(output / true depth) - 1| per frame, i.e. how far
the published depth's scale is from that truth (median, 95th percentile and maximum
over the frames from the first measured scale on). With a shift fit the output is not
a pure rescaling; its median ratio to the truth is still what is scored.

Table 2 (robustness): stereo with a dark, textureless instrument shaft covering half of
both views (its pixels are not scored), stereo with the right frame missing every third
frame, kinematics with more noise and with the latency not compensated.

Table 3 (cost) times the pipeline at 640x512 with the photometric model and each scale
source; the ratios are the scale stage over the model and over the whole pipeline of the
same run. Times are means over the timed frames (``kinematics_every`` measures one
frame in N: a median would show only the frames that keep the scale).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
import math
import time

import numpy as np

from endo_depth_ros import evaluation, models
from endo_depth_ros.bench import parse_size, print_table
from endo_depth_ros.bench.align import FlickeringModel
from endo_depth_ros.evaluation import EvalConfig, FrameRecord, RunResult
from endo_depth_ros.models.base import DepthModel
from endo_depth_ros.pipeline import Pipeline, PipelineConfig
from endo_depth_ros.scale import ScaleConfig, ScaleStats, StereoPair
from endo_depth_ros.synth import Scene, SynthConfig, SynthFrame
from endo_depth_ros.synth.stereo import kinematic_pose

#: The flight's kinematic stream latency (s) and noise (m).
LATENCY_S = 0.03
NOISE_M = 3e-4
BASELINE_MM = 4.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``endo-depth-bench scale``."""
    parser.add_argument('--frames', type=int, default=150, help='flight length (default 150)')
    parser.add_argument('--size', default='320x256', help='WIDTHxHEIGHT of the flight')
    parser.add_argument('--cost-size', default='640x512', help='WIDTHxHEIGHT of table 3')
    parser.add_argument('--seed', type=int, default=1, help='scene seed (default 1)')
    parser.add_argument('--skip-quality', action='store_true', help='table 3 only')


def run(args: argparse.Namespace) -> None:
    """Print the three tables."""
    width, height = parse_size(args.size, min_side=32)
    if not args.skip_quality:
        config = SynthConfig(width=width, height=height, frames=args.frames, seed=args.seed,
                             instrument=True, stereo_baseline_mm=BASELINE_MM,
                             kinematics_noise_m=NOISE_M, kinematics_latency_s=LATENCY_S)
        start = time.perf_counter()
        scene = Scene(config)
        flight = [scene.frame(i) for i in range(config.frames)]
        print(f'rendered {len(flight)} stereo frames {width}x{height} in '
              f'{time.perf_counter() - start:.0f} s')
        print_table(f'Metric depth and trajectory by scale source ({len(flight)} frames, '
                    f'{width}x{height}, baseline {BASELINE_MM} mm, kinematics '
                    f'{NOISE_M * 1e3} mm noise, {LATENCY_S * 1e3:.0f} ms latency)',
                    quality_rows(flight))
        print_table('Robustness (scale error = |median(output / truth) - 1| per frame)',
                    robustness_rows(flight, scene))
    cost_w, cost_h = parse_size(args.cost_size, min_side=32)
    print_table(f'Cost at {cost_w}x{cost_h} (photometric model, means over frames)',
                cost_rows(cost_w, cost_h, args.seed))


@dataclass
class Scenario:
    """One run: a scale configuration and how the flight is fed to the pipeline."""

    label: str
    scale: ScaleConfig
    drop_right_every: int = 0
    occlude_half: bool = False
    kinematics_noise_m: float = NOISE_M


def _sources() -> list[Scenario]:
    kin = ScaleConfig(source='kinematics', kinematics_time_offset_s=LATENCY_S)
    return [
        Scenario('fixed (0.05 m)', ScaleConfig()),
        Scenario('stereo', ScaleConfig(source='stereo')),
        Scenario('stereo, no shift', ScaleConfig(source='stereo', fit_shift='never')),
        Scenario('kinematics', kin),
        Scenario('kinematics, no shift', replace(kin, fit_shift='never')),
        Scenario('kinematics, every frame', replace(kin, kinematics_every=1)),
        Scenario('kinematics + kinematic poses', replace(kin, kinematics_odometry='kinematics')),
    ]


def quality_rows(flight: list[SynthFrame]) -> list[dict[str, object]]:
    """Table 1: every model x scale source, scored metric and against median scaling."""
    rows: list[dict[str, object]] = []
    for model_name in ('photometric', 'flicker'):
        oracle_abs_rel = math.nan
        for scenario in _sources():
            result, errors = _run(flight, model_name, scenario)
            if scenario.scale.source == 'none':
                median = _score(result.records, 'median')
                oracle_abs_rel = _value(median.summary.get('abs_rel'))
                # Its ATE column is the Sim(3) one: the trajectory under its best scale.
                median.summary['ate_se3'] = median.summary.get('ate')
                rows.append(_row(model_name, 'per-frame median (oracle)', median, [],
                                 oracle_abs_rel))
            rows.append(_row(model_name, scenario.label, result.scored, errors,
                             oracle_abs_rel))
    return rows


def robustness_rows(flight: list[SynthFrame], scene: Scene) -> list[dict[str, object]]:
    """Table 2: scale error under occlusion, missing frames, noise and latency."""
    stereo = ScaleConfig(source='stereo')
    kin = ScaleConfig(source='kinematics', kinematics_time_offset_s=LATENCY_S)
    scenarios = [
        Scenario('stereo, instrument over half the view', stereo, occlude_half=True),
        Scenario('stereo, right frame missing every 3rd', stereo, drop_right_every=3),
        Scenario('stereo, no shift, instrument over half the view',
                 replace(stereo, fit_shift='never'), occlude_half=True),
        Scenario('kinematics, 0.3 mm, 30 ms latency compensated', kin),
        Scenario('kinematics, 0.3 mm, 30 ms latency ignored',
                 replace(kin, kinematics_time_offset_s=0)),
        Scenario('kinematics, 1 mm noise', kin, kinematics_noise_m=1e-3),
    ]
    rows: list[dict[str, object]] = []
    for model_name in ('photometric', 'flicker'):
        for scenario in scenarios:
            result, errors = _run(flight, model_name, scenario, scene)
            stats = result.stats
            rows.append({
                'model': model_name, 'scenario': scenario.label,
                'scale err median %': 100 * _median(errors),
                'scale err p95 %': 100 * _p95(errors),
                'scale err max %': 100 * max(errors, default=math.nan),
                'AbsRel': _value(result.scored.summary.get('abs_rel')),
                'fallbacks': stats.fallbacks, 'fits': stats.fits,
            })
    return rows


@dataclass
class _Outcome:
    records: list[FrameRecord]
    scored: RunResult
    stats: ScaleStats


def _model(name: str) -> DepthModel:
    return FlickeringModel(seed=5) if name == 'flicker' else models.load(name)


def _run(flight: list[SynthFrame], model_name: str, scenario: Scenario,
         scene: Scene | None = None) -> tuple[_Outcome, list[float]]:
    model = _model(model_name)
    pipeline = Pipeline(PipelineConfig(scale=scenario.scale), model=model)
    kin_scene = None
    if scene is not None and scenario.kinematics_noise_m != NOISE_M:
        kin_scene = Scene(scene.config.with_(kinematics_noise_m=scenario.kinematics_noise_m))
    records: list[FrameRecord] = []
    errors: list[float] = []
    for frame in flight:
        rgb, right, depth_gt = frame.rgb, frame.right.rgb if frame.right else None, frame.depth
        if scenario.occlude_half:
            rgb, right, depth_gt = _occlude(rgb, right, depth_gt)
        if isinstance(model, FlickeringModel):
            # Over the shaft, the stand-in network sees a flat far wall (wrong).
            model.set_next(np.where(np.isnan(depth_gt) & np.isfinite(frame.depth), 0.05,
                                    frame.depth) if scenario.occlude_half else frame.depth)
        kinematic = (frame.kinematic_pose if kin_scene is None
                     else kinematic_pose(kin_scene, frame.index))
        if kinematic is not None:
            pipeline.add_kinematics(frame.stamp_ns, kinematic)
        stereo = None
        if right is not None and not (scenario.drop_right_every
                                      and frame.index % scenario.drop_right_every == 1):
            stereo = StereoPair(right, frame.baseline_m)
        (out,) = pipeline.process(rgb, frame.intrinsics, frame.stamp_ns, stereo=stereo)
        records.append(FrameRecord(
            index=frame.index, stamp_ns=frame.stamp_ns, depth=out.depth, gt_depth=depth_gt,
            gt_pose=frame.pose, est_pose=out.pose.pose if out.pose and out.pose.valid else None,
            timings_ms=dict(out.timings_ms)))
        if pipeline.scale.stats.measured or scenario.scale.source == 'none':
            tissue = np.isfinite(depth_gt) & (frame.seg == 0) & np.isfinite(out.depth)
            if tissue.any():
                errors.append(abs(float(np.median(out.depth[tissue] / depth_gt[tissue])) - 1))
    return _Outcome(records, _score(records, 'none'), pipeline.scale.stats), errors


def _occlude(rgb: np.ndarray, right: np.ndarray | None, depth: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """A dark textureless shaft over the left half of both views (not scored)."""
    half = rgb.shape[1] // 2
    rgb = rgb.copy()
    rgb[:, :half] = (22, 22, 25)
    if right is not None:
        right = right.copy()
        right[:, :half] = (22, 22, 25)
    return rgb, right, _occluded_truth(depth)


def _occluded_truth(depth: np.ndarray) -> np.ndarray:
    out = depth.copy()
    out[:, :depth.shape[1] // 2] = np.nan
    return out


def _score(records: list[FrameRecord], protocol: str) -> RunResult:
    result = RunResult(bag='bench', model='', align='stream', protocol=protocol,
                       output_kind='relative_disparity')
    camera = None
    return evaluation.score_records(result, records, camera,
                                    EvalConfig(protocol=protocol, contact_frames=0))


def _row(model: str, label: str, result: RunResult, errors: list[float],
         oracle_abs_rel: float) -> dict[str, object]:
    s = result.summary
    ate, path = _value(s.get('ate_se3')), _value(s.get('path_length'))
    abs_rel = _value(s.get('abs_rel'))
    return {
        'model': model, 'scale': label, 'AbsRel': abs_rel,
        'AbsRel / median': abs_rel / oracle_abs_rel,
        'RMSE mm': 1e3 * _value(s.get('rmse')), 'δ1': _value(s.get('a1')),
        'acc@2cm': _value(s.get('acc_2cm')),
        'ATE mm': 1e3 * ate, 'ATE / path %': 100 * ate / path if path else math.nan,
        'scale err median %': 100 * _median(errors) if errors else math.nan,
        'scale err p95 %': 100 * _p95(errors) if errors else math.nan,
        'scale err max %': 100 * max(errors, default=math.nan),
    }


def cost_rows(width: int, height: int, seed: int, frames: int = 16,
              timed: int = 8) -> list[dict[str, object]]:
    """Table 3: pipeline stages at ``width`` x ``height`` with each scale source.

    The last ``timed`` frames of each pass are timed (kinematics measures only once its
    track covers half of ``kinematics_smoothing_s``).
    """
    config = SynthConfig(width=width, height=height, frames=frames, seed=seed,
                         stereo_baseline_mm=BASELINE_MM, kinematics_noise_m=NOISE_M,
                         kinematics_latency_s=LATENCY_S)
    scene = Scene(config)
    flight = [scene.frame(i) for i in range(frames)]
    rows = []
    kin = ScaleConfig(source='kinematics', kinematics_time_offset_s=LATENCY_S)
    for label, scale in (('fixed', ScaleConfig()), ('stereo', ScaleConfig(source='stereo')),
                         (f'kinematics (every {kin.kinematics_every})', kin),
                         ('kinematics (every frame)', replace(kin, kinematics_every=1))):
        pipeline = Pipeline(PipelineConfig(scale=scale), model=models.load('photometric'))
        timings: dict[str, list[float]] = {}
        for _ in range(3):
            pipeline.reset()  # the same frames again: a new stream, the same model
            for frame in flight:
                assert frame.right is not None and frame.kinematic_pose is not None
                pipeline.add_kinematics(frame.stamp_ns, frame.kinematic_pose)
                start = time.perf_counter()
                (out,) = pipeline.process(frame.rgb, frame.intrinsics, frame.stamp_ns,
                                          stereo=StereoPair(frame.right.rgb, frame.baseline_m))
                total = (time.perf_counter() - start) * 1e3
                if frame.index < frames - timed:
                    continue
                for key, ms in {**out.timings_ms, 'total': total}.items():
                    timings.setdefault(key, []).append(ms)
        mean = {key: float(np.mean(v)) for key, v in timings.items()}
        scale_ms = mean.get('scale', 0.0)
        rows.append({'scale source': label, 'model ms': mean['model'],
                     'odometry ms': mean.get('odometry', 0.0),
                     'alignment ms': mean.get('alignment', 0.0), 'scale ms': scale_ms,
                     'pipeline ms': mean['total'], 'scale / model': scale_ms / mean['model'],
                     'scale / pipeline': scale_ms / mean['total'],
                     'measured': pipeline.scale.stats.measured or label == 'fixed'})
    return rows


def _value(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else math.nan
