"""``endo-depth-bench consistency``: does temporal alignment help or harm, against the truth?

Renders synthetic flights (the default flight, flights with the camera nuisances of real
endoscopes and a slow flight with small rotations), writes them as bags and runs the
evaluator (the node's ``Pipeline``, odometry included) for every sequence x model x
alignment mode. Models: ``photometric`` (the default prior), ``gt`` (a metric model: the
truth, scale-only alignment), ``stable`` (true disparity with 5 % noise under one fixed
affine map: a temporally stable relative model such as a video model) and ``flicker``
(the same under a random scale and shift per frame: a per-frame network).

Printed per run: TAE (self-consistency) beside the truth-referenced metrics (depth-ratio
error over gaps 1/5/10/20, scale drift max/end, AbsRel under one sequence alignment) and
RPE rotation beside the identity baseline; then per (sequence, model) the ratio of each
mode's mean ratio error to ``none``'s (< 1: alignment helps).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
import tempfile

import numpy as np

from endo_depth_ros import bags, evaluation, models
from endo_depth_ros.bench import parse_sizes, print_table
from endo_depth_ros.bench.align import FlickeringModel
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.models.base import DepthModel
from endo_depth_ros.pipeline import PipelineConfig
from endo_depth_ros.synth import CameraEffects, SynthConfig, render_sequence
from endo_depth_ros.temporal import AlignmentConfig

#: Sequences: name -> the config changes from ``SynthConfig()`` (size and frames aside).
SEQUENCES: dict[str, dict[str, object]] = {
    'flight-s0': {'seed': 0},
    'nuisance-s1': {'seed': 1, 'camera': CameraEffects.endoscope()},
    'nuisance-s2': {'seed': 2, 'camera': CameraEffects.endoscope()},
    'nuisance-s5': {'seed': 5, 'camera': CameraEffects.endoscope(), 'instrument': True},
    'slow-s3': {'seed': 3, 'speed_mm': 0.3, 'roll_deg': 10.0, 'tilt_deg': 3.0,
                'camera': CameraEffects.endoscope()},
    'nuisance-s7': {'seed': 7, 'camera': CameraEffects.endoscope()},
    'slow-s8': {'seed': 8, 'speed_mm': 0.3, 'roll_deg': 10.0, 'tilt_deg': 3.0,
                'camera': CameraEffects.endoscope()},
}
MODELS = ('photometric', 'gt', 'stable', 'flicker')
GAPS = (1, 5, 10, 20)
#: Ablation of the alignment's parameter prior and references: name -> the
#: ``AlignmentConfig`` changes from the defaults (``--variants``; ``none`` runs once).
VARIANTS: dict[str, dict[str, object]] = {
    'default': {},
    'follow-every-fit': {'flicker_threshold': 0.0},
    'gain-0.3': {'stable_gain': 0.3, 'unposed_gain': 0.05},  # the prior until 2026-11
    'gain-1': {'stable_gain': 1.0, 'unposed_gain': 1.0},
    'no-keyframes': {'keyframes': 0},
    'no-reproject': {'reproject': 'never'},
    'no-fusion': {'blend': 0.0},
    'adopt-steps': {'step_sigmas': 6.0},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the consistency benchmark."""
    parser.add_argument('--size', default='320x256', help='WIDTHxHEIGHT (default %(default)s)')
    parser.add_argument('--frames', type=int, default=300,
                        help='frames per sequence (default %(default)s)')
    parser.add_argument('--sequences', default=','.join(SEQUENCES),
                        help='comma-separated names (default: all): ' + ', '.join(SEQUENCES))
    parser.add_argument('--models', default=','.join(MODELS),
                        help='comma-separated models (default: %(default)s)')
    parser.add_argument('--modes', default='none,stream,window',
                        help='comma-separated alignment modes (default: %(default)s)')
    parser.add_argument('--variants', default='default',
                        help='comma-separated alignment variants, an ablation of the '
                             'parameter prior (default: %(default)s): ' + ', '.join(VARIANTS))


def run(args: argparse.Namespace) -> None:
    """Render, evaluate and print the tables."""
    ((width, height),) = parse_sizes(args.size, min_side=16)
    if args.frames < 25:
        raise ConfigError(f'--frames must be at least 25 (gap 20 needs pairs), got '
                          f'{args.frames}.')
    names = _names(args.sequences, tuple(SEQUENCES), 'sequence')
    model_names = _names(args.models, MODELS, 'model')
    modes = _names(args.modes, evaluation.ALIGN_MODES, 'mode')
    variants = _names(args.variants, tuple(VARIANTS), 'variant')
    rows, summary = [], []
    runs: list[list[evaluation.RunResult]] = []
    with tempfile.TemporaryDirectory(prefix='endo-consistency-') as tmp:
        for name in names:
            config = replace(SynthConfig(width=width, height=height, frames=args.frames),
                             **SEQUENCES[name])  # type: ignore[arg-type]
            path = Path(tmp) / name
            bags.write_sequence(path, render_sequence(config))
            for model in model_names:
                results = sequence_results(path, model, modes, variants)
                rows += [_row(name, r) for r in results]
                summary.append(_summary_row(name, results))
                runs.append(results)
    print_table(f'Temporal consistency against the truth ({width}x{height}, {args.frames} '
                'frames; ratio errors are median |log ratio|, drift as ratios)', rows)
    print_table('Mean ratio error (gaps 1-20) and worst scale drift, relative to none '
                '(< 1: alignment helps)', summary)
    print_table('Over all sequences, per model and mode: range of the ratio error / none, '
                'worst drift excess, sequences with no harm (see no_harm)', verdict_rows(runs))


def sequence_results(path: Path, model_name: str, modes: tuple[str, ...],
                     variants: tuple[str, ...] = ('default',),
                     ) -> list[evaluation.RunResult]:
    """Evaluate one bag with one model in every mode and variant (a fresh model per run).

    ``none`` runs once (no variant changes a passthrough); the other modes are labelled
    ``mode [variant]`` unless the variant is ``default``.
    """
    topics = bags.detect_topics(path)
    out = []
    for variant in variants:
        alignment = replace(AlignmentConfig(), **VARIANTS[variant])  # type: ignore[arg-type]
        config = evaluation.EvalConfig(align_modes=modes, max_depth=0.3, contact_frames=0,
                                       pipeline=PipelineConfig(alignment=alignment))
        for mode in modes:
            if mode == 'none' and variant != variants[0]:
                continue
            model = make_model(model_name)
            spec = evaluation.ModelSpec(evaluation.ORACLE if model_name == 'gt' else model_name)
            result = evaluation.evaluate_run(path, topics, spec, model, mode, config)
            result.model = model_name
            if mode != 'none' and variant != 'default':
                result.align = f'{mode} [{variant}]'
            out.append(result)
    return out


def make_model(name: str) -> DepthModel:
    """A bench model by name (see the module docstring)."""
    if name == 'gt':
        return evaluation.GroundTruthModel()
    if name in ('stable', 'flicker'):
        return FlickeringModel(seed=4, flicker=name == 'flicker')
    return models.load(name)


def mean_ratio_error(result: evaluation.RunResult) -> float:
    """Mean over the gaps of the median depth-ratio error (NaN when missing)."""
    values = [result.summary.get(f'ratio_error_gap{k}') for k in GAPS]
    finite = [float(v) for v in values if v is not None]
    return float(np.mean(finite)) if finite else float('nan')


def _row(name: str, r: evaluation.RunResult) -> dict[str, object]:
    s = r.summary
    row: dict[str, object] = {'sequence': name, 'model': r.model, 'mode': r.align,
                              'TAE': _num(s.get('tae'))}
    for k in GAPS:
        row[f'ratio gap {k}'] = _num(s.get(f'ratio_error_gap{k}'))
    row.update({'drift max': _num(s.get('scale_drift_max')),
                'drift end': _num(s.get('scale_drift_end')),
                'AbsRel seq': _num(s.get('abs_rel_seq')),
                'ATE mm': 1e3 * _num(s.get('ate')),
                'RPE rot': _num(s.get('rpe_rot')),
                'RPE rot identity': _num(s.get('rpe_rot_identity'))})
    return row


def _summary_row(name: str, results: list[evaluation.RunResult]) -> dict[str, object]:
    base = next((r for r in results if r.align == 'none'), results[0])
    row: dict[str, object] = {'sequence': name, 'model': results[0].model}
    for r in results:
        if r is base:
            continue
        ratio, drift = relative_to_none(r, base)
        row[f'ratio err {r.align}/none'] = ratio
        row[f'drift-1 {r.align}/none'] = drift
    return row


def verdict_rows(runs: list[list[evaluation.RunResult]]) -> list[dict[str, object]]:
    """One row per (model, mode): ratio-error ratios to none over every sequence, the
    worst drift excess over none's, and on how many sequences ``no_harm`` holds."""
    grouped: dict[tuple[str, str], list[tuple[evaluation.RunResult, evaluation.RunResult]]] = {}
    for results in runs:
        base = next((r for r in results if r.align == 'none'), None)
        if base is None:
            continue
        for r in results:
            if r is not base:
                grouped.setdefault((r.model, r.align), []).append((r, base))
    rows: list[dict[str, object]] = []
    for (model, align), pairs in grouped.items():
        ratios = [relative_to_none(r, b)[0] for r, b in pairs]
        excess = [_num(r.summary.get('scale_drift_max')) - _num(b.summary.get('scale_drift_max'))
                  for r, b in pairs]
        rows.append({'model': model, 'mode': align,
                     'ratio err/none min': min(ratios), 'ratio err/none max': max(ratios),
                     'drift max - none worst': max(excess),
                     'no harm': f'{sum(no_harm(r, b) for r, b in pairs)}/{len(pairs)}'})
    return rows


def relative_to_none(run: evaluation.RunResult, none: evaluation.RunResult,
                     ) -> tuple[float, float]:
    """(mean ratio error / none's, (drift max - 1) / (none's drift max - 1))."""
    drift, none_drift = (_num(r.summary.get('scale_drift_max')) for r in (run, none))
    # Drift as excess over 1 (a ratio of 1 is no drift at all).
    return (mean_ratio_error(run) / mean_ratio_error(none),
            (drift - 1) / max(none_drift - 1, 1e-9))


def no_harm(run: evaluation.RunResult, none: evaluation.RunResult) -> bool:
    """Whether ``run`` is no worse than ``none`` against the truth, within noise.

    Noise: 5 % of none's value, or 0.002 of |log ratio| (0.2 %, below what sparse SfM
    or stereo ground truth resolves) for the ratio error and 0.02 for the scale drift.
    """
    ratio, none_ratio = mean_ratio_error(run), mean_ratio_error(none)
    drift, none_drift = (_num(r.summary.get('scale_drift_max')) - 1 for r in (run, none))
    return (ratio <= max(1.05 * none_ratio, none_ratio + 0.002)
            and drift <= max(1.05 * none_drift, none_drift + 0.02))


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else float('nan')


def _names(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(',') if n.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ConfigError(f'Unknown {what}(s) {unknown or text!r}; choose from '
                          f'{", ".join(allowed)}.')
    return names
