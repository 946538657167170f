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
from endo_depth_ros.synth import CameraEffects, SynthConfig, render_sequence

#: Sequences: name -> the config changes from ``SynthConfig()`` (size and frames aside).
SEQUENCES: dict[str, dict[str, object]] = {
    'flight-s0': {'seed': 0},
    'nuisance-s1': {'seed': 1, 'camera': CameraEffects.endoscope()},
    'nuisance-s2': {'seed': 2, 'camera': CameraEffects.endoscope()},
    'nuisance-s5': {'seed': 5, 'camera': CameraEffects.endoscope(), 'instrument': True},
    'slow-s3': {'seed': 3, 'speed_mm': 0.3, 'roll_deg': 10.0, 'tilt_deg': 3.0,
                'camera': CameraEffects.endoscope()},
}
MODELS = ('photometric', 'gt', 'stable', 'flicker')
GAPS = (1, 5, 10, 20)


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


def run(args: argparse.Namespace) -> None:
    """Render, evaluate and print the tables."""
    ((width, height),) = parse_sizes(args.size, min_side=16)
    if args.frames < 25:
        raise ConfigError(f'--frames must be at least 25 (gap 20 needs pairs), got '
                          f'{args.frames}.')
    names = _names(args.sequences, tuple(SEQUENCES), 'sequence')
    model_names = _names(args.models, MODELS, 'model')
    modes = _names(args.modes, evaluation.ALIGN_MODES, 'mode')
    rows, summary = [], []
    with tempfile.TemporaryDirectory(prefix='endo-consistency-') as tmp:
        for name in names:
            config = replace(SynthConfig(width=width, height=height, frames=args.frames),
                             **SEQUENCES[name])  # type: ignore[arg-type]
            path = Path(tmp) / name
            bags.write_sequence(path, render_sequence(config))
            for results in (sequence_results(path, model, modes) for model in model_names):
                rows += [_row(name, r) for r in results]
                summary.append(_summary_row(name, results))
    print_table(f'Temporal consistency against the truth ({width}x{height}, {args.frames} '
                'frames; ratio errors are median |log ratio|, drift as ratios)', rows)
    print_table('Mean ratio error (gaps 1-20) and worst scale drift, relative to none '
                '(< 1: alignment helps)', summary)


def sequence_results(path: Path, model_name: str, modes: tuple[str, ...],
                     ) -> list[evaluation.RunResult]:
    """Evaluate one bag with one model in every mode (a fresh model per run)."""
    topics = bags.detect_topics(path)
    config = evaluation.EvalConfig(align_modes=modes, max_depth=0.3, contact_frames=0)
    out = []
    for mode in modes:
        model = make_model(model_name)
        spec = evaluation.ModelSpec(evaluation.ORACLE if model_name == 'gt' else model_name)
        result = evaluation.evaluate_run(path, topics, spec, model, mode, config)
        result.model = model_name
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
    none_ratio = mean_ratio_error(base)
    none_drift = _num(base.summary.get('scale_drift_max'))
    for r in results:
        if r is base:
            continue
        row[f'ratio err {r.align}/none'] = mean_ratio_error(r) / none_ratio
        drift = _num(r.summary.get('scale_drift_max'))
        # Drift as excess over 1 (a ratio of 1 is no drift at all).
        row[f'drift-1 {r.align}/none'] = (drift - 1) / max(none_drift - 1, 1e-9)
    return row


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else float('nan')


def _names(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(',') if n.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ConfigError(f'Unknown {what}(s) {unknown or text!r}; choose from '
                          f'{", ".join(allowed)}.')
    return names
