"""``endo-depth-bench odometry``: visual odometry speed and trajectory error.

Three tables, on the synthetic endoscope video (``endo_depth_ros.synth``), on one core
(``cv2.setNumThreads(1)``, and the process pinned to one CPU where the OS allows):

1. speed: ms per frame of ``track`` + ``set_reference_depth`` (ground-truth depth) per
   image size and method, as frames/s;
2. accuracy with ground-truth depth over ``--frames`` frames: ATE RMSE after a rigid
   (SE(3)) alignment, absolute and as a fraction of the path length, RPE per frame;
3. accuracy with predicted depth: the real ``Pipeline`` (model -> odometry -> temporal
   alignment) with ``--model`` (default the weight-free photometric prior) for each
   ``--align`` mode. That depth is not metric, so the ATE uses a Sim(3) alignment and the
   RPE translation is scaled by the fitted scale.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import itertools
import statistics
import sys
import time

import numpy as np

from endo_depth_ros.bench import (
    add_sizes_argument,
    parse_size,
    parse_sizes,
    print_table,
    single_core,
)
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.metrics import (
    absolute_trajectory_error,
    relative_pose_error,
    umeyama_alignment,
)
from endo_depth_ros.odometry import METHODS, OdometryConfig, PoseEstimate, VisualOdometry
from endo_depth_ros.synth import SynthConfig, SynthFrame, render_sequence


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the odometry benchmark."""
    add_sizes_argument(parser, '320x256,640x512', 'image sizes timed')
    parser.add_argument('--speed-frames', type=int, default=60,
                        help='frames timed per size (default: %(default)s)')
    parser.add_argument('--frames', type=int, default=300,
                        help='frames of the accuracy sequence (default: %(default)s)')
    parser.add_argument('--accuracy-size', default='320x256',
                        help='WIDTHxHEIGHT of the accuracy sequence (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0,
                        help='synthetic scene seed (default: %(default)s)')
    parser.add_argument('--methods', default=','.join(METHODS),
                        help='comma-separated odometry methods (default: %(default)s)')
    parser.add_argument('--model', default='photometric',
                        help="depth model for table 3, '' to skip (default: %(default)s)")
    parser.add_argument('--align', default='stream,window',
                        help='comma-separated alignment modes for table 3 (default: %(default)s)')


def run(args: argparse.Namespace) -> None:
    """Render the sequences, run the odometry, print the three tables."""
    sizes = parse_sizes(args.sizes)
    accuracy_size = parse_size(args.accuracy_size)
    methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    for method in methods:
        OdometryConfig(method=method)  # validates the name
    if args.speed_frames < 2 or args.frames < 2:
        raise ConfigError(
            f'--speed-frames and --frames must be >= 2, got {args.speed_frames}, {args.frames}.')
    with single_core() as cores:
        _print_tables(args, sizes, accuracy_size, methods, cores)


def _print_tables(args: argparse.Namespace, sizes: list[tuple[int, int]],
                  accuracy_size: tuple[int, int], methods: list[str], cores: str) -> None:
    accuracy = _render(accuracy_size, args.frames, args.seed)
    speed_rows = []
    for size in sizes:
        frames = (accuracy[:args.speed_frames] if size == accuracy_size
                  else _render(size, args.speed_frames, args.seed))
        for method in methods:
            per_frame, _ = _track(frames, OdometryConfig(method=method))
            ms = statistics.median(per_frame[1:])  # frame 0 has nothing to track
            speed_rows.append({
                'size': f'{size[0]}x{size[1]}', 'method': method,
                'median ms/frame': ms, 'p90 ms/frame': float(np.percentile(per_frame[1:], 90)),
                'frames/s': 1e3 / ms})
    print_table(f'odometry speed, track + set_reference_depth, true depth ({cores})',
                speed_rows)

    gt = [f.pose for f in accuracy]
    length = _path_length(gt)
    rows = []
    for method in methods:
        per_frame, estimates = _track(accuracy, OdometryConfig(method=method))
        rows.append({'method': method, **_errors(estimates, gt, length, with_scale=False),
                     'frames/s': 1e3 / statistics.mean(per_frame)})
    w, h = accuracy_size
    print_table(f'odometry accuracy, true depth, {len(accuracy)} frames {w}x{h} '
                f'(path {length * 1e3:.0f} mm, SE(3) ATE)', rows)

    if args.model:
        modes = [m.strip() for m in args.align.split(',') if m.strip()]
        rows = [_pipeline_row(accuracy, gt, length, args.model, mode) for mode in modes]
        print_table(f'odometry accuracy, {args.model} depth after temporal alignment '
                    f'(Pipeline, klt), {len(accuracy)} frames {w}x{h}, Sim(3) ATE', rows)


def _track(frames: Sequence[SynthFrame],
           config: OdometryConfig) -> tuple[list[float], list[PoseEstimate]]:
    """Per-frame ms and estimates, in the pipeline's call order."""
    vo = VisualOdometry(config)
    times, estimates = [], []
    for frame in frames:
        start = time.perf_counter()
        estimates.append(vo.track(frame.rgb, frame.intrinsics))
        vo.set_reference_depth(frame.depth)
        times.append((time.perf_counter() - start) * 1e3)
    return times, estimates


def _pipeline_row(frames: Sequence[SynthFrame], gt: list[np.ndarray], length: float,
                  model: str, mode: str) -> dict[str, object]:
    # Imported here: the pipeline pulls in torch, which tables 1-2 do not need.
    from endo_depth_ros.pipeline import ModelConfig, Pipeline, PipelineConfig
    from endo_depth_ros.temporal import AlignmentConfig

    pipeline = Pipeline(PipelineConfig(model=ModelConfig(name=model),
                                       alignment=AlignmentConfig(mode=mode)))
    results = []
    odometry_ms = []
    for frame in frames:
        done = pipeline.process(frame.rgb, frame.intrinsics, frame.stamp_ns,
                                compute_points=False)
        results.extend(done)
    results.extend(pipeline.flush())
    estimates = []
    for result in sorted(results, key=lambda r: r.index):
        if result.pose is None:
            raise ConfigError(f'The pipeline returned no pose for frame {result.index}.')
        estimates.append(result.pose)
        odometry_ms.append(result.timings_ms.get('odometry', float('nan')))
    row: dict[str, object] = {'alignment': mode}
    row.update(_errors(estimates, gt[:len(estimates)], length, with_scale=True))
    row['odometry ms/frame'] = statistics.median(odometry_ms)
    return row


def _errors(estimates: Sequence[PoseEstimate], gt: list[np.ndarray], length: float,
            with_scale: bool) -> dict[str, object]:
    est = [e.pose for e in estimates]
    ate = absolute_trajectory_error(est, gt, with_scale=with_scale)
    scale = 1.0
    if with_scale:
        scale, _, _ = umeyama_alignment(np.array(est)[:, :3, 3], np.array(gt)[:, :3, 3], True)
    trans, rot = relative_pose_error(est, gt, scale=scale)
    row: dict[str, object] = {
        'ATE mm': ate * 1e3, 'ATE % path': 100 * ate / length,
        'RPE rot mean deg': float(rot.mean()), 'RPE rot rmse deg': float(np.sqrt(np.mean(rot**2))),
        'RPE rot max deg': float(rot.max()), 'RPE trans mean mm': float(trans.mean() * 1e3),
        'invalid': sum(not e.valid for e in estimates),
        'keyframes': sum(e.keyframe for e in estimates),
    }
    if with_scale:
        row['Sim(3) scale'] = float(scale)
    return row


def _render(size: tuple[int, int], frames: int, seed: int) -> list[SynthFrame]:
    print(f'rendering {frames} synthetic frames at {size[0]}x{size[1]} ...', file=sys.stderr)
    config = SynthConfig(width=size[0], height=size[1], frames=frames, seed=seed)
    return list(render_sequence(config))


def _path_length(poses: list[np.ndarray]) -> float:
    return float(sum(np.linalg.norm(b[:3, 3] - a[:3, 3]) for a, b in itertools.pairwise(poses)))
