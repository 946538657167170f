"""``endo-depth-import``: public endoscopy datasets, in their own formats, to bags.

Examples::

    endo-depth-import c3vd C3VD/cecum_t1_a cecum_t1_a.bag
    endo-depth-import simcol3d SyntheticColon_I/Frames_S1 s1.bag
    endo-depth-import scared dataset_1/keyframe_1 d1k1.bag
    endo-depth-import hamlyn hamlyn/rectified01 rect01.bag
    endo-depth-import endosynth samples/ synth.bag --fx 1000 --fy 1000 --cx 960 --cy 540
    endo-depth-import colmap my_project/ sfm.bag      # sparse/0 + images/
    endo-depth-eval cecum_t1_a.bag --model gt --align none

Depth is written in metres (32FC1, NaN unknown) and poses as REP-103 optical frames in
``world``; scale-free ground truth (COLMAP) is marked ``depth_units: relative`` so the
evaluator never labels it in metres.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
import sys

from tqdm import tqdm

from endo_depth_ros import bags, datasets
from endo_depth_ros.cli.common import run_cli
from endo_depth_ros.cli.eval import camera_from_args
from endo_depth_ros.datasets import ImportOptions

PROG = 'endo-depth-import'


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('format', choices=sorted(datasets.FORMATS), metavar='FORMAT',
                        help=f'dataset format: {", ".join(sorted(datasets.FORMATS))}')
    parser.add_argument('src', metavar='SRC', help='the dataset folder')
    parser.add_argument('out', metavar='OUT', help='the bag to write (rosbag2 folder)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing recording at OUT')
    parser.add_argument('--storage', choices=bags.STORAGES, default='mcap',
                        help='rosbag2 storage (default mcap)')
    parser.add_argument('--fps', type=float, default=30.0,
                        help='frame rate of the stamps when the dataset has none (default 30)')
    parser.add_argument('--frames', type=int, default=0,
                        help='import at most this many frames (default 0 = all)')
    parser.add_argument('--images', metavar='DIR', help='COLMAP: the image folder '
                        '(default: images/ next to the model)')
    parser.add_argument('--mask', metavar='FILE.png',
                        help="the endoscope's field of view (non-zero inside), recorded in "
                             'the bag for the evaluator')
    group = parser.add_argument_group('camera (instead of / where there is none in the data)')
    for name in ('fx', 'fy', 'cx', 'cy'):
        group.add_argument(f'--{name}', type=float, metavar='PX', help=f'{name} in pixels')
    group.add_argument('--camera-info', metavar='FILE.yaml', help='ROS camera_info YAML')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser


def run(args: argparse.Namespace) -> int:
    """Import and print where the bag is."""
    options = ImportOptions(camera=camera_from_args(args), fps=args.fps, max_frames=args.frames,
                            images=Path(args.images) if args.images else None)
    view = datasets.read_view_mask(args.mask) if args.mask else None
    bars: list[tqdm] = []

    def progress(total: int | None) -> Callable[[], object]:
        bar = tqdm(total=total, desc=f'{args.format} -> {Path(args.out).name}', unit='frame',
                   file=sys.stderr, disable=args.no_progress)
        bars.append(bar)
        return bar.update

    try:
        count = datasets.import_dataset(args.format, args.src, args.out, options,
                                        overwrite=args.overwrite, storage=args.storage,
                                        view=view, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    print(f'{count} frames -> {args.out}')
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``endo-depth-import``)."""
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == '__main__':
    sys.exit(main())
