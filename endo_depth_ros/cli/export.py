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
from typing import Any

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
                        help='Hugging Face folder, official .pth/.pth.tar, monodepth2 folder '
                             '(encoder.pth + depth.pth) or HF-layout weights file')
    parser.add_argument('--height', type=int, required=True, help='image height (pixels)')
    parser.add_argument('--width', type=int, required=True, help='image width (pixels)')
    parser.add_argument('--out', type=Path, required=True, help='output .onnx file')
    parser.add_argument('--input-resize', choices=('auto', 'official'), default='auto',
                        help='auto: never upsample the camera beyond its short side; '
                             'official: always scale the short side to --input-size '
                             '(default auto, as load())')
    parser.add_argument('--int8', action='store_true',
                        help='write an int8 model: onnxruntime dynamic MatMul quantisation '
                             '(.onnx), or with --calibration an NNCF-calibrated OpenVINO IR '
                             '(.xml + .bin)')
    parser.add_argument('--calibration', type=Path, metavar='BAG',
                        help='bag (or npz folder) whose images calibrate --int8 (OpenVINO/NNCF)')
    parser.add_argument('--calibration-frames', type=int, default=100,
                        help='frames taken evenly from the calibration bag (default 100)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing --out file (never the checkpoint)')
    parser.add_argument('--input-size', type=int, default=0,
                        help='network input size under the family\'s resize rule (default 0: '
                             'the official size, 518 Depth Anything, 384 MiDaS/DPT)')
    parser.add_argument('--max-depth', type=float, default=None,
                        help='metric models: largest output depth in metres (20 indoor, '
                             '80 outdoor official models); default: the checkpoint\'s, '
                             'else 20 with a warning')
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
    from endo_depth_ros.models.registry import FAMILY_MODULES, MODEL_NAMES, load_family_network

    if args.name == 'photometric':
        raise ConfigError("'photometric' is an OpenCV model without a network to export.")
    if args.name not in MODEL_NAMES:
        raise ConfigError(f'Unknown model {args.name!r}; known: {", ".join(MODEL_NAMES[1:])}.')
    if args.input_size != 0 and args.input_size < 14:
        raise ConfigError(f'--input-size must be at least 14 (one ViT patch), got '
                          f'{args.input_size}.')
    from endo_depth_ros.models.video_depth_anything import is_video_name
    check_image_size(args.width, args.height)
    _check_int8_arguments(args)
    inputs = [args.checkpoint, *([args.calibration] if args.calibration else [])]
    prepare_file_output(args.out, overwrite=args.overwrite, inputs=inputs)
    if args.int8 and args.calibration:
        prepare_file_output(args.out.with_suffix('.bin'), overwrite=args.overwrite,
                            inputs=inputs)
    if is_video_name(args.name):
        return _export_video(args)
    if args.name in FAMILY_MODULES:
        if args.max_depth is not None:
            raise ConfigError(f'--max-depth applies to Depth Anything V2 metric models only, '
                              f'not {args.name!r}.')
        network, output_kind = load_family_network(args.name, args.checkpoint,
                                                   input_size=args.input_size or None)
    else:
        network, output_kind = load_network(args.name, args.checkpoint,
                                            max_depth=args.max_depth)
    model = TorchDepthModel(network, name=args.name, output_kind=output_kind, device='cpu',
                            precision='fp32', input_size=args.input_size or None,
                            warmup=False, resize=args.input_resize)
    if args.int8:
        return _export_int8(args, model)
    path = export_onnx(model, args.out, args.height, args.width, opset=args.opset,
                       dynamic_batch=not args.static_batch, precision=args.precision)
    net_h, net_w = model.network_size(args.height, args.width)
    print(f'{PROG}: wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {args.name}, '
          f'{args.height}x{args.width} images, network input {net_h}x{net_w}, '
          f'opset {args.opset}, {args.precision}'
          + ('' if model.max_depth is None else f', max_depth {model.max_depth:g} m'))
    if not args.no_verify:
        rgb = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), np.uint8)
        reference = model.infer(rgb)
        exported = OnnxDepthModel(path, name=args.name, device='cpu').infer(rgb)
        scale = float(np.abs(reference).max()) or 1.0
        error = float(np.abs(exported - reference).max()) / scale
        print(f'{PROG}: onnxruntime vs torch max relative difference {error:.2e}')
    return 0


def _export_video(args: argparse.Namespace) -> int:
    """A video model's streaming step (image + cached states in, depth + states out)."""
    from endo_depth_ros.models import load
    from endo_depth_ros.models.video_depth_anything import (
        OnnxVideoDepthModel,
        VideoDepthModel,
        export_video_onnx,
    )

    if args.precision != 'fp32' or args.static_batch or args.max_depth is not None:
        raise ConfigError('Video models export in fp32, batch 1, without --max-depth.')
    model = load(args.name, args.checkpoint, device='cpu', precision='fp32',
                 input_size=args.input_size)
    if not isinstance(model, VideoDepthModel):
        raise ConfigError(f'{args.name} did not load as a video model.')
    path = export_video_onnx(model, args.out, args.height, args.width, opset=args.opset)
    net_h, net_w = model.network_size(args.height, args.width)
    print(f'{PROG}: wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {args.name} streaming '
          f'step, {args.height}x{args.width} images, network input {net_h}x{net_w}, '
          f'opset {args.opset}')
    if not args.no_verify:
        rng = np.random.default_rng(0)
        exported = OnnxVideoDepthModel(path, name=args.name)
        error = 0.0
        for _ in range(3):  # the first frame, then cached steps
            rgb = rng.integers(0, 256, (args.height, args.width, 3), np.uint8)
            reference = model.infer(rgb)
            scale = float(np.abs(reference).max()) or 1.0
            error = max(error, float(np.abs(exported.infer(rgb) - reference).max()) / scale)
        print(f'{PROG}: onnxruntime vs torch (3 streaming steps) max relative difference '
              f'{error:.2e}')
    return 0


def _check_int8_arguments(args: argparse.Namespace) -> None:
    if args.calibration is not None and not args.int8:
        raise ConfigError('--calibration calibrates an --int8 export; add --int8.')
    if not args.int8:
        return
    if args.precision != 'fp32':
        raise ConfigError('--int8 quantises the fp32 graph; drop --precision.')
    want = '.xml' if args.calibration else '.onnx'
    if args.out.suffix != want:
        kind = 'an OpenVINO IR (.xml)' if args.calibration else 'an ONNX file (.onnx)'
        raise ConfigError(f'--int8{" --calibration" if args.calibration else ""} writes '
                          f'{kind}; got --out {args.out}.')
    if args.calibration is not None and args.calibration_frames < 1:
        raise ConfigError(f'--calibration-frames must be >= 1, got {args.calibration_frames}.')


def _export_int8(args: argparse.Namespace, model: Any) -> int:
    """fp32 ONNX into a temporary folder, then the int8 model at ``args.out``."""
    import tempfile

    from endo_depth_ros.models import load
    from endo_depth_ros.models.onnx_runtime import export_onnx
    from endo_depth_ros.models.quantize import (
        quantize_dynamic_matmul,
        quantize_static_openvino,
    )

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / 'fp32.onnx', args.height, args.width,
                           opset=args.opset, dynamic_batch=not args.static_batch)
        if args.calibration is None:
            path = quantize_dynamic_matmul(fp32, args.out)
            how, backend, frames = 'onnxruntime dynamic MatMul int8', 'onnxruntime', []
        else:
            frames = calibration_frames(args.calibration, args.height, args.width,
                                        args.calibration_frames)
            path, used = quantize_static_openvino(fp32, args.out, frames)
            how, backend = f'OpenVINO/NNCF int8 calibrated on {used} frames', 'openvino'
    print(f'{PROG}: wrote {path}: {args.name}, {args.height}x{args.width} images, {how}')
    if not args.no_verify:
        rng = np.random.default_rng(0)
        checks = frames[:4] or [rng.integers(0, 256, (args.height, args.width, 3), np.uint8)]
        quantized = load(args.name, path, backend=backend, device='cpu')
        errors = []
        for rgb in checks:
            reference = model.infer(rgb)
            errors.append(float(np.linalg.norm(quantized.infer(rgb) - reference)
                                / max(float(np.linalg.norm(reference)), 1e-12)))
        print(f'{PROG}: int8 vs torch fp32 relative L2 error {np.mean(errors):.2e} '
              f'({len(checks)} frame(s))')
    return 0


def calibration_frames(bag: Path, height: int, width: int, count: int) -> list[np.ndarray]:
    """``count`` images spread evenly over a recording, resized to ``height x width``.

    Raises:
        BagError: unreadable recording; ConfigError: it has no images.
    """
    import cv2

    from endo_depth_ros.bags import read_frames

    # Bounded memory: keep every stride-th image; when 2 * count are held, drop every
    # second one and double the stride, so the kept ones stay spread over the recording.
    images: list[np.ndarray] = []
    stride = 1
    for index, frame in enumerate(read_frames(bag)):
        if index % stride == 0:
            images.append(frame.rgb)
            if len(images) >= 2 * count:
                images, stride = images[::2], stride * 2
    if not images:
        raise ConfigError(f'{bag} has no images to calibrate with.')
    picks = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).round())
    out = []
    for i in picks.astype(int):
        rgb = images[i]
        if rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(rgb))
    return out


if __name__ == '__main__':
    sys.exit(main())
