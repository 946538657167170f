"""``endo-depth-bench align``: temporal alignment cost against the model, and its effect.

Table 1 times ``TemporalAligner.push`` per frame for each image size and mode: ``none``
(passthrough), ``stream`` without and with poses (references reprojected, output fused
with the pose-warped previous one: ``blend``, on by default), ``stream`` without the
fusion, and ``window`` (the cost of a window spread over its frames).
The inputs are synthetic relative disparities (a smooth scene with 5 % noise and a random
scale and shift per frame). The model column is Depth Anything V2-S (PyTorch, fp32,
random weights: none can be downloaded, timing does not depend on them) run in the same
process at the same size, and the last column is alignment / model time.

Table 2 shows what the alignment buys on the synthetic endoscope video
(``endo_depth_ros.synth``): the raw predictions are the true disparity with 5 % noise,
10 % outliers and a random scale and shift per frame; TAE (Video Depth Anything's
temporal alignment error, ×100, outliers not scored) of the passthrough versus each mode,
and the drift of the global scale (median aligned / true depth) from the first frame.

Table 3 runs the full ``Pipeline`` (model -> odometry -> alignment, poses from odometry
on the aligned depth) on a rendered flight with the photometric model and a flickering
model (true disparity, 5 % noise, random scale and shift per frame): TAE per mode.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import math
import time

import numpy as np

from endo_depth_ros import metrics
from endo_depth_ros.bench import median_ms, parse_sizes, print_table
from endo_depth_ros.camera import Intrinsics
from endo_depth_ros.errors import BadInputError, ConfigError, EndoDepthError
from endo_depth_ros.evaluation import GroundTruthModel
from endo_depth_ros.models.base import OutputKind
from endo_depth_ros.temporal import AlignmentConfig, TemporalAligner

#: Timed configurations: (label, config, use poses).
MODES: tuple[tuple[str, AlignmentConfig, bool], ...] = (
    ('none', AlignmentConfig(mode='none'), False),
    ('stream', AlignmentConfig(mode='stream'), False),
    ('stream + poses', AlignmentConfig(mode='stream'), True),
    ('stream, no fusion', AlignmentConfig(mode='stream', blend=0.0), False),
    ('stream + poses, no fusion', AlignmentConfig(mode='stream', blend=0.0), True),
    ('window (per frame)', AlignmentConfig(mode='window'), False),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the alignment benchmark."""
    parser.add_argument('--sizes', default='518x518,320x256',
                        help='comma-separated WIDTHxHEIGHT sizes (default: %(default)s)')
    parser.add_argument('--repeats', type=int, default=50,
                        help='timed pushes per stream measurement (default: %(default)s)')
    parser.add_argument('--model-repeats', type=int, default=3,
                        help='timed DAv2-S inferences per size (default: %(default)s)')
    parser.add_argument('--skip-model', action='store_true',
                        help='do not time DAv2-S (no ratio column)')
    parser.add_argument('--quality-frames', type=int, default=60,
                        help='frames of the synthetic video for table 2 (0 skips it; '
                             'default: %(default)s)')


def run(args: argparse.Namespace) -> None:
    """Print the cost table and the quality table."""
    if args.repeats < 1 or args.model_repeats < 1:
        raise ConfigError(
            f'--repeats and --model-repeats must be >= 1, got {args.repeats} and '
            f'{args.model_repeats}.')
    rows: list[dict[str, object]] = []
    notes: list[str] = []
    for width, height in parse_sizes(args.sizes, min_side=14):
        model_ms = math.nan
        if not args.skip_model:
            model_ms, note = _model_ms(height, width, args.model_repeats)
            if note:
                notes.append(note)
        raws, poses, camera = _inputs(height, width)
        for label, config, use_poses in MODES:
            ms = _push_ms(config, raws, poses if use_poses else None, camera, args.repeats)
            rows.append({'size': f'{width}x{height}', 'mode': label, 'align ms/frame': ms,
                         'DAv2-S ms': model_ms, 'align / model': ms / model_ms})
    print_table('Temporal alignment per frame on this CPU (median; model in the same run)',
                rows)
    for note in notes:
        print(note)
    if args.quality_frames > 0:
        print_table(f'Effect on the synthetic video ({args.quality_frames} frames, 96x80, '
                    '5 % noise, 10 % outliers, random scale/shift per frame)',
                    quality_rows(args.quality_frames))
        print_table(f'Full pipeline on the synthetic video ({args.quality_frames} frames, '
                    '160x128, poses from odometry): TAE x100',
                    pipeline_rows(args.quality_frames))


def pipeline_rows(frames: int, seed: int = 2) -> list[dict[str, object]]:
    """TAE of none / stream / window through the full pipeline, per model.

    Returns:
        One row per model (``photometric`` and ``flicker``) with the TAE of each mode
        (one sequence median scale, true poses) and stream / none.
    """
    from endo_depth_ros import models
    from endo_depth_ros.pipeline import Pipeline, PipelineConfig
    from endo_depth_ros.synth import SynthConfig, render_sequence

    video = list(render_sequence(SynthConfig(width=160, height=128, frames=frames,
                                             seed=seed)))
    truth = [f.depth for f in video]
    rows: list[dict[str, object]] = []
    for label in ('photometric', 'flicker'):
        row: dict[str, object] = {'model': label}
        for mode in ('none', 'stream', 'window'):
            model = models.load('photometric') if label == 'photometric' else None
            pipeline = Pipeline(PipelineConfig(alignment=AlignmentConfig(mode=mode)),
                                model=model or FlickeringModel(seed))
            out: dict[int, np.ndarray] = {}
            for frame in video:
                if isinstance(pipeline.model, FlickeringModel):
                    pipeline.model.set_next(frame.depth)
                for result in pipeline.process(frame.rgb, frame.intrinsics, frame.stamp_ns,
                                               compute_points=False):
                    out[result.index] = result.depth
            for result in pipeline.flush():
                out[result.index] = result.depth
            depth = [out[i] for i in range(len(video))]
            fit = metrics.fit_alignment(depth, truth, 'sequence-median')[0]
            tae = None if fit is None else metrics.temporal_alignment_error(
                [fit.apply(d) for d in depth], [f.pose for f in video], video[0].intrinsics)
            row[f'TAE {mode}'] = math.nan if tae is None else tae
        row['stream / none'] = float(row['TAE stream']) / float(row['TAE none'])  # type: ignore[arg-type]
        row['window / none'] = float(row['TAE window']) / float(row['TAE none'])  # type: ignore[arg-type]
        rows.append(row)
    return rows


class FlickeringModel(GroundTruthModel):
    """A per-frame network's failure mode, for benchmarks and tests: true disparity with
    5 % noise under a random scale and shift per frame (issue 5's robustness scenario).

    ``flicker=False`` keeps one scale and shift for the whole stream: a temporally stable
    relative model (the behaviour of a video depth model) with the same per-frame noise.
    The evaluator feeds it the ground truth like the ``gt`` oracle (``set_next``).
    """

    output_kind: OutputKind = 'relative_disparity'
    backend = 'bench'

    def __init__(self, seed: int, flicker: bool = True) -> None:
        super().__init__()
        self.name = 'flicker' if flicker else 'stable'
        self._rng = np.random.default_rng(seed)
        self._flicker = flicker
        # The stable variant's one affine map (drawn from its own stream).
        fixed = np.random.default_rng([seed, 1])
        self._fixed = (fixed.uniform(0.5, 2.0), fixed.uniform(-0.5, 1.0))
        self._fixed_shift: float | None = None  # set from the first frame

    def _infer_batch(self, batch: np.ndarray) -> np.ndarray:
        if self._next is None:
            raise BadInputError('The bench model needs the true depth of every frame.',
                                'no_ground_truth')
        self._size = batch.shape[1:3]
        truth = 1.0 / self._next.astype(np.float64)
        noisy = truth * (1 + 0.05 * self._rng.standard_normal(truth.shape))
        if self._flicker:
            scale = self._rng.uniform(0.5, 2.0)
            shift = self._rng.uniform(-0.5, 1.0) * scale * float(np.nanmin(truth))
        else:
            scale = self._fixed[0]
            if self._fixed_shift is None:
                self._fixed_shift = self._fixed[1] * scale * float(np.nanmin(truth))
            shift = self._fixed_shift
        return np.repeat((scale * noisy + shift).astype(np.float32)[None], len(batch), 0)


def quality_rows(frames: int, seed: int = 3) -> list[dict[str, object]]:
    """TAE and global-scale drift of each mode on a rendered synthetic flight.

    Returns:
        One row per mode: ``TAE`` (×100, injected outliers not scored), ``TAE / raw`` and
        ``scale drift %`` (largest change of median(aligned / true depth) from frame 0).
    """
    from endo_depth_ros.synth import SynthConfig, render_sequence

    video = list(render_sequence(SynthConfig(width=96, height=80, frames=frames, seed=seed)))
    depth = np.stack([f.depth for f in video])
    poses = [f.pose for f in video]
    camera = video[0].intrinsics
    rng = np.random.default_rng(seed)
    truth = 1.0 / depth
    raws, outliers = [], []
    for i, d in enumerate(truth):
        noisy = d * (1 + 0.05 * rng.standard_normal(d.shape))
        hit = rng.random(d.shape) < 0.10
        noisy[hit] = rng.uniform(np.nanmin(d), np.nanmax(d), int(hit.sum()))
        scale = rng.uniform(0.5, 2.0)
        # Frame 0 without shift: the shape the reprojection needs (module docstring).
        shift = 0.0 if i == 0 else rng.uniform(-0.5, 1.0) * scale * float(np.nanmin(d))
        raws.append((scale * noisy + shift).astype(np.float32))
        outliers.append(np.abs(noisy / d - 1) > 0.3)
    reference = float(np.nanmedian(depth[0]))
    rows: list[dict[str, object]] = []
    raw_tae = math.nan
    for label, mode, use_poses in (('raw (passthrough)', 'none', False),
                                   ('stream', 'stream', False),
                                   ('stream + poses', 'stream', True),
                                   ('window', 'window', False),
                                   ('window + poses', 'window', True)):
        aligner = TemporalAligner(AlignmentConfig(mode=mode, reference_depth_m=reference))
        out = []
        for i, raw in enumerate(raws):
            out += aligner.push(raw, pose=poses[i] if use_poses else None, intrinsics=camera)
        out += aligner.flush()
        scored = np.stack([np.where(o, np.nan, f.depth)
                           for o, f in zip(outliers, out, strict=True)])
        tae = metrics.temporal_alignment_error(scored, poses, camera)
        tae = math.nan if tae is None else tae
        raw_tae = tae if mode == 'none' else raw_tae
        ratio = np.array([np.nanmedian(f.depth / d) for f, d in zip(out, depth, strict=True)])
        rows.append({'mode': label, 'TAE': tae, 'TAE / raw': tae / raw_tae,
                     'scale drift %': 100 * float(np.max(np.abs(ratio / ratio[0] - 1))),
                     'fallbacks': aligner.stats.fallbacks})
    return rows


def _push_ms(config: AlignmentConfig, raws: list[np.ndarray], poses: list[np.ndarray] | None,
             camera: Intrinsics, repeats: int) -> float:
    """Median ms of one push (stream/none) or mean ms per frame over windows (window)."""
    aligner = TemporalAligner(config)
    counter = iter(range(1 << 62))

    def push() -> None:
        i = next(counter)
        aligner.push(raws[i % len(raws)], pose=None if poses is None else poses[i % len(raws)],
                     intrinsics=camera, stamp_ns=i)

    if config.mode != 'window':
        return median_ms(push, repeats=repeats, warmup=5)
    for _ in range(config.window):  # the first window, untimed
        push()
    frames = 3 * config.stride
    start = time.perf_counter()
    for _ in range(frames):
        push()
    return (time.perf_counter() - start) * 1e3 / frames


def _inputs(height: int, width: int, count: int = 16,
            ) -> tuple[list[np.ndarray], list[np.ndarray], Intrinsics]:
    """Noisy relative disparities of a smooth scene under a slowly moving camera."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = 30 + 8 * np.sin(xx / (0.1 * width)) + 6 * np.cos(yy / (0.08 * height))
    raws, poses = [], []
    for i in range(count):
        noisy = scene * (1 + 0.05 * rng.standard_normal(scene.shape, dtype=np.float32))
        raws.append((rng.uniform(0.5, 2.0) * noisy + rng.uniform(0, 10)).astype(np.float32))
        pose = np.eye(4)
        pose[:3, 3] = (0.0005 * math.sin(i / 3), 0.0, 0.0003 * i)
        poses.append(pose)
    f = 0.8 * width
    return raws, poses, Intrinsics(width, height, f, f, (width - 1) / 2, (height - 1) / 2)


def _model_ms(height: int, width: int, repeats: int) -> tuple[float, str]:
    """DAv2-S inference ms at this size, or NaN and a note when it cannot run."""
    try:
        from endo_depth_ros.bench import random_weights_model

        model = random_weights_model('dav2-s', min(height, width))
    except (ImportError, EndoDepthError) as err:
        return math.nan, f'(DAv2-S not timed at {height}x{width}: {err}; ms only)'
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
    infer: Callable[[], object] = lambda: model.infer(rgb)  # noqa: E731
    return median_ms(infer, repeats=repeats, warmup=1), ''
