"""Backend comparison of one network: speed, accuracy against fp32, distance to the roofline.

Used by ``endo-depth-bench models --backends ...`` (CPU variants) and
``endo-depth-bench gpu`` (CUDA variants). For each image size:

1. render the project's own frames (``endo_depth_ros.synth``, the size of the camera);
2. build every variant from one random-weight network (timing does not depend on the
   weights; none can be downloaded here): exported to ONNX once per size, int8 variants
   quantised from that export (NNCF calibrated on other synthetic frames);
3. accuracy: relative L2 and Spearman rank correlation of each variant's output against
   torch fp32 on the frames (mean over frames);
4. speed: rounds that time every variant once per round, interleaved, so load changes
   on a shared machine hit all variants alike; the median per variant is reported and
   divided by torch fp32's median of the same run;
5. roofline: the model's FLOPs (``FlopCounterMode`` plus the attention matmuls it does
   not see on the CPU) divided by the machine's measured matmul throughput in fp32 and
   bf16 (``matmul_throughput``) is the fastest a frame could possibly run; the table
   gives the fraction of that each variant reaches. On a shared machine both sides are
   best cases of the same run: the peak is re-measured in every round (its maximum is
   kept) and divided into the variant's fastest round (``best ms``), so a busy machine
   lowers neither side alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from endo_depth_ros.errors import BackendUnavailableError, ConfigError
from endo_depth_ros.models import hardware
from endo_depth_ros.models.base import DepthModel

#: Variants of ``endo-depth-bench models --backends`` (CPU).
CPU_VARIANTS: dict[str, str] = {
    'torch': 'torch fp32 eager (the reference)',
    'torch-bf16': 'torch bf16 autocast, channels_last',
    'torch-compile': 'torch.compile fp32 (freezing)',
    'torch-compile-bf16': 'torch.compile + bf16 autocast (freezing)',
    'onnxruntime': 'onnxruntime fp32 (CPU provider)',
    'ort-int8': 'onnxruntime, MatMuls dynamically quantised to int8',
    'openvino': 'OpenVINO, f32 precision hint',
    'openvino-bf16': 'OpenVINO, bf16 precision hint',
    'openvino-int8': 'OpenVINO, NNCF int8 calibrated on synthetic frames',
    'auto': "models.load() defaults (backend and precision 'auto')",
}
#: Variants of ``endo-depth-bench gpu`` (CUDA).
GPU_VARIANTS: dict[str, str] = {
    'torch': 'torch fp32 eager on CUDA (the reference)',
    'torch-fp16': 'torch fp16 autocast, channels_last, pinned host buffer',
    'torch-fp16-graphs': "torch.compile(mode='reduce-overhead') fp16: CUDA graphs",
    'tensorrt': 'TensorRT engine (fp16) from the ONNX export',
    'auto': "models.load() defaults (backend and precision 'auto')",
}
#: Calibration frames of the openvino-int8 variant.
CALIBRATION_FRAMES = 8


@dataclass
class Variant:
    """One way of running the network, built for one image size."""

    name: str
    model: DepthModel
    build_s: float
    precision: str
    times_ms: list[float]


def matmul_throughput(dtype_name: str, *, device: str = 'cpu', n: int = 2048,
                      seconds: float = 1.5, warmup_s: float = 1.5) -> float:
    """Sustained square-matmul throughput of this machine, GFLOP/s (best of short runs).

    Args:
        dtype_name: ``'fp32'``, ``'bf16'`` or ``'fp16'``.
        device: torch device.
        n: matrix side; ``2 n^3`` FLOPs per product.
        seconds: measuring time budget.
        warmup_s: time spent on unmeasured products first.
    """
    import torch

    dtype = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}[dtype_name]
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    # Unmeasured products first: the AMX/AVX-512 units ramp up over about a second
    # (timing from the first product reported a third of the bf16 peak).
    warm_until = time.perf_counter() + warmup_s
    while time.perf_counter() < warm_until:
        torch.mm(a, b)
        sync()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def count_flops(model: Any, rgb: np.ndarray) -> tuple[float, float, np.ndarray]:
    """FLOPs of one torch fp32 inference of ``rgb``, and that inference's output.

    Returns:
        ``(total_flops, attention_flops, output)``: the attention matmuls
        (``4 T^2 D`` per layer for ``T`` tokens of width ``D``) are added unless the
        counter saw a scaled-dot-product-attention op itself.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        out = model.infer(rgb)
    counted = float(counter.get_total_flops())
    seen = any('scaled_dot_product' in str(op) for op in counter.get_flop_counts().get(
        'Global', {}))
    config = model.net.network.config
    backbone = getattr(config, 'backbone_config', None) or config
    net_h, net_w = model.network_size(*rgb.shape[:2])
    patch = int(getattr(backbone, 'patch_size', 14))
    tokens = (net_h // patch) * (net_w // patch) + 1
    attention = 4.0 * tokens ** 2 * backbone.hidden_size * backbone.num_hidden_layers
    return counted + (0.0 if seen else attention), attention, out


def synthetic_frames(height: int, width: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` frames of a synthetic endoscope flight at the camera size."""
    from endo_depth_ros.synth import SynthConfig, render_sequence

    config = SynthConfig(width=width, height=height, frames=count * 4, seed=seed)
    return [f.rgb for f in list(render_sequence(config))[::4][:count]]


def rel_l2(out: np.ndarray, reference: np.ndarray) -> float:
    """``||out - reference|| / ||reference||`` over finite pixels."""
    valid = np.isfinite(out) & np.isfinite(reference)
    return float(np.linalg.norm(out[valid] - reference[valid])
                 / max(float(np.linalg.norm(reference[valid])), 1e-12))


def spearman(out: np.ndarray, reference: np.ndarray) -> float:
    """Spearman rank correlation of two maps (on a fixed pixel subsample)."""
    from scipy.stats import spearmanr

    a, b = out.ravel()[::7], reference.ravel()[::7]
    valid = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[valid], b[valid]).statistic)


def compare(
    name: str,
    sizes: Sequence[tuple[int, int]],
    variants: Sequence[str],
    *,
    device: str,
    repeats: int,
    frames: int,
    build: Callable[..., DepthModel],
    peaks: dict[str, float] | None = None,
    report: Callable[[list[dict[str, object]]], None] | None = None,
) -> tuple[list[dict[str, object]], dict[str, float]]:
    """Run the comparison (see module doc); return table rows and the peak throughputs.

    Args:
        name: registry name of the network (``dav2-s``).
        sizes: ``(width, height)`` image sizes.
        variants: variant names; the first must be the reference ``'torch'``.
        device: ``'cpu'`` or ``'cuda'``.
        repeats: timed rounds.
        frames: synthetic frames for accuracy.
        build: ``build(variant, torch_model, onnx_path, tmp_dir, size) -> DepthModel``.
        peaks: measured GFLOP/s per precision (None: measured here).
        report: called with each size's rows as soon as they are measured.
    """
    import torch

    from endo_depth_ros.bench import random_weights_model
    from endo_depth_ros.models.onnx_runtime import export_onnx

    if not variants or variants[0] != 'torch':
        variants = ['torch', *[v for v in variants if v != 'torch']]
    if peaks is None:
        precisions = ('fp32', 'fp16') if device.startswith('cuda') else ('fp32', 'bf16')
        peaks = {p: matmul_throughput(p, device=device) for p in precisions}
    all_rows: list[dict[str, object]] = []
    for width, height in sizes:
        rows: list[dict[str, object]] = []
        images = synthetic_frames(height, width, frames, seed=0)
        # The same weights every run: the compiled-model caches then serve reruns.
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            reference_model = random_weights_model(name, min(height, width), device=device)
            flops, attention, _ = count_flops(reference_model, images[0])
            references = [reference_model.infer(rgb) for rgb in images]
            onnx_path: Path | None = None
            built: list[Variant] = []
            for variant in variants:
                if variant != 'torch' and onnx_path is None and _needs_onnx(variant):
                    onnx_path = export_onnx(reference_model, Path(tmp) / 'model.onnx',
                                            height, width)
                start = time.perf_counter()
                try:
                    model = (reference_model if variant == 'torch' else
                             build(variant, reference_model, onnx_path, Path(tmp),
                                   (height, width)))
                    model.infer(images[0])  # compiles / warms up
                except (BackendUnavailableError, ConfigError) as err:
                    rows.append({'variant': variant, 'image (WxH)': f'{width}x{height}',
                                 'ms/frame': 'n/a', 'notes': str(err)[:120]})
                    continue
                built.append(Variant(variant, model, time.perf_counter() - start,
                                     model.precision, []))
            accuracy = {
                v.name: [(rel_l2(out, ref), spearman(out, ref)) for out, ref in zip(
                    (v.model.infer(rgb) for rgb in images), references, strict=True)]
                for v in built}
            for round_index in range(repeats):
                rgb = images[round_index % len(images)]
                for precision in peaks:  # the peak under the same load as the variants
                    peaks[precision] = max(peaks[precision], matmul_throughput(
                        precision, device=device, seconds=0.2, warmup_s=0.3))
                for v in built:
                    start = time.perf_counter()
                    v.model.infer(rgb)
                    v.times_ms.append((time.perf_counter() - start) * 1e3)
        base = statistics.median(built[0].times_ms)
        net_h, net_w = built[0].model.network_size(height, width)
        for v in built:
            ms = statistics.median(v.times_ms)
            best = min(v.times_ms)
            errors = np.asarray(accuracy[v.name])
            row: dict[str, object] = {
                'variant': v.name, 'image (WxH)': f'{width}x{height}',
                'network (WxH)': f'{net_w}x{net_h}', 'precision': v.precision,
                'ms/frame': ms, 'best ms': best, 'vs torch fp32': ms / base,
                'rel. L2 vs fp32': f'{errors[:, 0].mean():.1e}',
                'spearman vs fp32': f'{errors[:, 1].mean():.5f}',
            }
            for precision, peak in peaks.items():
                roofline_ms = flops / (peak * 1e9) * 1e3
                row[f'% {precision} roofline'] = f'{100 * roofline_ms / best:.0f}'
            row['GFLOP'] = f'{flops / 1e9:.3g} ({attention / 1e9:.2g} attn)'
            row['build s'] = f'{v.build_s:.0f}'
            selection = getattr(v.model, 'selection', '')
            notes = [f'{v.model.backend} {v.model.precision}' if selection else '']
            compile_s = getattr(getattr(v.model, 'runner', None), 'compile_seconds', 0.0)
            if compile_s:
                notes.append(f'torch.compile warm-up {compile_s:.0f} s')
            row['notes'] = '; '.join(n for n in notes if n)
            rows.append(row)
        if report is not None:
            report(rows)
        all_rows.extend(rows)
    return all_rows, peaks


def _needs_onnx(variant: str) -> bool:
    return variant in ('onnxruntime', 'ort-int8', 'openvino', 'openvino-bf16',
                       'openvino-int8', 'tensorrt')


def build_cpu_variant(variant: str, reference: Any, onnx_path: Path | None, tmp: Path,
                      size: tuple[int, int]) -> DepthModel:
    """A CPU variant of ``CPU_VARIANTS`` built from the reference torch model."""
    from endo_depth_ros.models.depth_anything import TorchDepthModel
    from endo_depth_ros.models.onnx_runtime import OnnxDepthModel

    name = reference.name
    network = reference.net.network
    input_size = reference.net.input_size
    if variant in ('torch-bf16', 'torch-compile', 'torch-compile-bf16'):
        precision = 'fp32' if variant == 'torch-compile' else 'bf16'
        return TorchDepthModel(network, name=name, output_kind=reference.output_kind,
                               device='cpu', precision=precision, input_size=input_size,
                               compile='compile' in variant, warmup=False)
    if variant == 'auto':
        import torch

        from endo_depth_ros.models import load
        from endo_depth_ros.models.depth_anything import hf_to_official

        checkpoint = tmp / f'{name}.pth'
        if not checkpoint.exists():
            torch.save(hf_to_official(network.state_dict()), checkpoint)
        return load(name, checkpoint, input_size=input_size, input_resize='official')
    assert onnx_path is not None
    if variant == 'onnxruntime':
        return OnnxDepthModel(onnx_path, name=name, device='cpu', precision='fp32')
    if variant == 'ort-int8':
        from endo_depth_ros.models.quantize import quantize_dynamic_matmul

        path = quantize_dynamic_matmul(onnx_path, tmp / 'int8.onnx')
        return OnnxDepthModel(path, name=name, device='cpu')
    from endo_depth_ros.models.openvino import OpenVinoDepthModel

    if variant in ('openvino', 'openvino-bf16'):
        return OpenVinoDepthModel.from_file(
            onnx_path, name=name, precision='bf16' if variant == 'openvino-bf16' else 'fp32')
    if variant == 'openvino-int8':
        from endo_depth_ros.models.quantize import quantize_static_openvino

        height, width = size
        calibration = synthetic_frames(height, width, CALIBRATION_FRAMES, seed=1)
        path, _ = quantize_static_openvino(onnx_path, tmp / 'int8.xml', calibration)
        return OpenVinoDepthModel.from_file(path, name=name)
    raise ConfigError(f'Unknown variant {variant!r}; known: {", ".join(CPU_VARIANTS)}.')


def build_gpu_variant(variant: str, reference: Any, onnx_path: Path | None, tmp: Path,
                      size: tuple[int, int]) -> DepthModel:
    """A CUDA variant of ``GPU_VARIANTS`` built from the reference torch model."""
    from endo_depth_ros.models.depth_anything import TorchDepthModel

    name = reference.name
    network = reference.net.network
    if variant in ('torch-fp16', 'torch-fp16-graphs'):
        return TorchDepthModel(network, name=name, output_kind=reference.output_kind,
                               device=reference.device, precision='fp16',
                               input_size=reference.net.input_size,
                               compile=variant == 'torch-fp16-graphs', warmup=False)
    if variant == 'tensorrt':
        from endo_depth_ros.models.tensorrt import TensorRTDepthModel

        assert onnx_path is not None
        return TensorRTDepthModel(onnx_path, name=name, device=reference.device,
                                  precision='fp16', cache_dir=tmp / 'engines')
    if variant == 'auto':
        return build_cpu_variant('auto', reference, onnx_path, tmp, size)
    raise ConfigError(f'Unknown variant {variant!r}; known: {", ".join(GPU_VARIANTS)}.')


def describe_machine(peaks: dict[str, float], device: str) -> str:
    """One line naming the machine and its measured matmul throughputs."""
    if device.startswith('cuda'):
        import torch

        what = torch.cuda.get_device_name(device)
    else:
        what = f'{hardware.cpu_name()}, bf16 native: {hardware.cpu_supports_bf16()}'
    measured = ', '.join(f'{p} {g:.0f} GFLOP/s' for p, g in peaks.items())
    return f'{what}; best measured 2048^2 matmul: {measured}'
