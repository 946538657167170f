"""Benchmarks: one module per topic, each printing tables (``endo-depth-bench TOPIC``).

A topic module provides ``add_arguments(parser)`` and ``run(args)``. Timings are
medians over repeats; ratios are computed within one run because the machines are noisy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import statistics
import time


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


def _format(value: object) -> str:
    if isinstance(value, float):
        return f'{value:.3g}' if abs(value) < 1000 else f'{value:.0f}'
    return str(value)
