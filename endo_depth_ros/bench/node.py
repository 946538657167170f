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
import os
import random
import statistics
import time

from endo_depth_ros.bench import (
    add_sizes_argument,
    parse_sizes,
    print_table,
    random_weights_model,
)
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.models import DepthModel, load
from endo_depth_ros.ros import conversions
from endo_depth_ros.ros.node import standalone_node
from endo_depth_ros.synth import SynthConfig, render_sequence

STAGE_COLUMNS = ('conversion', 'model', 'odometry', 'alignment', 'geometry', 'publish')


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
    rows: list[dict[str, object]] = []
    for name in [n.strip() for n in args.models.split(',') if n.strip()]:
        model = _build_model(name, args.input_size)
        for width, height in sizes:
            rows.append(_measure(model, width, height, args, domain_id))
    print_table(f'node per-frame cost, median of {args.frames} frames (ms; '
                f'alignment {args.align}, all outputs subscribed)', rows)


def _measure(model: DepthModel, width: int, height: int, args: argparse.Namespace,
             domain_id: int) -> dict[str, object]:
    count = args.warmup + args.frames
    frames = list(render_sequence(SynthConfig(width=width, height=height, frames=count)))
    messages = [(conversions.rgb_to_image(f.rgb, f.stamp_ns, 'endoscope_optical_frame'),
                 conversions.intrinsics_to_camera_info(f.intrinsics, f.stamp_ns,
                                                       'endoscope_optical_frame'))
                for f in frames]
    per_stage: dict[str, list[float]] = {stage: [] for stage in (*STAGE_COLUMNS, 'total')}
    with standalone_node({'alignment.mode': args.align}, model=model,
                         domain_id=domain_id) as node:
        for i, (image, info) in enumerate(messages):
            node.on_camera_info(info)
            start = time.perf_counter()
            timings = node.process_image(image)
            total = (time.perf_counter() - start) * 1e3
            if i < args.warmup:
                continue
            for stage in STAGE_COLUMNS:
                per_stage[stage].append(timings.get(stage, 0.0))
            per_stage['total'].append(total)
    med = {stage: statistics.median(values) for stage, values in per_stage.items()}
    pipeline = med['model'] + med['odometry'] + med['alignment'] + med['geometry']
    ros_overhead = med['total'] - pipeline
    row: dict[str, object] = {'model': model.name, 'size': f'{width}x{height}',
                              'net input (WxH)': '{1}x{0}'.format(*model.input_size)}
    row.update({f'{stage} ms': med[stage] for stage in STAGE_COLUMNS})
    row['total ms'] = med['total']
    row['ROS overhead / model'] = f'{100 * ros_overhead / med["model"]:.1f}%'
    row['pipeline+ROS / model'] = f'{100 * (med["total"] - med["model"]) / med["model"]:.1f}%'
    return row


def _build_model(name: str, input_size: int) -> DepthModel:
    if name == 'photometric':
        return load('photometric')
    return random_weights_model(name, input_size)
