"""``endo-depth-bench TOPIC``: print benchmark tables (see endo_depth_ros.bench)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import importlib
import sys

from endo_depth_ros.cli.common import run_cli

TOPICS = {
    'synth': 'synthetic video rendering, frames/s',
    'fov': 'field-of-view detection: IoU and stability over a flight, ms per frame',
    'models': 'depth model backends, ms/frame',
    'align': 'temporal alignment, ms/frame vs model time',
    'geometry': 'depth to point cloud, ms/frame vs model time',
    'odometry': 'visual odometry, frames/s and trajectory error',
    'node': 'node per-stage cost and overhead vs model time',
    'scale': 'metric scale from stereo / kinematics: quality, robustness, cost',
    'consistency': 'alignment judged against the truth: sequences x models x modes',
    'qos': 'camera frames delivered by size, QoS and middleware settings',
    'gpu': 'backend table (fp16, CUDA graphs, TensorRT) on a CUDA GPU',
}


def build_parser(topic: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``topic``'s options are added (each module pulls in torch or rclpy)."""
    parser = argparse.ArgumentParser(
        prog='endo-depth-bench', description='Benchmarks that print tables.')
    subparsers = parser.add_subparsers(dest='topic', required=True, metavar='TOPIC')
    for name, help_text in TOPICS.items():
        sub = subparsers.add_parser(name, help=help_text)
        if name == topic:
            importlib.import_module(f'endo_depth_ros.bench.{name}').add_arguments(sub)
    return parser


def _run(args: argparse.Namespace) -> int | None:
    module = importlib.import_module(f'endo_depth_ros.bench.{args.topic}')
    result: int | None = module.run(args)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    topic = args[0] if args and args[0] in TOPICS else None
    return run_cli('endo-depth-bench', build_parser(topic), _run, args)


if __name__ == '__main__':
    sys.exit(main())
