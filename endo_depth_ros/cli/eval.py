"""``endo-depth-eval``: score depth models on rosbags with ground truth.

Examples::

    endo-depth-eval seq.mcap --out results/                       # photometric, stream
    endo-depth-eval seq.mcap --model photometric --model gt \\
        --align none --align stream --align window --protocol median
    endo-depth-eval seq.mcap --model dav2-s --checkpoint vits.pth --protocol sequence-affine
    endo-depth-eval seq.mcap --live                               # through the ROS node
    endo-depth-eval seq.mcap --model vda-s --checkpoint video_depth_anything_vits.pth \
        --video-mode stream --video-mode window --protocol sequence-affine

Every (bag, model, alignment mode) combination runs through the same pipeline as the
node; ``--live`` replays the bag into a separate node process over real topics instead.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import fields
import sys
from typing import Any

from tqdm import tqdm

from endo_depth_ros import evaluation, metrics, outputs, report
from endo_depth_ros.bags import CameraGuess
from endo_depth_ros.camera import Intrinsics, load_camera_info_yaml, pinhole_for_size
from endo_depth_ros.cli.common import run_cli
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.scale import ScaleConfig

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
    group.add_argument('--video-mode', action='append', choices=evaluation.VIDEO_MODES,
                       dest='video_modes',
                       help='video models (vda-*, endodav): stream (as the node) or window '
                            '(offline windows); repeatable (default stream)')
    group.add_argument('--video-alignment', choices=('scale', 'aligner'), default='scale',
                       help="video models: 'scale' (default) keeps only the metric-scale "
                            "policy, 'aligner' runs --align as for per-frame models")
    group.add_argument('--device', default='auto', help='model device (default auto)')
    group.add_argument('--input-size', type=int, default=0,
                       help='network input size in pixels (default 0: the official size, '
                            '518 Depth Anything, 384 MiDaS/DPT)')
    group.add_argument('--backend', default='auto',
                       choices=('auto', 'torch', 'onnxruntime', 'openvino', 'tensorrt'),
                       help='inference backend (default auto: the fastest within the '
                            'accuracy budget)')
    group.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'fp16', 'bf16'),
                       help='model precision (default auto)')
    group.add_argument('--input-resize', default='auto', choices=('auto', 'official'),
                       help='auto: never upsample a camera beyond its short side; official: '
                            'always scale the short side to --input-size (default auto)')
    group.add_argument('--max-size', default=None, metavar='WIDTHxHEIGHT',
                       help="working size limit: larger frames are processed shrunk to fit "
                            "(default: the node's input.max_width x max_height; 0 = full "
                            'size); with --live pass --node-param input.max_width:=... instead')
    group.add_argument('--live', action='store_true',
                       help='replay the bag into a node process over real topics and score '
                            'what it publishes (adds latency, drop and output rates)')
    group.add_argument('--rate', type=float, default=1.0,
                       help='live replay speed factor (default 1.0 = recorded rate)')
    group.add_argument('--scale-source', choices=('none', 'stereo', 'kinematics'),
                       default='none', help='metric scale from the right camera or the '
                       'kinematic pose stream of the bag (default none; see scale.py)')
    group.add_argument('--scale-param', action='append', default=[], metavar='NAME=VALUE',
                       help='another scale.* setting, e.g. kinematics_time_offset_s=0.03 '
                       '(repeatable)')
    group.add_argument('--node-param', action='append', default=[], metavar='NAME:=VALUE',
                       help='extra node parameter for --live (repeatable)')
    group = parser.add_argument_group('scoring')
    group.add_argument('--protocol', choices=metrics.PROTOCOLS, default='median',
                       help='alignment used for scoring (default median)')
    group.add_argument('--min-depth', type=float, default=None,
                       help='evaluation range minimum in ground-truth units (default 0.001 m; '
                            "scale-free ground truth: its own minimum)")
    group.add_argument('--max-depth', type=float, default=None,
                       help='evaluation range cap in ground-truth units (default 0.15 m; '
                            "scale-free ground truth: its own maximum)")
    group.add_argument('--gt-units', choices=('auto', 'metric', 'relative'), default='auto',
                       help="ground-truth units: 'relative' for scale-free ground truth (SfM); "
                            'default auto = what the recording says, else metric')
    group.add_argument('--fov', choices=('auto', 'off'), default='auto',
                       help="endoscope field-of-view mask: 'auto' detects it (or uses the "
                            "recording's), 'off' scores every pixel (default auto)")
    group.add_argument('--start', type=int, default=0, help='first frame (default 0)')
    group.add_argument('--frames', type=int, default=0,
                       help='number of frames to use, 0 = all (default 0)')
    group.add_argument('--stride', type=int, default=1, help='use every N-th frame')
    group.add_argument('--contact-frames', type=int, default=4,
                       help='frames on the contact sheet (default 4)')
    group = parser.add_argument_group(
        'camera (for recordings without camera info, e.g. EndoSynth samples)')
    for name in ('fx', 'fy', 'cx', 'cy'):
        group.add_argument(f'--{name}', type=float, metavar='PX',
                           help=f'{name} in pixels (give all four)')
    group.add_argument('--camera-info', metavar='FILE.yaml',
                       help='ROS camera_info YAML (camera_calibration format)')
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
    if args.input_size != 0 and args.input_size < 14:
        raise ConfigError(f'--input-size must be at least 14, got {args.input_size}.')
    base = replace(base, model=replace(
        base.model, device=args.device, input_size=args.input_size, backend=args.backend,
        precision=args.precision, input_resize=args.input_resize,
        video_alignment=args.video_alignment))
    base = replace(base, scale=scale_config(args.scale_source, args.scale_param))
    if args.fov == 'off':
        base = replace(base, field_of_view=replace(base.field_of_view, mode='off'))
    if args.max_size is not None:
        from endo_depth_ros.bench import parse_size
        from endo_depth_ros.resolution import ResolutionConfig

        width, height = (0, 0) if args.max_size.strip() == '0' else parse_size(args.max_size)
        base = replace(base, resolution=ResolutionConfig(max_width=width, max_height=height))
    topics = {key: value for key, value in (
        ('image', args.image_topic), ('camera_info', args.camera_info_topic),
        ('depth', args.depth_topic), ('pose', args.pose_topic)) if value}
    return evaluation.EvalConfig(
        models=tuple(args.models or [evaluation.ModelSpec('photometric')]),
        align_modes=tuple(dict.fromkeys(args.align_modes or ['stream'])),
        protocol=args.protocol,
        min_depth=metrics.DEFAULT_MIN_DEPTH if args.min_depth is None else args.min_depth,
        max_depth=metrics.DEFAULT_MAX_DEPTH if args.max_depth is None else args.max_depth,
        range_from_gt=args.min_depth is None and args.max_depth is None,
        start=args.start, frames=args.frames, stride=args.stride, pipeline=base,
        topics=topics, contact_frames=args.contact_frames, gt_units=args.gt_units,
        camera=camera_from_args(args),
        video_modes=tuple(dict.fromkeys(args.video_modes or ['stream'])))


def camera_from_args(args: argparse.Namespace) -> Intrinsics | CameraGuess | None:
    """The camera given on the command line (None: use the recording's).

    Raises:
        ConfigError: only some of --fx/--fy/--cx/--cy, or both them and --camera-info.
        BadInputError: an unreadable or malformed --camera-info file.
    """
    values = [args.fx, args.fy, args.cx, args.cy]
    given = [v is not None for v in values]
    if any(given) and not all(given):
        missing = [f'--{n}' for n, g in zip(('fx', 'fy', 'cx', 'cy'), given, strict=True)
                   if not g]
        raise ConfigError(f'--fx, --fy, --cx and --cy go together; missing {", ".join(missing)}.')
    if all(given) and args.camera_info:
        raise ConfigError('Give either --fx/--fy/--cx/--cy or --camera-info, not both.')
    if args.camera_info:
        return load_camera_info_yaml(args.camera_info)
    if all(given):
        if args.fx <= 0 or args.fy <= 0:
            raise ConfigError(f'--fx and --fy must be positive, got {args.fx}, {args.fy}.')
        return pinhole_for_size(args.fx, args.fy, args.cx, args.cy)
    return None


def scale_config(source: str, params: Sequence[str]) -> ScaleConfig:
    """``ScaleConfig`` from ``--scale-source`` and ``--scale-param NAME=VALUE`` (typed by
    the field's default; raises ``ConfigError`` naming a bad one)."""
    values: dict[str, object] = {'source': source}
    defaults = ScaleConfig()
    for item in params:
        name, sep, text = item.partition('=')
        if not sep or name not in {f.name for f in fields(ScaleConfig)} or name == 'source':
            raise ConfigError(f'--scale-param {item!r}: expected NAME=VALUE with NAME one of '
                              f'{[f.name for f in fields(ScaleConfig)][1:]}.')
        kind = type(getattr(defaults, name))
        try:
            values[name] = (text.lower() in ('1', 'true', 'yes') if kind is bool
                            else kind(text))
        except ValueError:
            raise ConfigError(f'--scale-param {item!r}: {text!r} is not a {kind.__name__}.'
                              ) from None
    return ScaleConfig(**values)  # type: ignore[arg-type]


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
        'protocol': config.protocol, 'gt_units': config.gt_units,
        'min_depth_m': config.min_depth, 'max_depth_m': config.max_depth,
        'range_from_scale_free_gt': config.range_from_gt,
        'start': config.start, 'frames': config.frames,
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

        scale_params = [f'scale.{f.name}:={getattr(config.pipeline.scale, f.name)}'
                        for f in fields(ScaleConfig)
                        if getattr(config.pipeline.scale, f.name) != getattr(ScaleConfig(), f.name)]
        results = replay.evaluate_live(args.bags, config, rate=args.rate,
                                       node_params=[*scale_params, *args.node_param],
                                       progress=progress)
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
