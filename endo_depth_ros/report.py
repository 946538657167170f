"""Evaluation outputs: ``results.json``, a Markdown report and PNG figures.

``write_report(results, out)`` writes, for the runs of ``endo_depth_ros.evaluation``
(offline or live):

- ``results.json``: per run the summary metrics (SI units: metres, degrees, ms), the
  per-frame arrays, frame counts and timings;
- ``report.md``: a table like the papers' (one row per model / alignment mode; RMSE,
  SqRel, ATE and RPE in millimetres), the live statistics when present, and the figures;
- ``per_frame.png``: AbsRel, TAE and runtime over time;
- ``contact_<run>.png``: RGB | prediction | ground truth | error map for a few frames;
- ``trajectory_<bag>.png``: estimated (Sim(3)-aligned) vs ground-truth camera path,
  top (x-z) and side (z-y) views.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot state, no
display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import math
from pathlib import Path
import re

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from endo_depth_ros.evaluation import RunResult
from endo_depth_ros.outputs import OutputFolder
from endo_depth_ros.visualize import colorize_depth, turbo

#: Relative error shown as the hottest colour of the error map.
ERROR_MAP_MAX = 0.3
_DASH = '–'


def write_report(
    results: Sequence[RunResult],
    out: OutputFolder | str | Path,
    *,
    settings: dict[str, object] | None = None,
) -> Path:
    """Write ``results.json``, ``report.md`` and the figures into the folder ``out``.

    Args:
        results: the evaluated runs.
        out: output folder (created if needed). A plain path must be new or empty; an
            ``OutputFolder`` carries the command's ``--overwrite`` choice. Files are never
            written through symlinks (see ``endo_depth_ros.outputs``).
        settings: run settings recorded in ``results.json`` and the report header
            (protocol, depth range, command line, ...).

    Returns:
        The path of ``report.md``.
    """
    folder = out if isinstance(out, OutputFolder) else OutputFolder(out, overwrite=False)
    folder.create()
    settings = dict(settings or {})
    write_results_json(results, folder.file('results.json'), settings=settings)

    figures: list[tuple[str, str]] = []
    if results:
        plot_per_frame(results, folder.file('per_frame.png'))
        figures.append(('Per-frame AbsRel, TAE and runtime', 'per_frame.png'))
    bags = _unique([r.bag for r in results])
    for bag in bags:
        runs = [r for r in results if r.bag == bag and r.trajectory_est is not None]
        if runs:
            name = f'trajectory_{_slug(Path(bag).stem)}.png' if len(bags) > 1 \
                else 'trajectory.png'
            plot_trajectory(runs, folder.file(name))
            figures.append((f'Trajectory ({Path(bag).name})', name))
    for result in results:
        if result.samples:
            name = f'contact_{_run_slug(result, len(bags) > 1)}.png'
            plot_contact_sheet(result, folder.file(name))
            figures.append((f'Contact sheet: {result.label}', name))

    lines = ['# Depth evaluation', '']
    for bag in bags:
        lines.append(f'- bag: `{bag}`')
    for key, value in settings.items():
        lines.append(f'- {key}: `{value}`')
    lines += ['', markdown_table(results), '', _UNITS_NOTE, '']
    live = [r for r in results if r.mode == 'live']
    if live:
        lines += ['## Live replay', '', live_table(live), '']
    no_gt = [r for r in results if not r.has_gt_depth]
    if no_gt:
        lines += ['Runs without ground-truth depth report timing only: '
                  + ', '.join(r.label for r in no_gt) + '.', '']
    if figures:
        lines += ['## Figures', '']
        for title, name in figures:
            lines += [f'### {title}', '', f'![{title}]({name})', '']
    path = folder.file('report.md')
    path.write_text('\n'.join(lines))
    return path


_UNITS_NOTE = (
    'AbsRel, RMSE log and δ are unitless; SqRel, RMSE, ATE and RPE translation in mm '
    '(metres in results.json); RPE rotation in degrees per frame; TAE = temporal '
    'alignment error ×100 on depths aligned once per sequence; ATE after Sim(3) Umeyama '
    'alignment. Frames: scored / total (frames without a valid ground-truth pixel or '
    'without output are dropped from the means).')


def markdown_table(results: Sequence[RunResult]) -> str:
    """The papers' table, one row per run (Markdown)."""
    multi_bag = len(_unique([r.bag for r in results])) > 1
    header = ['Model', 'Align', 'AbsRel ↓', 'SqRel (mm) ↓', 'RMSE (mm) ↓', 'RMSE log ↓',
              'δ<1.25 ↑', 'δ<1.25² ↑', 'δ<1.25³ ↑', 'TAE ↓', 'ATE (mm) ↓',
              'RPE (mm / °) ↓', 'Frames', 'ms/frame']
    if multi_bag:
        header.insert(0, 'Bag')
    rows = []
    for r in results:
        s = r.summary
        rpe = _DASH
        if s.get('rpe_trans') is not None and s.get('rpe_rot') is not None:
            rpe = f'{_fmt(s["rpe_trans"], 3, 1e3)} / {_fmt(s["rpe_rot"], 3)}'
        row = [
            r.model + (' (live)' if r.mode == 'live' else ''), r.align,
            _fmt(s.get('abs_rel'), 3), _fmt(s.get('sq_rel'), 3, 1e3), _fmt(s.get('rmse'), 2, 1e3),
            _fmt(s.get('rmse_log'), 3), _fmt(s.get('a1'), 3), _fmt(s.get('a2'), 3),
            _fmt(s.get('a3'), 3), _fmt(s.get('tae'), 2), _fmt(s.get('ate'), 2, 1e3), rpe,
            f'{r.frames_scored} / {r.frames_total}', _fmt(s.get('ms_per_frame'), 1),
        ]
        if multi_bag:
            row.insert(0, Path(r.bag).name)
        rows.append(row)
    return _markdown(header, rows)


def results_tables(results: Sequence[RunResult]) -> str:
    """``markdown_table`` of all runs, then ``live_table`` of the live ones if any (Markdown)."""
    text = markdown_table(results)
    live = [r for r in results if r.mode == 'live']
    if live:
        text += '\n\n' + live_table(live)
    return text


def live_table(results: Sequence[RunResult]) -> str:
    """Latency, drop rate and output rate of live runs (Markdown)."""
    header = ['Model', 'Align', 'Latency p50 (ms)', 'Latency p95 (ms)', 'Drop rate',
              'Output rate (Hz)', 'Input rate (Hz)']
    rows = []
    for r in results:
        s = r.summary
        drop = s.get('drop_rate')
        rows.append([r.model, r.align, _fmt(s.get('latency_p50_ms'), 1),
                     _fmt(s.get('latency_p95_ms'), 1),
                     _DASH if drop is None else f'{100 * drop:.1f} %',
                     _fmt(s.get('output_rate_hz'), 1), _fmt(s.get('input_rate_hz'), 1)])
    return _markdown(header, rows)


def write_results_json(
    results: Sequence[RunResult], path: str | Path, *, settings: dict[str, object] | None = None
) -> None:
    """Write every run's summary and per-frame arrays as JSON (NaN written as null)."""
    runs = []
    for r in results:
        runs.append({
            'bag': r.bag, 'model': r.model, 'align': r.align, 'protocol': r.protocol,
            'mode': r.mode, 'output_kind': r.output_kind,
            'frames_total': r.frames_total, 'frames_scored': r.frames_scored,
            'frames_dropped': r.frames_dropped, 'fallbacks': r.fallbacks,
            'has_gt_depth': r.has_gt_depth, 'has_gt_pose': r.has_gt_pose,
            'metrics': r.summary, 'stage_ms': r.stage_ms, 'per_frame': r.per_frame,
            'trajectory': None if r.trajectory_est is None or r.trajectory_gt is None else {
                'est_aligned_m': r.trajectory_est.tolist(), 'gt_m': r.trajectory_gt.tolist()},
        })
    doc = {
        'units': {'depth': 'm', 'sq_rel': 'm', 'rmse': 'm', 'ate': 'm', 'rpe_trans': 'm',
                  'rpe_rot': 'deg', 'tae': 'AbsRel x100', 'runtime': 'ms'},
        'settings': settings or {},
        'runs': runs,
    }
    Path(path).write_text(json.dumps(_jsonable(doc), indent=1, allow_nan=False))


def plot_per_frame(results: Sequence[RunResult], path: str | Path) -> None:
    """AbsRel, TAE and runtime per frame for every run (one line each)."""
    fig = Figure(figsize=(10, 7.5), layout='constrained')
    FigureCanvasAgg(fig)
    panels = [('abs_rel', 'AbsRel'), ('tae', 'TAE (×100)'), ('runtime_ms', 'runtime (ms)')]
    axes = fig.subplots(len(panels), 1, sharex=True)
    for ax, (key, title) in zip(axes, panels, strict=True):
        drawn = False
        for r in results:
            values = r.per_frame.get(key)
            if values is None or all(v is None for v in values):
                continue
            x = np.asarray(r.per_frame['index'], dtype=float)
            y = np.array([np.nan if v is None else v for v in values], dtype=float)
            ax.plot(x, y, lw=1.0, marker='.' if len(x) < 40 else None, label=r.label)
            drawn = True
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize='small', loc='upper right')
        else:
            ax.text(0.5, 0.5, 'no data (no ground truth)', ha='center', va='center',
                    transform=ax.transAxes, color='gray')
    axes[-1].set_xlabel('frame index')
    fig.savefig(path, dpi=100)


def plot_contact_sheet(result: RunResult, path: str | Path) -> None:
    """Rows of RGB | prediction | ground truth | relative error for the run's samples."""
    samples = result.samples
    has_gt = any(s.gt_depth is not None for s in samples)
    titles = ['RGB', 'prediction'] + (['ground truth', f'|p-g|/g (0..{ERROR_MAP_MAX})']
                                      if has_gt else [])
    h, w = samples[0].rgb.shape[:2]
    cols = len(titles)
    fig = Figure(figsize=(2.6 * cols * w / max(h, 1), 2.6 * len(samples) + 0.4),
                 layout='constrained')
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(len(samples), cols, squeeze=False))
    for row, sample in enumerate(samples):
        ref = sample.gt_depth if sample.gt_depth is not None else sample.depth
        vmin, vmax = _depth_range(ref)
        images = [sample.rgb, colorize_depth(sample.depth, vmin, vmax)]
        if has_gt:
            if sample.gt_depth is None:
                images += [np.zeros_like(sample.rgb)] * 2
            else:
                images.append(colorize_depth(sample.gt_depth, vmin, vmax))
                images.append(_error_map(sample.depth, sample.gt_depth))
        for col, image in enumerate(images):
            ax = axes[row, col]
            ax.imshow(image, interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize='small')
        axes[row, 0].set_ylabel(f'frame {sample.index}', fontsize='small')
    fig.suptitle(f'{result.label} ({result.protocol} scoring; depth colours '
                 'turbo, near = red)', fontsize='small')
    fig.savefig(path, dpi=100)


def plot_trajectory(results: Sequence[RunResult], path: str | Path) -> None:
    """Ground-truth and Sim(3)-aligned estimated positions, top (x-z) and side (z-y) views."""
    gts = [r.trajectory_gt for r in results if r.trajectory_gt is not None]
    if not gts:
        return
    gt = gts[0]
    fig = Figure(figsize=(11, 5), layout='constrained')
    FigureCanvasAgg(fig)
    top, side = fig.subplots(1, 2)
    for ax, (i, j), title in ((top, (0, 2), 'top view (x-z)'), (side, (2, 1), 'side view (z-y)')):
        ax.plot(gt[:, i] * 1e3, gt[:, j] * 1e3, 'k-', lw=2, label='ground truth')
        for r in results:
            if r.trajectory_est is not None:
                est = r.trajectory_est
                ax.plot(est[:, i] * 1e3, est[:, j] * 1e3, lw=1, label=r.label)
        ax.set_xlabel('xyz'[i] + ' (mm)')
        ax.set_ylabel('xyz'[j] + ' (mm)')
        ax.set_title(title)
        ax.set_aspect('equal', adjustable='datalim')
        ax.grid(alpha=0.3)
    side.invert_yaxis()  # y points down in the optical frame
    top.legend(fontsize='small')
    fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------- helpers


def _error_map(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    with np.errstate(divide='ignore', invalid='ignore'):
        rel = np.abs(pred - gt) / gt
    rel[~(np.isfinite(rel) & (gt > 0))] = np.nan
    return turbo(rel / ERROR_MAP_MAX)


def _depth_range(depth: np.ndarray) -> tuple[float | None, float | None]:
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return None, None
    low, high = np.percentile(depth[valid], (2.0, 98.0))
    return float(low), float(high)


def _fmt(value: object, digits: int, factor: float = 1.0) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return _DASH
    return f'{value * factor:.{digits}f}'


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return '\n'.join(lines)


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _slug(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9._-]+', '-', text).strip('-') or 'run'


def _run_slug(result: RunResult, with_bag: bool) -> str:
    parts = [result.model, result.align] + (['live'] if result.mode == 'live' else [])
    if with_bag:
        parts.insert(0, Path(result.bag).stem)
    return _slug('_'.join(parts))


def _jsonable(value: object) -> object:
    """Numbers to plain floats/ints (NaN/inf -> None), arrays to lists, recursively."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
