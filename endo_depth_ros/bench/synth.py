"""``endo-depth-bench synth``: rendering speed of the synthetic endoscope, on one core.

Prints frames/s of full frames (ray casting, shading, noise) and of depth-only renders
at 320x256 and 640x512, then the cost of writing/reading the bag per frame. The process
is pinned to one CPU and OpenCV to one thread so the numbers mean "one core".
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
import tempfile
import time

from endo_depth_ros import bags
from endo_depth_ros.bench import (
    add_sizes_argument,
    median_ms,
    parse_sizes,
    print_table,
    single_core,
)
from endo_depth_ros.synth import Scene, SynthConfig, render_sequence


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the synth benchmark."""
    add_sizes_argument(parser, '320x256,640x512')
    parser.add_argument('--repeats', type=int, default=15,
                        help='timed frames per row (default 15)')
    parser.add_argument('--seed', type=int, default=0, help='scene seed (default 0)')


def run(args: argparse.Namespace) -> None:
    """Time rendering and bag I/O; print two tables."""
    sizes = parse_sizes(args.sizes)
    with single_core() as how:
        _render_table(sizes, args.repeats, args.seed, how)
        _io_table(sizes[0], args.seed)


def _time_scene(config: SynthConfig, repeats: int) -> tuple[float, float, float]:
    """Set-up, full-frame and depth-only times (ms, medians) of one scene."""
    start = time.perf_counter()
    scene = Scene(config)
    scene.texture  # noqa: B018 - built lazily; time it as set-up
    setup_ms = (time.perf_counter() - start) * 1e3
    frames = itertools.count()
    full = median_ms(lambda: scene.frame(next(frames)), repeats=repeats)
    poses = itertools.count()

    def depth_only() -> None:
        i = next(poses)
        scene.render(scene.camera_pose(i), i, shade=False)

    return setup_ms, full, median_ms(depth_only, repeats=repeats)


def _render_table(sizes: list[tuple[int, int]], repeats: int, seed: int, how: str) -> None:
    variants = (('default', False), ('instrument + fov mask', True))
    rows: list[dict[str, object]] = []
    for (width, height), (label, extras) in itertools.product(sizes, variants):
        config = SynthConfig(width=width, height=height, seed=seed, frames=10_000,
                             instrument=extras, fov_mask=extras)
        setup_ms, full, depth = _time_scene(config, repeats)
        rows.append({'size': f'{width}x{height}', 'scene': label,
                     'frames/s': 1e3 / full, 'ms/frame': full,
                     'depth-only ms': depth, 'shading ms': full - depth,
                     'set-up ms (once)': setup_ms})
    print_table(f'Synthetic endoscope rendering, median of {repeats} frames ({how})', rows)


def _io_table(size: tuple[int, int], seed: int) -> None:
    width, height = size
    frames = list(render_sequence(SynthConfig(width=width, height=height, frames=20,
                                              seed=seed)))
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in (*bags.STORAGES, 'npz'):
            path = Path(tmp) / name
            start = time.perf_counter()
            if name == 'npz':
                bags.write_npz(path, frames)
            else:
                bags.write_sequence(path, frames, storage=name)
            write_ms = (time.perf_counter() - start) * 1e3 / len(frames)
            start = time.perf_counter()
            count = sum(1 for _ in bags.read_frames(path))
            read_ms = (time.perf_counter() - start) * 1e3 / count
            rows.append({'format': 'npz folder' if name == 'npz' else f'rosbag2 {name}',
                         'size': f'{width}x{height}', 'write ms/frame': write_ms,
                         'read ms/frame': read_ms})
    print_table(f'Recording I/O of {len(frames)} frames (5 topics each)', rows)
