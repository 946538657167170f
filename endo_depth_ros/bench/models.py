"""``endo-depth-bench models``: ms/frame of each depth backend, and the photometric accuracy.

Table 1 times ``DepthModel.infer`` per image size (WIDTHxHEIGHT; the network input
is the image size itself, ``input_size = min(H, W)``): the photometric prior,
Depth Anything V2-S in PyTorch fp32, and the same network exported to ONNX and run
by onnxruntime (CPU provider here). DAv2-S has random weights (none can be
downloaded): timing does not depend on them. The onnxruntime row also reports its
largest deviation from torch. ``--torch-models`` adds PyTorch rows of further Depth
Anything/DPT networks (default: the original MiDaS v3 DPT-Large, ``midas-dpt-large``;
the other Depth Anything names cost the same as their size's DAv2). ``--families`` adds
torch rows for the other network families (random weights written in each family's
official checkpoint layout and read back by ``models.load``), each in torch fp32 and
with ``load()``'s defaults (``auto``: OpenVINO bf16 here, checked per size against fp32),
timed interleaved: monodepth2 (ResNet-18,
trained at 256x320, so its network input is 256x320 at every image size), SC-SfMLearner
(ResNet-18, short side = image short side rounded to 32) and EndoDAC (ViT-B, 256x320
training size).

Table 2 (unless ``--skip-video``) times Video Depth Anything ViT-S (random weights) at
the same sizes: a streaming step (``infer``: the backbone on one frame, the temporal
head attending to 31 cached frames) and window mode's cost per output frame
(``infer_video`` over ``--video-frames`` frames: 32-frame windows with a stride of 22,
so each output frame costs about 32/22 backbone passes), each against DAv2-S per
frame timed in the same run: the ratios are the temporal head's cost.

Table 3 scores the photometric prior on synthetic sequences (``endo_depth_ros.synth``):
Spearman rank correlation of the predicted and true depth, AbsRel and δ<1.25 after
per-frame median scaling, and the AbsRel of a constant prediction (the median true
depth) as the baseline it must beat.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
import tempfile

import numpy as np

from endo_depth_ros import models
from endo_depth_ros.bench import (
    add_sizes_argument,
    median_ms,
    parse_sizes,
    print_table,
    random_weights_model,
)
from endo_depth_ros.errors import ConfigError
from endo_depth_ros.models.base import DepthModel

#: Image sizes (WIDTHxHEIGHT) of the timing table, and of the ``--backends`` comparison.
DEFAULT_SIZES = '350x266,518x518'
BACKEND_SIZES = '518x518,686x518'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the models benchmark."""
    add_sizes_argument(parser, DEFAULT_SIZES)
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed repeats per network measurement (default: %(default)s)')
    parser.add_argument('--skip-networks', action='store_true',
                        help='time the photometric prior only (no torch/onnxruntime DAv2-S)')
    parser.add_argument('--torch-models', default='midas-dpt-large',
                        help='comma-separated network names also timed in PyTorch '
                             "(random weights; '' for none; default: %(default)s)")
    parser.add_argument('--families', default='monodepth2,sc-sfmlearner,endodac',
                        help='comma-separated extra network families to time in torch '
                             '(monodepth2, af-sfmlearner, sc-sfmlearner, endodac; empty: '
                             'none; default: %(default)s)')
    parser.add_argument('--skip-video', action='store_true',
                        help='no Video Depth Anything table')
    parser.add_argument('--video-frames', type=int, default=44,
                        help='frames of the window-mode clip (default: %(default)s, two '
                             'windows)')
    parser.add_argument('--backends', metavar='LIST',
                        help='compare these variants of --model instead (comma-separated: '
                             'torch,torch-bf16,torch-compile,torch-compile-bf16,onnxruntime,'
                             'ort-int8,openvino,openvino-bf16,openvino-bf16-pinned,'
                             'openvino-bf16-onnx,'
                             'openvino-bf16-direct,openvino-int8,auto); sizes default to '
                             '518x518,686x518')
    parser.add_argument('--model', default='dav2-s',
                        help='network of the --backends comparison (default: %(default)s)')
    parser.add_argument('--frames', type=int, default=3,
                        help='synthetic frames scored per size in --backends (default 3)')
    parser.add_argument('--accuracy-frames', type=int, default=24,
                        help='frames per synthetic sequence for the accuracy table '
                             '(0 skips it; default: %(default)s)')


def run(args: argparse.Namespace) -> None:
    """Print the timing table and the photometric accuracy table (or the backend table)."""
    if args.repeats < 1:
        raise ConfigError(f'--repeats must be >= 1, got {args.repeats}.')
    if args.backends:
        run_backends(args, 'cpu')
        return
    sizes = parse_sizes(args.sizes, min_side=14)
    rows: list[dict[str, object]] = []
    photometric = models.load('photometric')
    families = [] if args.skip_networks else [f for f in args.families.split(',') if f]
    unknown = [f for f in families if f not in _FAMILY_CHECKPOINTS]
    if unknown:
        raise ConfigError(f'--families: unknown {", ".join(unknown)}; expected some of '
                          f'{", ".join(_FAMILY_CHECKPOINTS)}.')
    rng = np.random.default_rng(0)
    tmp = tempfile.TemporaryDirectory()
    for width, height in sizes:
        rgb = rng.integers(0, 256, (height, width, 3), np.uint8)
        ms = median_ms(partial(photometric.infer, rgb), repeats=max(30, args.repeats))
        rows.append(_row(photometric, height, width, ms))
        if not args.skip_networks:
            rows.extend(_network_rows(rgb, args.repeats))
            for name in filter(None, args.torch_models.split(',')):
                model = random_weights_model(name.strip(), min(height, width))
                ms = median_ms(partial(model.infer, rgb), repeats=args.repeats, warmup=1)
                rows.append(_row(model, height, width, ms))
        for family in families:
            rows.extend(family_rows(family, Path(tmp.name), rgb, args.repeats))
    tmp.cleanup()
    print_table('Depth models on this CPU (ms/frame, median)', rows)
    if not args.skip_networks and not args.skip_video:
        if args.video_frames < 1:
            raise ConfigError(f'--video-frames must be >= 1, got {args.video_frames}.')
        video_rows = []
        for width, height in sizes:
            rgb = rng.integers(0, 256, (height, width, 3), np.uint8)
            video_rows.extend(video_model_rows(rgb, args.repeats, args.video_frames))
        print_table('Video Depth Anything ViT-S vs DAv2-S per frame (ms/frame, median)',
                    video_rows)
    if args.accuracy_frames > 0:
        print_table('Photometric prior on synthetic sequences (per-frame median scaling)',
                    photometric_accuracy(frames=args.accuracy_frames))


def run_backends(args: argparse.Namespace, device: str) -> None:
    """The backend comparison table of ``endo_depth_ros.bench.backends`` for ``--model``."""
    from endo_depth_ros.bench import backends

    known = backends.GPU_VARIANTS if device == 'cuda' else backends.CPU_VARIANTS
    variants = [v.strip() for v in args.backends.split(',') if v.strip()]
    unknown = [v for v in variants if v not in known]
    if unknown:
        raise ConfigError(f'Unknown variant(s) {", ".join(unknown)}; known: {", ".join(known)}.')
    if args.model not in models.MODEL_NAMES or args.model == 'photometric':
        raise ConfigError(f'--model must be a network name, got {args.model!r}.')
    if args.frames < 1:
        raise ConfigError(f'--frames must be >= 1, got {args.frames}.')
    sizes_text = BACKEND_SIZES if args.sizes == DEFAULT_SIZES else args.sizes
    sizes = parse_sizes(sizes_text, min_side=14)
    build = backends.build_gpu_variant if device == 'cuda' else backends.build_cpu_variant
    title = (f'{args.model} (random weights) per backend, uint8 in -> depth out, median '
             f'and best of {args.repeats} interleaved rounds; '
             f'{backends.describe_machine(device)}')
    backends.compare(args.model, sizes, variants, device=device, repeats=args.repeats,
                     frames=args.frames, build=build,
                     report=lambda rows, peaks: print_table(f'{title}; {peaks}', rows))
    print('\nVariants: ' + '; '.join(f'{v}: {known[v]}' for v in variants if v in known))


def _row(model: DepthModel, height: int, width: int, ms: float,
         **extra: object) -> dict[str, object]:
    net_h, net_w = model.network_size(height, width)
    row: dict[str, object] = {
        'model': model.name, 'backend': model.backend, 'precision': model.precision,
        'image (WxH)': f'{width}x{height}', 'network input (WxH)': f'{net_w}x{net_h}',
        'ms/frame': ms, 'frames/s': 1000.0 / ms, 'vs torch': '', 'max rel. diff': '',
        'rel. L2 (centred)': '', 'best ms': '',
    }
    row.update(extra)
    return row


def _network_rows(rgb: np.ndarray, repeats: int) -> list[dict[str, object]]:
    """DAv2-S (random weights) in torch and onnxruntime at this image's size."""
    from endo_depth_ros.models.onnx_runtime import OnnxDepthModel, export_onnx

    height, width = rgb.shape[:2]
    torch_model = random_weights_model('dav2-s', min(height, width))
    torch_ms = median_ms(lambda: torch_model.infer(rgb), repeats=repeats, warmup=1)
    reference = torch_model.infer(rgb)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(torch_model, Path(tmp) / 'dav2s.onnx', height, width)
        ort_model = OnnxDepthModel(path, name='dav2-s', device='cpu')
    ort_ms = median_ms(lambda: ort_model.infer(rgb), repeats=repeats, warmup=1)
    deviation = float(np.abs(ort_model.infer(rgb) - reference).max()
                      / max(float(np.abs(reference).max()), 1e-12))
    return [
        _row(torch_model, height, width, torch_ms, **{'vs torch': 1.0}),
        _row(ort_model, height, width, ort_ms,
             **{'vs torch': ort_ms / torch_ms, 'max rel. diff': f'{deviation:.1e}'}),
    ]


def _monodepth2_folder(folder: Path, variant: str) -> Path:
    import torch

    from endo_depth_ros.models import monodepth2

    net = monodepth2.SelfSupervisedDepthNet(18, monodepth2.VARIANTS[variant])
    encoder, depth = monodepth2.monodepth2_state_dicts(net, 256, 320)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(encoder, folder / 'encoder.pth')
    torch.save(depth, folder / 'depth.pth')
    return folder


def _sc_sfmlearner_file(folder: Path) -> Path:
    import torch

    from endo_depth_ros.models import monodepth2

    net = monodepth2.SelfSupervisedDepthNet(18, monodepth2.VARIANTS['sc-sfmlearner'])
    path = folder / 'dispnet_model_best.pth.tar'
    torch.save(monodepth2.sc_sfmlearner_checkpoint(net), path)
    return path


def _endodac_file(folder: Path) -> Path:
    import torch

    from endo_depth_ros.models import endodac

    network = endodac.build_endodac(hidden_size=768, features=128,
                                    out_channels=(96, 192, 384, 768))
    path = folder / 'depth_model.pth'
    torch.save(endodac.hf_to_official(network), path)
    return path


_FAMILY_CHECKPOINTS = {
    'monodepth2': lambda folder: _monodepth2_folder(folder / 'monodepth2', 'monodepth2'),
    'af-sfmlearner': lambda folder: _monodepth2_folder(folder / 'af', 'af-sfmlearner'),
    'sc-sfmlearner': _sc_sfmlearner_file,
    'endodac': _endodac_file,
}


def random_family_model(name: str, folder: Path, input_size: int, *,
                        backend: str = 'torch', precision: str = 'fp32') -> DepthModel:
    """``name`` with random weights in its official layout under ``folder``, loaded (CPU)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = _FAMILY_CHECKPOINTS[name](folder)
    return _load_family(name, path, input_size, backend, precision)


def _load_family(name: str, path: Path, input_size: int, backend: str,
                 precision: str) -> DepthModel:
    return models.load(name, path, device='cpu', precision=precision, backend=backend,
                       input_size=input_size)


def family_rows(name: str, folder: Path, rgb: np.ndarray,
                repeats: int) -> list[dict[str, object]]:
    """Torch fp32 and ``load()``'s defaults (``auto``) for one family, timed interleaved.

    The same random weights serve both; ``max rel. diff`` and ``rel. L2 (centred)`` compare
    the auto output with torch fp32: the centred error divides by the variation of the
    torch map around its mean, so a random network whose output is nearly constant
    (sigmoid heads) cannot hide an error behind its offset.
    """
    import statistics
    import time

    height, width = rgb.shape[:2]
    (folder / name).mkdir(parents=True, exist_ok=True)
    path = _FAMILY_CHECKPOINTS[name](folder / name)  # one set of weights for both rows
    torch_model = _load_family(name, path, min(height, width), 'torch', 'fp32')
    auto_model = _load_family(name, path, min(height, width), 'auto', 'auto')
    reference = torch_model.infer(rgb)
    out = auto_model.infer(rgb)  # compiles this size (checked against fp32 if bf16)
    times: dict[str, list[float]] = {'torch': [], 'auto': []}
    for _ in range(max(repeats, 3)):
        for key, model in (('torch', torch_model), ('auto', auto_model)):
            start = time.perf_counter()
            model.infer(rgb)
            times[key].append((time.perf_counter() - start) * 1e3)
    torch_ms, auto_ms = (statistics.median(times[k]) for k in ('torch', 'auto'))
    deviation = float(np.abs(out - reference).max() / max(float(np.abs(reference).max()), 1e-12))
    centred = float(np.linalg.norm(out - reference)
                    / max(float(np.linalg.norm(reference - reference.mean())), 1e-12))
    return [
        _row(torch_model, height, width, torch_ms, **{'vs torch': 1.0}),
        _row(auto_model, height, width, auto_ms, **{
            'vs torch': auto_ms / torch_ms, 'max rel. diff': f'{deviation:.1e}',
            'rel. L2 (centred)': f'{centred:.1e}', 'best ms': min(times['auto'])}),
    ]


def video_model_rows(
    rgb: np.ndarray, repeats: int, clip_frames: int,
) -> list[dict[str, object]]:
    """VDA-S streaming and window mode vs DAv2-S per frame (random weights) at one size."""
    from endo_depth_ros.models import video_depth_anything as vda

    height, width = rgb.shape[:2]
    size = min(height, width)
    per_frame = random_weights_model('dav2-s', size)
    dav2_ms = median_ms(lambda: per_frame.infer(rgb), repeats=repeats, warmup=1)
    network = vda.build_video_network(vda.video_config('s'))
    video = vda.VideoDepthModel(network, name='vda-s', output_kind='relative_disparity',
                                device='cpu', precision='fp32', input_size=size)
    for _ in range(3):  # past the first frame: every later step reads 31 cached frames
        video.infer(rgb)
    stream_ms = median_ms(lambda: video.infer(rgb), repeats=repeats, warmup=0)
    clip = np.repeat(rgb[None], clip_frames, axis=0)
    window_ms = median_ms(lambda: video.infer_video(clip), repeats=1, warmup=0) / clip_frames
    net_h, net_w = video.network_size(height, width)
    common = {'image (WxH)': f'{width}x{height}', 'network input (WxH)': f'{net_w}x{net_h}'}
    return [
        {'model': 'dav2-s', 'mode': 'per frame', **common, 'ms/frame': dav2_ms,
         'vs dav2-s': 1.0},
        {'model': 'vda-s', 'mode': 'stream', **common, 'ms/frame': stream_ms,
         'vs dav2-s': stream_ms / dav2_ms},
        {'model': 'vda-s', 'mode': f'window ({clip_frames} frames)', **common,
         'ms/frame': window_ms, 'vs dav2-s': window_ms / dav2_ms},
    ]


def photometric_accuracy(
    frames: int = 24,
    seeds: Iterable[int] = (0, 1, 2),
    *,
    size: tuple[int, int] = (128, 160),
    stride: int = 4,
    model: DepthModel | None = None,
) -> list[dict[str, object]]:
    """Score a relative-disparity model on synthetic sequences against a constant baseline.

    Two scenes per seed: plain tissue, and tissue with an instrument seen through a
    circular field-of-view mask. Every ``stride``-th frame is scored.

    Args:
        frames: rendered frames per sequence.
        seeds: scene seeds.
        size: (height, width) of the rendered images.
        stride: score every ``stride``-th frame.
        model: model to score (default: the photometric prior).

    Returns:
        One row per sequence and a final ``mean`` row: ``spearman`` (rank correlation of
        1/disparity and true depth), ``abs_rel`` and ``a1`` after per-frame median
        scaling, ``abs_rel constant`` (constant prediction at the median true depth).
    """
    from scipy.stats import spearmanr

    from endo_depth_ros.metrics import align_depth, depth_errors
    from endo_depth_ros.synth import SynthConfig, render_sequence

    model = model if model is not None else models.load('photometric')
    rows: list[dict[str, object]] = []
    for seed in seeds:
        for scene, extra in (('tissue', {}), ('instrument+fov', {'instrument': True,
                                                                   'fov_mask': True})):
            config = SynthConfig(width=size[1], height=size[0], frames=frames, seed=seed,
                                 speed_mm=2.0, **extra)  # type: ignore[arg-type]
            scores: list[Sequence[float]] = []
            for frame in list(render_sequence(config))[::stride]:
                disparity = model.infer(frame.rgb)
                depth = align_depth(disparity, frame.depth, 'median', kind='disparity')
                errors = depth_errors(frame.depth, depth)
                valid = np.isfinite(frame.depth) & np.isfinite(depth)
                constant = np.where(valid, np.median(frame.depth[valid]), np.nan)
                baseline = depth_errors(frame.depth, constant)
                if errors is None or baseline is None:
                    continue
                rho = spearmanr(depth[valid], frame.depth[valid]).statistic
                scores.append((float(rho), errors['abs_rel'], errors['a1'],
                               baseline['abs_rel']))
            mean = np.mean(np.asarray(scores), axis=0)
            rows.append({'sequence': f'seed {seed} {scene}', 'frames': len(scores),
                         'spearman': mean[0], 'abs_rel': mean[1], 'a1': mean[2],
                         'abs_rel constant': mean[3]})
    keys = ('spearman', 'abs_rel', 'a1', 'abs_rel constant')
    overall = {k: float(np.mean([float(r[k]) for r in rows])) for k in keys}  # type: ignore[arg-type]
    rows.append({'sequence': 'mean', 'frames': sum(int(r['frames']) for r in rows),  # type: ignore[call-overload]
                 **overall})
    return rows
