"""Benchmarks: one module per topic, each printing tables (``endo-depth-bench TOPIC``).

A topic module provides ``add_arguments(parser)`` and ``run(args)``. Timings are
medians over repeats; ratios are computed within one run because the machines are noisy.
Image sizes on the command line are ``WIDTHxHEIGHT`` everywhere (:func:`parse_sizes`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
import contextlib
import os
import statistics
import time
from typing import TYPE_CHECKING

from endo_depth_ros.errors import ConfigError

if TYPE_CHECKING:
    from endo_depth_ros.models.depth_anything import TorchDepthModel


def print_table(title: str, rows: Sequence[dict[str, object]]) -> None:
    """Print ``rows`` (dicts sharing keys) as a Markdown table under ``title``."""
    print(f'\n### {title}\n')
    if not rows:
        print('(no rows)')
        return
    columns = list(rows[0])
    cells = [[_format(row.get(col, '')) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    print('| ' + ' | '.join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + ' |')
    print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for r in cells:
        print('| ' + ' | '.join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + ' |')


def median_ms(fn: Callable[[], object], repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def add_sizes_argument(parser: argparse.ArgumentParser, default: str,
                       what: str = 'image sizes') -> None:
    """Add ``--sizes`` (comma-separated ``WIDTHxHEIGHT``; read it with :func:`parse_sizes`)."""
    parser.add_argument('--sizes', default=default,
                        help=f'comma-separated WIDTHxHEIGHT {what} (default: %(default)s)')


def parse_sizes(text: str, *, min_side: int = 1) -> list[tuple[int, int]]:
    """``'350x266,518x518'`` -> ``[(350, 266), (518, 518)]``, (width, height) pairs.

    Args:
        text: comma-separated ``WIDTHxHEIGHT`` sizes (the image convention of ROS and
            ``SynthConfig``); spaces and an upper-case ``X`` are accepted.
        min_side: smallest width or height allowed, pixels.

    Raises:
        ConfigError: a malformed size, or a side below ``min_side``.
    """
    return [parse_size(item, min_side=min_side) for item in text.split(',')]


def parse_size(text: str, *, min_side: int = 1) -> tuple[int, int]:
    """``'350x266'`` -> ``(350, 266)``, one (width, height) pair; see :func:`parse_sizes`.

    Raises:
        ConfigError: a malformed size, or a side below ``min_side``.
    """
    text = text.strip()
    parts = text.lower().split('x')
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f'Bad size {text!r}; expected WIDTHxHEIGHT, e.g. 320x256.')
    width, height = int(parts[0]), int(parts[1])
    if min(width, height) < min_side:
        raise ConfigError(f'Bad size {text!r}; width and height must be >= {min_side}.')
    return width, height


@contextlib.contextmanager
def single_core() -> Iterator[str]:
    """Run OpenCV on one thread and, where the OS allows, this process on one CPU.

    Both are restored on exit. Yields a description for table titles.
    """
    import cv2  # here: the other benchmarks do not need OpenCV's thread settings

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    previous: set[int] | None = None
    how = 'OpenCV 1 thread (no CPU pinning on this OS)'
    if hasattr(os, 'sched_getaffinity') and hasattr(os, 'sched_setaffinity'):
        previous = os.sched_getaffinity(0)
        cpu = min(previous)
        os.sched_setaffinity(0, {cpu})
        how = f'pinned to CPU {cpu}, OpenCV 1 thread'
    try:
        yield how
    finally:
        cv2.setNumThreads(threads)
        if previous is not None:
            os.sched_setaffinity(0, previous)


def random_weights_model(name: str, input_size: int, device: str = 'cpu') -> TorchDepthModel:
    """A Depth Anything / DPT network ``name`` with random weights, PyTorch fp32 on CPU.

    Its cost does not depend on the weights, and none can be downloaded here.

    Args:
        name: a network name of :func:`endo_depth_ros.models.load` (not ``photometric``).
        input_size: network input short side, pixels.
        device: torch device (fp32 there).
    """
    # Imported here: only the network benchmarks need torch.
    from endo_depth_ros.models.depth_anything import (
        TorchDepthModel,
        build_network,
        make_config,
        parse_name,
    )

    network = build_network(make_config(name))
    return TorchDepthModel(network, name=name, output_kind=parse_name(name).output_kind,
                           device=device, precision='fp32', input_size=input_size)


def _format(value: object) -> str:
    if isinstance(value, float):
        return f'{value:.3g}' if abs(value) < 1000 else f'{value:.0f}'
    return str(value)
