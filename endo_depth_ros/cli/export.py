"""``endo-depth-export``: export a depth network to ONNX for one camera image size.

Example::

    endo-depth-export dav2-s --checkpoint depth_anything_v2_vits.pth \\
        --height 480 --width 640 --out dav2s_480x640.onnx
    # then: models.load('dav2-s', 'dav2s_480x640.onnx', backend='onnxruntime')

The graph contains resizing and normalisation and is valid for ``--height x --width``
images only (the exporter bakes sizes in; the model refuses other sizes). After
writing, the export is checked against PyTorch on a random image (``--no-verify``
skips this).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
import sys

import numpy as np

from endo_depth_ros.cli.common import check_image_size, run_cli
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.outputs import prepare_file_output

PROG = 'endo-depth-export'


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    from endo_depth_ros.models.onnx_runtime import DEFAULT_OPSET
    from endo_depth_ros.models.registry import MODEL_NAMES

    parser = argparse.ArgumentParser(
        prog=PROG, description='Export a depth network to ONNX for a fixed image size.')
    parser.add_argument('name', help='model name: ' + ', '.join(
        n for n in MODEL_NAMES if n != 'photometric'))
    parser.add_argument('--checkpoint', type=Path, required=True,
                        help='Hugging Face folder, official .pth or HF-layout weights file')
    parser.add_argument('--height', type=int, required=True, help='image height (pixels)')
    parser.add_argument('--width', type=int, required=True, help='image width (pixels)')
    parser.add_argument('--out', type=Path, required=True, help='output .onnx file')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing --out file (never the checkpoint)')
    parser.add_argument('--input-size', type=int, default=518,
                        help='short side of the network input (default 518)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset (default {DEFAULT_OPSET})')
    parser.add_argument('--precision', choices=('fp32', 'fp16'), default='fp32',
                        help='graph precision (fp16: for TensorRT >= 11 fp16 engines)')
    parser.add_argument('--static-batch', action='store_true',
                        help='fix the batch size to 1 instead of leaving it dynamic')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip the onnxruntime-vs-torch check after export')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code."""
    return run_cli(PROG, build_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    from endo_depth_ros.models.depth_anything import TorchDepthModel, load_network
    from endo_depth_ros.models.onnx_runtime import OnnxDepthModel, export_onnx
    from endo_depth_ros.models.registry import MODEL_NAMES

    if args.name == 'photometric':
        raise ConfigError("'photometric' is an OpenCV model without a network to export.")
    if args.name not in MODEL_NAMES:
        raise ConfigError(f'Unknown model {args.name!r}; known: {", ".join(MODEL_NAMES[1:])}.')
    if args.input_size < 14:
        raise ConfigError(f'--input-size must be at least 14 (one ViT patch), got '
                          f'{args.input_size}.')
    check_image_size(args.width, args.height)
    prepare_file_output(args.out, overwrite=args.overwrite, inputs=[args.checkpoint])
    network, output_kind = load_network(args.name, args.checkpoint)
    model = TorchDepthModel(network, name=args.name, output_kind=output_kind, device='cpu',
                            precision='fp32', input_size=args.input_size, warmup=False)
    path = export_onnx(model, args.out, args.height, args.width, opset=args.opset,
                       dynamic_batch=not args.static_batch, precision=args.precision)
    net_h, net_w = model.network_size(args.height, args.width)
    print(f'{PROG}: wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {args.name}, '
          f'{args.height}x{args.width} images, network input {net_h}x{net_w}, '
          f'opset {args.opset}, {args.precision}')
    if not args.no_verify:
        rgb = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), np.uint8)
        reference = model.infer(rgb)
        exported = OnnxDepthModel(path, name=args.name, device='cpu').infer(rgb)
        scale = float(np.abs(reference).max()) or 1.0
        error = float(np.abs(exported - reference).max()) / scale
        print(f'{PROG}: onnxruntime vs torch max relative difference {error:.2e}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
