"""``endo-depth-eval``: score depth models on rosbags with ground truth.

Examples::

    endo-depth-eval seq.mcap --out results/                       # photometric, stream
    endo-depth-eval seq.mcap --model photometric --model gt \\
        --align none --align stream --align window --protocol median
    endo-depth-eval seq.mcap --model dav2-s --checkpoint vits.pth --protocol sequence-affine
    endo-depth-eval seq.mcap --live                               # through the ROS node

Every (bag, model, alignment mode) combination runs through the same pipeline as the
node; ``--live`` replays the bag into a separate node process over real topics instead.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import sys
from typing import Any

from tqdm import tqdm

from endo_depth_ros import evaluation, metrics, outputs, report
from endo_depth_ros.cli.common import run_cli
from endo_depth_ros.errors import ConfigError

PROG = 'endo-depth-eval'


class _ModelAction(argparse.Action):
    """``--model NAME``: append a model to evaluate."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        models = list(getattr(namespace, 'models', None) or [])
        models.append(evaluation.ModelSpec(str(values)))
        namespace.models = models


class _CheckpointAction(argparse.Action):
    """``--checkpoint FILE``: weights of the model given just before."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        models = list(getattr(namespace, 'models', None) or [])
        if not models:
            parser.error('--checkpoint must follow the --model it belongs to')
        if models[-1].checkpoint:
            parser.error(f'--model {models[-1].name} already has a checkpoint')
        models[-1] = evaluation.ModelSpec(models[-1].name, str(values))
        namespace.models = models


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bags', nargs='+', metavar='BAG',
                        help='ROS 2 bag (MCAP or sqlite3) or npz sequence folder')
    group = parser.add_argument_group('what to run')
    group.add_argument('--model', action=_ModelAction, dest='models', metavar='NAME',
                       help="depth model (repeatable; 'gt' = ground-truth oracle); "
                            'default photometric')
    group.add_argument('--checkpoint', action=_CheckpointAction, dest='models',
                       metavar='FILE', help='weights of the preceding --model')
    group.add_argument('--align', action='append', choices=evaluation.ALIGN_MODES,
                       dest='align_modes', help='temporal alignment mode (repeatable); '
                       'default stream')
    group.add_argument('--device', default='auto', help='model device (default auto)')
    group.add_argument('--input-size', type=int, default=518,
                       help='network input short side in pixels (default 518)')
    group.add_argument('--backend', default='auto',
                       choices=('auto', 'torch', 'onnxruntime', 'openvino', 'tensorrt'),
                       help='inference backend (default auto: the fastest within the '
                            'accuracy budget)')
    group.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'fp16', 'bf16'),
                       help='model precision (default auto)')
    group.add_argument('--input-resize', default='auto', choices=('auto', 'official'),
                       help='auto: never upsample a camera beyond its short side; official: '
                            'always scale the short side to --input-size (default auto)')
    group.add_argument('--live', action='store_true',
                       help='replay the bag into a node process over real topics and score '
                            'what it publishes (adds latency, drop and output rates)')
    group.add_argument('--rate', type=float, default=1.0,
                       help='live replay speed factor (default 1.0 = recorded rate)')
    group.add_argument('--node-param', action='append', default=[], metavar='NAME:=VALUE',
                       help='extra node parameter for --live (repeatable)')
    group = parser.add_argument_group('scoring')
    group.add_argument('--protocol', choices=metrics.PROTOCOLS, default='median',
                       help='alignment used for scoring (default median)')
    group.add_argument('--min-depth', type=float, default=metrics.DEFAULT_MIN_DEPTH,
                       help='evaluation range minimum in metres (default 0.001)')
    group.add_argument('--max-depth', type=float, default=metrics.DEFAULT_MAX_DEPTH,
                       help='evaluation range cap in metres (default 0.15)')
    group.add_argument('--start', type=int, default=0, help='first frame (default 0)')
    group.add_argument('--frames', type=int, default=0,
                       help='number of frames to use, 0 = all (default 0)')
    group.add_argument('--stride', type=int, default=1, help='use every N-th frame')
    group.add_argument('--contact-frames', type=int, default=4,
                       help='frames on the contact sheet (default 4)')
    group = parser.add_argument_group('topics (auto-detected by type and name)')
    for name in ('image', 'camera-info', 'depth', 'pose'):
        group.add_argument(f'--{name}-topic', metavar='TOPIC')
    group = parser.add_argument_group('output')
    group.add_argument('--out', default='eval-results', metavar='DIR',
                       help='output folder (default ./eval-results)')
    group.add_argument('--write-bag', metavar='PATH',
                       help="also write the pipeline's outputs as a bag (offline runs, "
                            'first model and mode) for RViz / Foxglove')
    group.add_argument('--overwrite', action='store_true',
                       help='replace the files this command writes in a non-empty --out and '
                            'an existing --write-bag recording (never an input)')
    group.add_argument('--no-progress', action='store_true', help='no progress bars')
    return parser


def config_from_args(args: argparse.Namespace) -> evaluation.EvalConfig:
    """Turn parsed arguments into an ``EvalConfig`` (raises ``ConfigError``)."""
    from dataclasses import replace

    from endo_depth_ros.pipeline import PipelineConfig

    base = PipelineConfig()
    if args.input_size < 14:
        raise ConfigError(f'--input-size must be at least 14, got {args.input_size}.')
    base = replace(base, model=replace(
        base.model, device=args.device, input_size=args.input_size, backend=args.backend,
        precision=args.precision, input_resize=args.input_resize))
    topics = {key: value for key, value in (
        ('image', args.image_topic), ('camera_info', args.camera_info_topic),
        ('depth', args.depth_topic), ('pose', args.pose_topic)) if value}
    return evaluation.EvalConfig(
        models=tuple(args.models or [evaluation.ModelSpec('photometric')]),
        align_modes=tuple(dict.fromkeys(args.align_modes or ['stream'])),
        protocol=args.protocol, min_depth=args.min_depth, max_depth=args.max_depth,
        start=args.start, frames=args.frames, stride=args.stride, pipeline=base,
        topics=topics, contact_frames=args.contact_frames)


def progress_factory(enabled: bool) -> evaluation.ProgressFactory | None:
    """One tqdm bar per run on stderr (None when disabled)."""
    if not enabled:
        return None

    def factory(description: str, total: int | None) -> evaluation.Progress:
        return tqdm(total=total, desc=description, unit='frame', file=sys.stderr)
    return factory


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report and print the table and where the report is."""
    config = config_from_args(args)
    progress = progress_factory(not args.no_progress)
    settings: dict[str, object] = {
        'protocol': config.protocol, 'min_depth_m': config.min_depth,
        'max_depth_m': config.max_depth, 'start': config.start, 'frames': config.frames,
        'stride': config.stride, 'mode': 'live' if args.live else 'offline',
    }
    # Fail before the (long) evaluation rather than when writing its report.
    out = outputs.OutputFolder(args.out, overwrite=args.overwrite, inputs=args.bags)
    out.create()
    if args.live:
        if args.write_bag:
            raise ConfigError('--write-bag works offline only; record a live run with '
                              '`ros2 bag record` instead.')
        from endo_depth_ros.ros import replay

        results = replay.evaluate_live(args.bags, config, rate=args.rate,
                                       node_params=args.node_param, progress=progress)
    else:
        results = evaluation.evaluate(args.bags, config, progress=progress,
                                      write_bag=args.write_bag, overwrite=args.overwrite)
    path = report.write_report(results, out, settings=settings)
    print(report.results_tables(results))
    print(f'\nreport: {path}')
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``endo-depth-eval``)."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == '__main__':
    sys.exit(main())
