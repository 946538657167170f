"""The demo (``./dev demo``, ``make demo``): depth, clouds and poses in minutes, no weights.

1. renders a short synthetic endoscope flight with exact ground truth into a bag;
2. replays it, at the recorded rate with ``/clock``, into the depth node running with its
   default configuration (photometric model, stream alignment) in a separate process,
   and records what the node publishes (``--offline`` runs the same pipeline in-process
   instead, without ROS);
3. scores it like the papers (AbsRel, δ, TAE, ATE/RPE, latency) and writes the report
   with its figures, then prints the table and where the report is.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import sys
import time

from endo_depth_ros import bags, evaluation, outputs, report
from endo_depth_ros.cli.common import run_cli
from endo_depth_ros.cli.eval import progress_factory
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.synth import SynthConfig, render_sequence

PROG = 'endo-depth-demo'


def build_parser() -> argparse.ArgumentParser:
    """The demo's argument parser."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='demo-output', metavar='DIR',
                        help='folder for the bag and the report (default ./demo-output)')
    parser.add_argument('--frames', type=int, default=150,
                        help='frames of the synthetic flight (default 150 = 5 s at 30 fps)')
    parser.add_argument('--width', type=int, default=320, help='image width (default 320)')
    parser.add_argument('--height', type=int, default=256, help='image height (default 256)')
    parser.add_argument('--fps', type=float, default=30.0, help='frame rate (default 30)')
    parser.add_argument('--seed', type=int, default=0, help='scene seed (default 0)')
    parser.add_argument('--offline', action='store_true',
                        help='run the pipeline in-process instead of through the ROS node')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the outputs of an earlier demo in --out')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    return parser


def run(args: argparse.Namespace) -> int:
    """Generate, evaluate, report."""
    if args.frames < 3:
        raise ConfigError(f'--frames must be at least 3, got {args.frames}.')
    out = outputs.OutputFolder(args.out, overwrite=args.overwrite)
    bag = outputs.prepare_recording_output(out.create() / 'synthetic_bag',
                                           overwrite=args.overwrite)
    report_folder = outputs.OutputFolder(out.path / 'report', overwrite=args.overwrite)
    synth = SynthConfig(width=args.width, height=args.height, frames=args.frames,
                        fps=args.fps, seed=args.seed)
    start = time.perf_counter()
    print(f'[1/3] rendering {args.frames} synthetic frames ({args.width}x{args.height}) '
          f'-> {bag}', flush=True)
    bags.write_sequence(bag, render_sequence(synth))

    config = evaluation.EvalConfig(contact_frames=4)
    progress = progress_factory(not args.no_progress)
    if args.offline:
        print('[2/3] running the pipeline (photometric model, stream alignment) offline',
              flush=True)
        results = evaluation.evaluate([bag], config, progress=progress)
    else:
        from endo_depth_ros.ros import replay

        print('[2/3] replaying the bag into the depth node (photometric model, stream '
              'alignment) with /clock', flush=True)
        results = replay.evaluate_live([bag], config, progress=progress)
    print('[3/3] writing the report', flush=True)
    path = report.write_report(results, report_folder, settings={
        'protocol': config.protocol, 'max_depth_m': config.max_depth,
        'mode': 'offline' if args.offline else 'live', 'frames': args.frames,
        'size': f'{args.width}x{args.height}'})
    print()
    print(report.results_tables(results))
    print(f'\nDone in {time.perf_counter() - start:.0f} s. Report: {path.resolve()}')
    print(f'Figures and results.json are next to it in {path.parent.resolve()}/')
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``python -m endo_depth_ros.cli.demo``)."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == '__main__':
    sys.exit(main())
