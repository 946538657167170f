"""``endo-depth-synth``: render a synthetic endoscope flight with exact ground truth.

Example::

    endo-depth-synth colon.bag --frames 300 --width 320 --height 256 --seed 1 --instrument
    ros2 bag info colon.bag        # /endoscope/image_raw, camera_info, depth_gt, pose_gt, seg_gt
    endo-depth-synth frames/ --format npz --frames 30 --fov-mask

Writes a rosbag2 directory (MCAP by default, ``--storage sqlite3`` too) or, with
``--format npz``, one ``frame_NNNNNN.npz`` per frame (see ``endo_depth_ros.bags``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from pathlib import Path
import time

from tqdm import tqdm

from endo_depth_ros import bags, outputs
from endo_depth_ros.cli.common import run_cli
from endo_depth_ros.synth import SynthConfig, SynthFrame, render_sequence
from endo_depth_ros.synth.contact_sheet import save_contact_sheet

PROG = 'endo-depth-synth'


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    defaults = SynthConfig()
    parser = argparse.ArgumentParser(
        prog=PROG, description='Render a synthetic endoscope video with exact depth, poses '
        'and instrument masks, written as a ROS 2 bag or npz frames.')
    parser.add_argument('out', type=Path, help='output bag directory (or npz folder)')
    parser.add_argument('--frames', type=int, default=defaults.frames,
                        help=f'number of frames (default {defaults.frames})')
    parser.add_argument('--width', type=int, default=defaults.width,
                        help=f'image width in pixels (default {defaults.width})')
    parser.add_argument('--height', type=int, default=defaults.height,
                        help=f'image height in pixels (default {defaults.height})')
    parser.add_argument('--seed', type=int, default=defaults.seed,
                        help='scene, trajectory and noise seed (default 0)')
    parser.add_argument('--format', choices=('bag', 'npz'), default='bag',
                        help='rosbag2 directory or one .npz per frame (default bag)')
    parser.add_argument('--storage', choices=bags.STORAGES, default='mcap',
                        help='rosbag2 storage plugin (default mcap)')
    parser.add_argument('--instrument', action='store_true',
                        help='add a surgical instrument (segmentation label 1)')
    parser.add_argument('--fov-mask', action='store_true',
                        help='circular field of view: black outside, depth NaN')
    parser.add_argument('--fps', type=float, default=defaults.fps,
                        help=f'frame rate of the stamps in Hz (default {defaults.fps:g})')
    parser.add_argument('--speed-mm', type=float, default=defaults.speed_mm,
                        help=f'camera advance per frame in mm (default {defaults.speed_mm:g})')
    parser.add_argument('--fov-deg', type=float, default=defaults.fov_deg,
                        help=f'diagonal field of view in degrees (default {defaults.fov_deg:g})')
    parser.add_argument('--radius-mm', type=float, nargs=2, metavar=('MIN', 'MAX'),
                        default=defaults.radius_mm,
                        help='lumen radius range in mm (default %(default)s)')
    parser.add_argument('--fold-amplitude', type=float, default=defaults.fold_amplitude,
                        help='fold height as a fraction of the radius, 0 for none '
                        f'(default {defaults.fold_amplitude:g})')
    parser.add_argument('--noise', type=float, default=defaults.noise,
                        help=f'sensor noise std at mid grey (default {defaults.noise:g})')
    parser.add_argument('--contact-sheet', type=Path, metavar='PNG',
                        help='also save RGB | depth | segmentation of a few frames as a PNG')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing recording at OUT and an existing '
                             '--contact-sheet file')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code."""
    return run_cli(PROG, build_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    config = SynthConfig(
        width=args.width, height=args.height, frames=args.frames, seed=args.seed,
        fps=args.fps, speed_mm=args.speed_mm, instrument=args.instrument,
        fov_mask=args.fov_mask, fov_deg=args.fov_deg, radius_mm=tuple(args.radius_mm),
        fold_amplitude=args.fold_amplitude, noise=args.noise)
    # Before rendering: a refused output must not cost the whole render.
    outputs.check_recording_output(args.out, overwrite=args.overwrite)
    if args.contact_sheet is not None:
        outputs.prepare_file_output(args.contact_sheet, overwrite=args.overwrite,
                                    inputs=[args.out])
    sheet_every = max(1, config.frames // 4)
    kept: list[SynthFrame] = []

    def frames() -> Iterator[SynthFrame]:
        progress = tqdm(render_sequence(config), total=config.frames, unit='frame',
                        desc=PROG, disable=args.quiet, leave=False)
        for frame in progress:
            if args.contact_sheet is not None and frame.index % sheet_every == 0:
                kept.append(frame)
            yield frame

    started = time.perf_counter()
    if args.format == 'npz':
        count = bags.write_npz(args.out, frames(), overwrite=args.overwrite)
        kind = 'npz frames'
    else:
        count = bags.write_sequence(args.out, frames(), storage=args.storage,
                                    overwrite=args.overwrite)
        kind = f'{args.storage} bag'
    elapsed = time.perf_counter() - started
    print(f'{PROG}: wrote {count} frames ({config.width}x{config.height}, seed {config.seed}) '
          f'to {args.out} ({kind}) in {elapsed:.1f} s')
    if args.contact_sheet is not None:
        save_contact_sheet(kept[:4], args.contact_sheet)
        print(f'{PROG}: contact sheet {args.contact_sheet}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
