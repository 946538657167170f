"""``endo-depth-bench node``: what one frame costs in the node, stage by stage.

For each model and image size, synthetic frames are fed to a real ``DepthNode`` (its own
rclpy context, every output subscribed so nothing is skipped, no worker thread: frames
are handed to ``process_image`` directly, as the worker does). Printed per stage
(median ms): conversion (message -> arrays, camera info pairing), model, odometry,
alignment, geometry, publish (arrays -> messages, colour map, publish calls), the
per-frame total, and the overheads as a fraction of the model time:

- ``ROS overhead``: conversion + publish + the node's glue (total - pipeline stages);
- ``pipeline + ROS``: everything but the model (total - model).

``dav2-s`` runs Depth Anything V2 ViT-S with random weights (the cost does not depend
on the weights; none can be downloaded here).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import random
import statistics
import time
from typing import Any

from endo_depth_ros.bench import (
    add_sizes_argument,
    parse_size,
    parse_sizes,
    print_table,
    random_weights_model,
)
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.models import DepthModel, load
from endo_depth_ros.ros import conversions
from endo_depth_ros.ros.node import standalone_node
from endo_depth_ros.ros.parameters import ParameterValue
from endo_depth_ros.synth import SynthConfig, render_sequence

STAGE_COLUMNS = ('conversion', 'resize', 'model', 'odometry', 'alignment', 'geometry',
                 'publish')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the node benchmark."""
    parser.add_argument('--models', default='photometric,dav2-s',
                        help='comma-separated model names (default: %(default)s)')
    add_sizes_argument(parser, '320x256,518x518')
    parser.add_argument('--frames', type=int, default=8,
                        help='timed frames per model and size (default: %(default)s)')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed frames first (default: %(default)s)')
    parser.add_argument('--align', default='stream', choices=('none', 'stream', 'window'),
                        help='alignment mode (default: %(default)s)')
    parser.add_argument('--input-size', type=int, default=518,
                        help='network input short side of the ViT models (default: %(default)s)')
    parser.add_argument('--max-sizes', default='default',
                        help='comma-separated working size limits, each WIDTHxHEIGHT, 0 (no '
                             'limit: full size) or default (the node default, input.max_width '
                             'x input.max_height); one row each (default: %(default)s)')


def run(args: argparse.Namespace) -> None:
    """Time every model x size combination and print one table."""
    sizes = parse_sizes(args.sizes, min_side=16)
    if args.frames < 1 or args.warmup < 0:
        raise ConfigError(f'--frames must be >= 1 and --warmup >= 0, got {args.frames}, '
                          f'{args.warmup}.')
    # The node and its sink live in this process: keep DDS on loopback, in a private domain
    # unless one is set.
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')
    domain_id = int(os.environ.get('ROS_DOMAIN_ID') or random.SystemRandom().randint(1, 200))
    limits = [_parse_limit(text) for text in args.max_sizes.split(',')]
    rows: list[dict[str, object]] = []
    for name in [n.strip() for n in args.models.split(',') if n.strip()]:
        model = _build_model(name, args.input_size)
        for width, height in sizes:
            for limit in limits:
                rows.append(_measure(model, width, height, limit, args, domain_id))
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else math.nan
    print_table(f'node per-frame cost, median of {args.frames} frames (ms; alignment '
                f'{args.align}, all outputs subscribed; load average {load:.1f} on '
                f'{os.cpu_count()} CPUs: "cpu ms" is the process CPU time per frame, what the '
                'frame costs on an idle machine)', rows)


def _parse_limit(text: str) -> tuple[int, int] | None:
    """``'640x640'`` -> (640, 640); ``'0'`` -> (0, 0) (no limit); ``'default'`` -> None."""
    text = text.strip()
    if text == 'default':
        return None
    if text == '0':
        return 0, 0
    return parse_size(text, min_side=16)


def _measure(model: DepthModel, width: int, height: int, limit: tuple[int, int] | None,
             args: argparse.Namespace, domain_id: int) -> dict[str, object]:
    messages = _messages(width, height, args.warmup + args.frames)
    per_stage: dict[str, list[float]] = {stage: [] for stage in (*STAGE_COLUMNS, 'total', 'cpu')}
    parameters: dict[str, ParameterValue] = {'alignment.mode': args.align}
    if limit is not None:
        parameters.update({'input.max_width': limit[0], 'input.max_height': limit[1]})
    with standalone_node(parameters, model=model, domain_id=domain_id) as node:
        working = node.working_size(width, height)
        for i, (image, info) in enumerate(messages):
            node.on_camera_info(info)
            start, start_cpu = time.perf_counter(), time.process_time()
            timings = node.process_image(image)
            total = (time.perf_counter() - start) * 1e3
            cpu = (time.process_time() - start_cpu) * 1e3
            if i < args.warmup:
                continue
            for stage in STAGE_COLUMNS:
                per_stage[stage].append(timings.get(stage, 0.0))
            per_stage['total'].append(total)
            per_stage['cpu'].append(cpu)
    med = {stage: statistics.median(values) for stage, values in per_stage.items()}
    pipeline = (med['resize'] + med['model'] + med['odometry'] + med['alignment']
                + med['geometry'])
    ros_overhead = med['total'] - pipeline
    row: dict[str, object] = {'model': model.name, 'size': f'{width}x{height}',
                              'working size': '{}x{}'.format(*working),
                              'net input (WxH)': '{1}x{0}'.format(*model.input_size)}
    row.update({f'{stage} ms': med[stage] for stage in STAGE_COLUMNS})
    row['total ms'] = med['total']
    row['cpu ms'] = med['cpu']
    row['frames/s (cpu)'] = 1e3 / med['cpu'] if med['cpu'] > 0 else math.inf
    row['ROS overhead / model'] = f'{100 * ros_overhead / med["model"]:.1f}%'
    row['pipeline+ROS / model'] = f'{100 * (med["total"] - med["model"]) / med["model"]:.1f}%'
    return row


@functools.lru_cache(maxsize=1)
def _messages(width: int, height: int, count: int) -> list[tuple[Any, Any]]:
    """Image and camera_info messages of ``count`` synthetic frames (rendered once per
    size: rendering 1080p frames takes longer than processing them)."""
    frames = render_sequence(SynthConfig(width=width, height=height, frames=count))
    return [(conversions.rgb_to_image(f.rgb, f.stamp_ns, 'endoscope_optical_frame'),
             conversions.intrinsics_to_camera_info(f.intrinsics, f.stamp_ns,
                                                   'endoscope_optical_frame'))
            for f in frames]


def _build_model(name: str, input_size: int) -> DepthModel:
    if name == 'photometric':
        return load('photometric')
    return random_weights_model(name, input_size)
