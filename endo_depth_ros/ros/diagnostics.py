"""What the ``endo_depth`` node reports on ``/diagnostics``: frame counters and a verdict.

:class:`FrameStats` counts frames as they pass through the node (the node holds its
lock around every call); :meth:`FrameStats.tick` turns the counts since the previous
report into a :class:`Tick`; :func:`verdict` says in one line what a person should
know (no images, no subscribers, slower than the camera, ...), with a level.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
import math
import time

import numpy as np

#: Latency samples kept for the percentiles.
LATENCY_HISTORY = 200
#: Samples kept per pipeline stage for the median stage times.
STAGE_HISTORY = 50
#: Seconds without an image after which the input is reported as silent.
SILENT_AFTER_S = 2.0

#: Levels of ``diagnostic_msgs/DiagnosticStatus`` (kept here so this module needs no ROS).
OK, WARN, ERROR = 0, 1, 2


@dataclass
class Tick:
    """Counts since start, and rates since the previous report.

    Attributes:
        input_rate_hz, output_rate_hz: images received / frames published per second.
        received, processed, published, dropped, idle: totals since start (dropped: an
            unprocessed image replaced by a newer one; idle: skipped, nobody subscribed).
        untaken: of ``dropped``, the images replaced in the subscription's queue, never
            copied into the node (``ros/input_gate``).
        lost: images the middleware reports as lost before reaching the node (total).
        new_dropped, new_idle, new_processed: the same counts since the previous report.
        rejected: rejected inputs by reason, totals.
        latency_ms: recent stamp-to-publish latencies.
        stage_ms: median time per pipeline stage (ms).
        silent_s: seconds since the last image (inf: none yet).
    """

    input_rate_hz: float
    output_rate_hz: float
    received: int
    processed: int
    published: int
    dropped: int
    idle: int
    lost: int
    untaken: int
    new_dropped: int
    new_idle: int
    new_processed: int
    rejected: dict[str, int]
    latency_ms: np.ndarray
    stage_ms: dict[str, float]
    silent_s: float


@dataclass
class FrameStats:
    """Frame counters of the node (not thread-safe: the node's lock guards every use)."""

    received: int = 0
    processed: int = 0
    published: int = 0
    dropped: int = 0
    idle: int = 0
    lost: int = 0
    untaken: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_HISTORY))
    stage_ms: dict[str, deque[float]] = field(default_factory=dict)
    last_input: float = 0.0
    # Totals at the previous report, for rates and "since then" counts.
    _last_tick: float = field(default_factory=time.monotonic)
    _at_tick: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)

    def add_timings(self, timings: dict[str, float]) -> None:
        """Record one frame's stage times (ms)."""
        for stage, ms in timings.items():
            self.stage_ms.setdefault(stage, deque(maxlen=STAGE_HISTORY)).append(ms)

    def median_ms(self, stage: str) -> float:
        """Median of the recent times of ``stage`` (ms; 0 before any)."""
        times = self.stage_ms.get(stage)
        return float(np.median(times)) if times else 0.0

    def add_latency(self, latency_ms: float) -> None:
        """Record one published frame's stamp-to-publish latency (ms)."""
        self.latency_ms.append(latency_ms)

    def tick(self, now: float | None = None) -> Tick:
        """Totals and the rates since the previous call (``now``: ``time.monotonic()``)."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._last_tick, 1e-6)
        received0, published0, dropped0, idle0, processed0 = self._at_tick
        tick = Tick(
            input_rate_hz=(self.received - received0) / elapsed,
            output_rate_hz=(self.published - published0) / elapsed,
            received=self.received, processed=self.processed, published=self.published,
            dropped=self.dropped, idle=self.idle, lost=self.lost, untaken=self.untaken,
            new_dropped=self.dropped - dropped0,
            new_idle=self.idle - idle0, new_processed=self.processed - processed0,
            rejected=dict(self.rejected),
            latency_ms=np.array(self.latency_ms, dtype=np.float64),
            stage_ms={k: float(np.median(v)) for k, v in self.stage_ms.items() if v},
            silent_s=now - self.last_input if self.last_input else math.inf)
        self._last_tick = now
        self._at_tick = (self.received, self.published, self.dropped, self.idle,
                         self.processed)
        return tick


def verdict(tick: Tick, image_topic: str, odometry_state: str | None) -> tuple[int, str]:
    """The one-line status of the node and its level (:data:`OK`, :data:`WARN`).

    In order: no images; odometry lost; every input rejected; images arrive but nobody
    subscribes to any output (nothing is computed: OK, not slow); images replaced before
    they could be processed (the pipeline is slower than the camera: WARN); running.
    """
    if tick.received == 0 or tick.silent_s > SILENT_AFTER_S:
        return WARN, f'no images on {image_topic}'
    if odometry_state == 'lost':
        return WARN, 'odometry lost'
    if tick.rejected and tick.processed == 0:
        return WARN, 'every input was rejected'
    if tick.new_idle > 0 and tick.new_processed == 0:
        return OK, (f'no subscribers: {tick.new_idle} frames received and skipped since the '
                    'last report (nothing is computed until an output is subscribed)')
    if tick.new_dropped > 0 and tick.input_rate_hz > 0 and (
            tick.output_rate_hz < 0.9 * tick.input_rate_hz):
        return WARN, (f'slower than the camera: serving {tick.output_rate_hz:.1f} of '
                      f'{tick.input_rate_hz:.1f} Hz, {tick.new_dropped} frames dropped since '
                      'the last report (newest frame first; see time_ms.* for the slow stage)')
    return OK, 'running'


def values(tick: Tick) -> dict[str, object]:
    """The key/values of a report (rates, counts, latency percentiles, stage times)."""
    latencies = tick.latency_ms
    p50, p95 = np.percentile(latencies, [50, 95]) if latencies.size else (math.nan,) * 2
    return {
        'input_rate_hz': f'{tick.input_rate_hz:.2f}',
        'output_rate_hz': f'{tick.output_rate_hz:.2f}',
        'latency_p50_ms': f'{p50:.1f}',
        'latency_p95_ms': f'{p95:.1f}',
        'frames_received': tick.received,
        'frames_processed': tick.processed,
        'frames_published': tick.published,
        'frames_dropped': tick.dropped,
        'frames_dropped_untaken': tick.untaken,
        'frames_skipped_no_subscribers': tick.idle,
        'frames_lost_in_transport': tick.lost,
        'inputs_rejected': sum(tick.rejected.values()),
        **{f'rejected.{reason}': n for reason, n in sorted(tick.rejected.items())},
        **{f'time_ms.{stage}': f'{ms:.2f}' for stage, ms in sorted(tick.stage_ms.items())},
    }
