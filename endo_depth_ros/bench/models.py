"""``endo-depth-bench models``: ms/frame of each depth backend, and the photometric accuracy.

Table 1 times ``DepthModel.infer`` per image size (WIDTHxHEIGHT; the network input
is the image size itself, ``input_size = min(H, W)``): the photometric prior,
Depth Anything V2-S in PyTorch fp32, and the same network exported to ONNX and run
by onnxruntime (CPU provider here). DAv2-S has random weights (none can be
downloaded): timing does not depend on them. The onnxruntime row also reports its
largest deviation from torch.

Table 2 scores the photometric prior on synthetic sequences (``endo_depth_ros.synth``):
Spearman rank correlation of the predicted and true depth, AbsRel and δ<1.25 after
per-frame median scaling, and the AbsRel of a constant prediction (the median true
depth) as the baseline it must beat.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
import tempfile

import numpy as np

from endo_depth_ros import models
from endo_depth_ros.bench import (
    add_sizes_argument,
    median_ms,
    parse_sizes,
    print_table,
    random_weights_model,
)
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.models.base import DepthModel

#: Image sizes (WIDTHxHEIGHT) of the timing table, and of the ``--backends`` comparison.
DEFAULT_SIZES = '350x266,518x518'
BACKEND_SIZES = '518x518,686x518'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the models benchmark."""
    add_sizes_argument(parser, DEFAULT_SIZES)
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed repeats per network measurement (default: %(default)s)')
    parser.add_argument('--skip-networks', action='store_true',
                        help='time the photometric prior only (no torch/onnxruntime DAv2-S)')
    parser.add_argument('--backends', metavar='LIST',
                        help='compare these variants of --model instead (comma-separated: '
                             'torch,torch-bf16,torch-compile,torch-compile-bf16,onnxruntime,'
                             'ort-int8,openvino,openvino-bf16,openvino-int8,auto); sizes '
                             'default to 518x518,686x518')
    parser.add_argument('--model', default='dav2-s',
                        help='network of the --backends comparison (default: %(default)s)')
    parser.add_argument('--frames', type=int, default=3,
                        help='synthetic frames scored per size in --backends (default 3)')
    parser.add_argument('--accuracy-frames', type=int, default=24,
                        help='frames per synthetic sequence for the accuracy table '
                             '(0 skips it; default: %(default)s)')


def run(args: argparse.Namespace) -> None:
    """Print the timing table and the photometric accuracy table (or the backend table)."""
    if args.repeats < 1:
        raise ConfigError(f'--repeats must be >= 1, got {args.repeats}.')
    if args.backends:
        run_backends(args, 'cpu')
        return
    sizes = parse_sizes(args.sizes, min_side=14)
    rows: list[dict[str, object]] = []
    photometric = models.load('photometric')
    rng = np.random.default_rng(0)
    for width, height in sizes:
        rgb = rng.integers(0, 256, (height, width, 3), np.uint8)
        ms = median_ms(partial(photometric.infer, rgb), repeats=max(30, args.repeats))
        rows.append(_row(photometric, height, width, ms))
        if not args.skip_networks:
            rows.extend(_network_rows(rgb, args.repeats))
    print_table('Depth models on this CPU (ms/frame, median)', rows)
    if args.accuracy_frames > 0:
        print_table('Photometric prior on synthetic sequences (per-frame median scaling)',
                    photometric_accuracy(frames=args.accuracy_frames))


def run_backends(args: argparse.Namespace, device: str) -> None:
    """The backend comparison table of ``endo_depth_ros.bench.backends`` for ``--model``."""
    from endo_depth_ros.bench import backends

    known = backends.GPU_VARIANTS if device == 'cuda' else backends.CPU_VARIANTS
    variants = [v.strip() for v in args.backends.split(',') if v.strip()]
    unknown = [v for v in variants if v not in known]
    if unknown:
        raise ConfigError(f'Unknown variant(s) {", ".join(unknown)}; known: {", ".join(known)}.')
    if args.model not in models.MODEL_NAMES or args.model == 'photometric':
        raise ConfigError(f'--model must be a network name, got {args.model!r}.')
    if args.frames < 1:
        raise ConfigError(f'--frames must be >= 1, got {args.frames}.')
    sizes_text = BACKEND_SIZES if args.sizes == DEFAULT_SIZES else args.sizes
    sizes = parse_sizes(sizes_text, min_side=14)
    build = backends.build_gpu_variant if device == 'cuda' else backends.build_cpu_variant
    peaks = {p: backends.matmul_throughput(p, device=device)
             for p in (('fp32', 'fp16') if device == 'cuda' else ('fp32', 'bf16'))}
    title = (f'{args.model} (random weights) per backend, uint8 in -> depth out, median of '
             f'{args.repeats} interleaved rounds; {backends.describe_machine(peaks, device)}')
    backends.compare(args.model, sizes, variants, device=device, repeats=args.repeats,
                     frames=args.frames, build=build, peaks=peaks,
                     report=lambda rows: print_table(title, rows))
    print('\nVariants: ' + '; '.join(f'{v}: {known[v]}' for v in variants if v in known))


def _row(model: DepthModel, height: int, width: int, ms: float,
         **extra: object) -> dict[str, object]:
    net_h, net_w = model.network_size(height, width)
    row: dict[str, object] = {
        'model': model.name, 'backend': model.backend, 'precision': model.precision,
        'image (WxH)': f'{width}x{height}', 'network input (WxH)': f'{net_w}x{net_h}',
        'ms/frame': ms, 'frames/s': 1000.0 / ms, 'vs torch': '', 'max rel. diff': '',
    }
    row.update(extra)
    return row


def _network_rows(rgb: np.ndarray, repeats: int) -> list[dict[str, object]]:
    """DAv2-S (random weights) in torch and onnxruntime at this image's size."""
    from endo_depth_ros.models.onnx_runtime import OnnxDepthModel, export_onnx

    height, width = rgb.shape[:2]
    torch_model = random_weights_model('dav2-s', min(height, width))
    torch_ms = median_ms(lambda: torch_model.infer(rgb), repeats=repeats, warmup=1)
    reference = torch_model.infer(rgb)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(torch_model, Path(tmp) / 'dav2s.onnx', height, width)
        ort_model = OnnxDepthModel(path, name='dav2-s', device='cpu')
    ort_ms = median_ms(lambda: ort_model.infer(rgb), repeats=repeats, warmup=1)
    deviation = float(np.abs(ort_model.infer(rgb) - reference).max()
                      / max(float(np.abs(reference).max()), 1e-12))
    return [
        _row(torch_model, height, width, torch_ms, **{'vs torch': 1.0}),
        _row(ort_model, height, width, ort_ms,
             **{'vs torch': ort_ms / torch_ms, 'max rel. diff': f'{deviation:.1e}'}),
    ]


def photometric_accuracy(
    frames: int = 24,
    seeds: Iterable[int] = (0, 1, 2),
    *,
    size: tuple[int, int] = (128, 160),
    stride: int = 4,
    model: DepthModel | None = None,
) -> list[dict[str, object]]:
    """Score a relative-disparity model on synthetic sequences against a constant baseline.

    Two scenes per seed: plain tissue, and tissue with an instrument seen through a
    circular field-of-view mask. Every ``stride``-th frame is scored.

    Args:
        frames: rendered frames per sequence.
        seeds: scene seeds.
        size: (height, width) of the rendered images.
        stride: score every ``stride``-th frame.
        model: model to score (default: the photometric prior).

    Returns:
        One row per sequence and a final ``mean`` row: ``spearman`` (rank correlation of
        1/disparity and true depth), ``abs_rel`` and ``a1`` after per-frame median
        scaling, ``abs_rel constant`` (constant prediction at the median true depth).
    """
    from scipy.stats import spearmanr

    from endo_depth_ros.metrics import align_depth, depth_errors
    from endo_depth_ros.synth import SynthConfig, render_sequence

    model = model if model is not None else models.load('photometric')
    rows: list[dict[str, object]] = []
    for seed in seeds:
        for scene, extra in (('tissue', {}), ('instrument+fov', {'instrument': True,
                                                                   'fov_mask': True})):
            config = SynthConfig(width=size[1], height=size[0], frames=frames, seed=seed,
                                 speed_mm=2.0, **extra)  # type: ignore[arg-type]
            scores: list[Sequence[float]] = []
            for frame in list(render_sequence(config))[::stride]:
                disparity = model.infer(frame.rgb)
                depth = align_depth(disparity, frame.depth, 'median', kind='disparity')
                errors = depth_errors(frame.depth, depth)
                valid = np.isfinite(frame.depth) & np.isfinite(depth)
                constant = np.where(valid, np.median(frame.depth[valid]), np.nan)
                baseline = depth_errors(frame.depth, constant)
                if errors is None or baseline is None:
                    continue
                rho = spearmanr(depth[valid], frame.depth[valid]).statistic
                scores.append((float(rho), errors['abs_rel'], errors['a1'],
                               baseline['abs_rel']))
            mean = np.mean(np.asarray(scores), axis=0)
            rows.append({'sequence': f'seed {seed} {scene}', 'frames': len(scores),
                         'spearman': mean[0], 'abs_rel': mean[1], 'a1': mean[2],
                         'abs_rel constant': mean[3]})
    keys = ('spearman', 'abs_rel', 'a1', 'abs_rel constant')
    overall = {k: float(np.mean([float(r[k]) for r in rows])) for k in keys}  # type: ignore[arg-type]
    rows.append({'sequence': 'mean', 'frames': sum(int(r['frames']) for r in rows),  # type: ignore[call-overload]
                 **overall})
    return rows
