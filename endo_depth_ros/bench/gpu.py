"""``endo-depth-bench gpu``: the backend table of ``models --backends`` on a CUDA GPU.

Variants (``endo_depth_ros.bench.backends.GPU_VARIANTS``): torch fp32 (the reference),
torch fp16 autocast with channels_last and a pinned host buffer, the same compiled with
``mode='reduce-overhead'`` (CUDA graphs for the fixed shape), TensorRT fp16 from the ONNX
export (engines cached), and ``auto``. Columns as on the CPU, with the fp32 and fp16
matmul throughput of the GPU as the roofline. Refuses with one line where torch sees no
CUDA device: written to the real APIs, it has not run on the project's CPU-only machine.
"""

from __future__ import annotations

import argparse

from endo_depth_ros.bench import add_sizes_argument
from endo_depth_ros.bench.models import BACKEND_SIZES, run_backends
from endo_depth_ros.errors import BackendUnavailableError
from endo_depth_ros.models import hardware


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the GPU benchmark."""
    add_sizes_argument(parser, BACKEND_SIZES)
    parser.add_argument('--backends', default='torch,torch-fp16,torch-fp16-graphs,tensorrt,auto',
                        metavar='LIST', help='variants (default: %(default)s)')
    parser.add_argument('--model', default='dav2-s', help='network (default: %(default)s)')
    parser.add_argument('--repeats', type=int, default=20, help='timed rounds (default 20)')
    parser.add_argument('--frames', type=int, default=3,
                        help='synthetic frames scored per size (default 3)')


def run(args: argparse.Namespace) -> None:
    """Print the table, or refuse without a GPU."""
    if not hardware.cuda_available():
        raise BackendUnavailableError(
            'endo-depth-bench gpu needs a CUDA device visible to torch; none here. '
            'Use endo-depth-bench models --backends ... on the CPU.')
    run_backends(args, 'cuda')
