"""``endo-depth-bench node``: what one frame costs in the node, stage by stage, and the
frame rate of a real node over real topics.

Per stage: for each model, image size and working size, synthetic frames are fed to a
real ``DepthNode`` (its own rclpy context, every output subscribed so nothing is
skipped, no worker thread: frames are handed to ``process_image``, which runs the
stages one after the other). Stage times are the CPU time of the thread (OpenCV on one
thread, so that all of a stage's work is counted; what a stage costs on an idle core),
median ms: conversion (message -> arrays, camera info pairing), resize, model,
odometry, alignment, geometry, publish (arrays -> messages, colour map, publish calls),
their sum per stage thread of the pipelined node (1: conversion + resize + model,
2: odometry + alignment + scale, 3: geometry + publish) and the frame rate they bound on
two cores: ``min(1000 / slowest thread, 2000 / sum)``. ``cpu ms`` is the process CPU
time per frame (middleware threads included).

``--live``: end to end (``endo_depth_ros.ros.throughput``): the node in its own process
with its threads (pipelined or not), a camera publishing at ``--rate`` Hz and every
output subscribed; frames/s published, the node's drops (and how many of them the
middleware replaced before the node took them), its CPU and page faults per frame;
``--middleware`` repeats it with the Fast DDS profiles of ``endo-depth-bench qos``
(shared memory, big UDP buffers) in the node and the camera alike.

``dav2-s`` runs Depth Anything V2 ViT-S with random weights (the cost does not depend
on the weights; none can be downloaded here).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
from pathlib import Path
import random
import statistics
import tempfile
import time
from typing import Any

import cv2

from endo_depth_ros.bench import (
    add_sizes_argument,
    parse_size,
    parse_sizes,
    print_table,
    random_weights_model,
)
from endo_depth_ros.bench.qos import MIDDLEWARES, middleware_env
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.models import DepthModel, load
from endo_depth_ros.resolution import ResolutionConfig
from endo_depth_ros.ros import conversions
from endo_depth_ros.ros.node import standalone_node
from endo_depth_ros.ros.parameters import ParameterValue
from endo_depth_ros.synth import SynthConfig, render_sequence

STAGE_COLUMNS = ('conversion', 'resize', 'model', 'odometry', 'alignment', 'scale',
                 'geometry', 'publish')
#: The stages each thread of the pipelined node runs (``endo_depth_ros.ros.node``).
STAGE_THREADS = {'thread 1': ('conversion', 'resize', 'model'),
                 'thread 2': ('odometry', 'alignment', 'scale'),
                 'thread 3': ('geometry', 'publish')}


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
    parser.add_argument('--live', action='store_true',
                        help='measure a node process over real topics instead (photometric '
                             'model only: a separate process cannot share random weights)')
    parser.add_argument('--rate', type=float, default=60.0,
                        help='--live: camera frames per second (default: %(default)s)')
    parser.add_argument('--seconds', type=float, default=10.0,
                        help='--live: measured seconds after a 2 s warm-up '
                             '(default: %(default)s)')
    parser.add_argument('--pipelined', default='true,false',
                        help='--live: comma-separated input.pipelined values, one row each '
                             '(default: %(default)s)')
    parser.add_argument('--middleware', default='default',
                        help='--live: comma-separated middleware settings of the node and the '
                             'camera, one row each: default, shm (Fast DDS shared memory with '
                             'a segment for --shm-frames frames), udp-buffers (4 MB socket '
                             'buffers); see endo-depth-bench qos (default: %(default)s)')
    parser.add_argument('--shm-frames', type=int, default=4,
                        help='--live --middleware shm: frames the segment holds '
                             '(default: %(default)s)')
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
    if args.live:
        _run_live(args, sizes, limits)
        return
    rows: list[dict[str, object]] = []
    for name in [n.strip() for n in args.models.split(',') if n.strip()]:
        model = _build_model(name, args.input_size)
        for width, height in sizes:
            for limit in limits:
                rows.append(_measure(model, width, height, limit, args, domain_id))
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else math.nan
    print_table(f'node per-frame cost, median of {args.frames} frames (CPU ms of the '
                f'thread per stage, OpenCV on one thread; alignment {args.align}, all outputs '
                f'subscribed; load average {load:.1f} on {os.cpu_count()} CPUs)', rows)


def _run_live(args: argparse.Namespace, sizes: list[tuple[int, int]],
              limits: list[tuple[int, int] | None]) -> None:
    """One row per size x working size x input.pipelined, each a fresh node process."""
    from endo_depth_ros.ros import throughput  # the node process needs no torch model

    if args.models.strip() != 'photometric':
        raise ConfigError('--live runs the node process with its own model: use '
                          '--models photometric.')
    if args.rate <= 0 or args.seconds <= 0:
        raise ConfigError(f'--rate and --seconds must be > 0, got {args.rate}, {args.seconds}.')
    choices = [text.strip().lower() for text in args.pipelined.split(',')]
    if not set(choices) <= {'true', 'false'}:
        raise ConfigError(f'--pipelined takes true and/or false, got {args.pipelined!r}.')
    middlewares = [text.strip() for text in args.middleware.split(',') if text.strip()]
    if not middlewares or not set(middlewares) <= set(MIDDLEWARES) or args.shm_frames < 1:
        raise ConfigError(f'--middleware takes {", ".join(MIDDLEWARES)} (got '
                          f'{args.middleware!r}) and --shm-frames must be >= 1.')
    rows: list[dict[str, object]] = []
    frames = {size: next(iter(render_sequence(SynthConfig(width=size[0], height=size[1],
                                                          frames=1))))
              for size in sizes}
    with tempfile.TemporaryDirectory(prefix='endo_depth_node_bench_') as tmp:
        for (width, height), limit, pipelined, middleware in itertools.product(
                sizes, limits, choices, middlewares):
            frame = frames[width, height]
            parameters: dict[str, Any] = {'alignment.mode': args.align,
                                          'input.pipelined': pipelined == 'true'}
            if limit is not None:
                parameters.update({'input.max_width': limit[0], 'input.max_height': limit[1]})
            env = middleware_env(middleware, width * height * 3, args.shm_frames, Path(tmp))
            result = throughput.measure(frame.rgb, frame.intrinsics, parameters,
                                        rate_hz=args.rate, seconds=args.seconds, env=env)
            working = ResolutionConfig(*(limit or (ResolutionConfig().max_width,
                                                   ResolutionConfig().max_height)))
            stages = ', '.join(f'{k} {v:.1f}' for k, v in sorted(result.stage_ms.items()))
            rows.append({
                'size': f'{width}x{height}',
                'working size': '{}x{}'.format(*working.working_size(width, height)),
                'pipelined': pipelined, 'middleware': middleware, 'camera Hz': result.sent_hz,
                'published frames/s': result.published_hz,
                'node received': result.received, 'node dropped': result.dropped,
                'untaken (of dropped)': result.untaken,
                'lost in transport': result.lost, 'rejected': result.rejected,
                'node cpu ms/frame': result.node_cpu_ms,
                'node page faults/frame': result.node_faults,
                'node cores': result.node_cores,
                'camera+consumer cores': result.bench_cores,
                'latency p50 ms': result.latency_p50_ms, 'node stage wall ms': stages})
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else math.nan
    print_table(f'node over real topics, {args.seconds:g} s at {args.rate:g} Hz after a 2 s '
                f'warm-up (alignment {args.align}, every output subscribed; load average '
                f'{load:.1f} on {os.cpu_count()} CPUs, shared with the camera and consumer)',
                rows)


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
    per_stage: dict[str, list[float]] = {stage: [] for stage in (*STAGE_COLUMNS, 'cpu')}
    for thread in STAGE_THREADS:
        per_stage[thread] = []
    parameters: dict[str, ParameterValue] = {'alignment.mode': args.align}
    if limit is not None:
        parameters.update({'input.max_width': limit[0], 'input.max_height': limit[1]})
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # all of a stage's work in the thread whose CPU time is read
    try:
        with standalone_node(parameters, model=model, domain_id=domain_id) as node:
            node._pipeline.stage_clock = time.thread_time
            working = node.working_size(width, height)
            for i, (image, info) in enumerate(messages):
                node.on_camera_info(info)
                start_cpu = time.process_time()
                timings = node.process_image(image)
                cpu = (time.process_time() - start_cpu) * 1e3
                if i < args.warmup:
                    continue
                for stage in STAGE_COLUMNS:
                    per_stage[stage].append(timings.get(stage, 0.0))
                for thread, stages in STAGE_THREADS.items():
                    per_stage[thread].append(sum(timings.get(stage, 0.0) for stage in stages))
                per_stage['cpu'].append(cpu)
    finally:
        cv2.setNumThreads(threads)
    med = {stage: statistics.median(values) for stage, values in per_stage.items()}
    row: dict[str, object] = {'model': model.name, 'size': f'{width}x{height}',
                              'working size': '{}x{}'.format(*working)}
    row.update({f'{stage} ms': med[stage] for stage in STAGE_COLUMNS})
    row.update({f'{thread} ms': med[thread] for thread in STAGE_THREADS})
    total = sum(med[thread] for thread in STAGE_THREADS)
    slowest = max(med[thread] for thread in STAGE_THREADS)
    row['sum ms'] = total
    row['cpu ms'] = med['cpu']
    row['frames/s 1 core'] = 1e3 / total if total > 0 else math.inf
    row['frames/s bound, 2 cores'] = min(1e3 / slowest, 2e3 / total) if total > 0 else math.inf
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
