"""Backend comparison of one network: speed, accuracy against fp32, distance to the roofline.

Used by ``endo-depth-bench models --backends ...`` (CPU variants) and
``endo-depth-bench gpu`` (CUDA variants). For each image size:

1. render the project's own frames (``endo_depth_ros.synth``, the size of the camera);
2. build every variant from one random-weight network (timing does not depend on the
   weights; none can be downloaded here): exported to ONNX once per size, int8 variants
   quantised from that export (NNCF calibrated on other synthetic frames);
3. accuracy: relative L2 and Spearman rank correlation of each variant's output against
   torch fp32 on the frames (mean over frames);
4. speed: rounds that time every variant once per round, interleaved (in an order
   rotated every round), so load changes on a shared machine hit all variants alike;
   the median per variant is reported and divided by torch fp32's median of the run;
5. roofline, measured inside the run: before every round the 2048^2 matmul peak
   (fp32 and bf16/fp16) and the rates of the model's own products (its ViT matmul shapes,
   e.g. 1370x384x1536 at 518x518, and its fused attention) are re-measured
   (``measure_round_peak``), because a shared VM's peak moves by 3x within minutes.
   Each round's time is divided into that round's ideal: ``% P peak`` is the model's
   FLOPs (``FlopCounterMode`` plus the attention it misses on the CPU) at the square
   peak, ``% P achievable`` every product at the rate of its own shape: how close the
   variant gets to what these kernels can do on the model's shapes. Medians over rounds,
   the lowest and highest round in brackets; the table title gives the in-run peaks.
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
    'openvino-bf16': 'OpenVINO, bf16 precision hint (graph from the ONNX export)',
    'openvino-bf16-pinned': 'openvino-bf16 with its threads pinned to the cores (the '
                            'OpenVINO LATENCY default)',
    'openvino-bf16-onnx': 'OpenVINO bf16, graph from a static ONNX trace of the torch model',
    'openvino-bf16-direct': 'OpenVINO bf16, graph from openvino.convert_model on the torch '
                            'model (fused attention op)',
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
                      seconds: float = 1.5, warmup_s: float = 1.5,
                      shape: tuple[int, int, int] | None = None) -> float:
    """Sustained matmul throughput of this machine, GFLOP/s (best of short runs).

    Args:
        dtype_name: ``'fp32'``, ``'bf16'`` or ``'fp16'``.
        device: torch device.
        n: side of the square product (``2 n^3`` FLOPs) unless ``shape`` is given.
        seconds: measuring time budget.
        warmup_s: time spent on unmeasured products first.
        shape: ``(m, k, n)``: an ``(m, k) @ (k, n)`` product instead (``2 m k n`` FLOPs),
            e.g. a layer of the model itself.
    """
    import torch

    m, k, n = shape if shape is not None else (n, n, n)
    dtype = _dtype(dtype_name)
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    return _best_rate(lambda: torch.mm(a, b), 2.0 * m * k * n, device, seconds, warmup_s)


def attention_throughput(dtype_name: str, tokens: int, heads: int, head_dim: int, *,
                         device: str = 'cpu', seconds: float = 0.2,
                         warmup_s: float = 0.2) -> float:
    """GFLOP/s of ``scaled_dot_product_attention`` on one image's tokens (``4 T^2 D`` FLOPs).

    The attention of one ViT layer of the model, alone: the achievable rate of that
    part of the network on this machine (torch's fused CPU/CUDA attention kernel).
    """
    import torch

    dtype = _dtype(dtype_name)
    q = torch.randn(1, heads, tokens, head_dim, device=device).to(dtype)

    def attend() -> None:
        with torch.inference_mode():
            torch.nn.functional.scaled_dot_product_attention(q, q, q)

    flops = 4.0 * tokens ** 2 * heads * head_dim
    return _best_rate(attend, flops, device, seconds, warmup_s)


def _dtype(name: str) -> Any:
    import torch

    return {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}[name]


def _best_rate(product: Callable[[], object], flops: float, device: str, seconds: float,
               warmup_s: float) -> float:
    import torch

    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    # Unmeasured products first: the AMX/AVX-512 units ramp up over about a second
    # (timing from the first product reported a third of the bf16 peak).
    warm_until = time.perf_counter() + warmup_s
    while time.perf_counter() < warm_until:
        product()
        sync()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        product()
        sync()
        best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


@dataclass(frozen=True)
class ModelCost:
    """FLOPs of one frame of a ViT depth network, split by the kind of product.

    Attributes:
        total: all FLOPs (``FlopCounterMode`` plus the attention it misses on the CPU).
        attention: ``4 T^2 D`` per layer (``T`` tokens of width ``D``).
        linear: the ViT's fully connected layers: ``2 T D (4 D + 2 M)`` per layer
            (q, k, v, output projection; MLP of width ``M``).
        tokens, hidden, mlp, heads: ``T``, ``D``, ``M`` and the attention heads.
    """

    total: float
    attention: float
    linear: float
    tokens: int
    hidden: int
    mlp: int
    heads: int

    @property
    def other(self) -> float:
        """The rest (patch embedding, DPT neck and head convolutions, resizes)."""
        return max(self.total - self.attention - self.linear, 0.0)

    def linear_shapes(self) -> dict[tuple[int, int, int], float]:
        """``(m, k, n)`` of each ViT product and the FLOPs it accounts for per frame."""
        layers = self.linear / (2.0 * self.tokens * self.hidden * (4 * self.hidden + 2 * self.mlp))
        t, d, m = self.tokens, self.hidden, self.mlp
        return {(t, d, d): 2.0 * t * d * d * 4 * layers,
                (t, d, m): 2.0 * t * d * m * layers,
                (t, m, d): 2.0 * t * m * d * layers}


def count_flops(model: Any, rgb: np.ndarray) -> tuple[ModelCost, np.ndarray]:
    """FLOPs of one torch fp32 inference of ``rgb`` (``ModelCost``), and its output.

    The attention matmuls (``4 T^2 D`` per layer for ``T`` tokens of width ``D``) are
    added unless the counter saw a scaled-dot-product-attention op itself.
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
    hidden, layers = int(backbone.hidden_size), int(backbone.num_hidden_layers)
    mlp = int(getattr(backbone, 'intermediate_size', 0) or
              hidden * float(getattr(backbone, 'mlp_ratio', 4)))
    attention = 4.0 * tokens ** 2 * hidden * layers
    linear = 2.0 * tokens * hidden * (4 * hidden + 2 * mlp) * layers
    cost = ModelCost(total=counted + (0.0 if seen else attention), attention=attention,
                     linear=linear, tokens=tokens, hidden=hidden, mlp=mlp,
                     heads=int(backbone.num_attention_heads))
    return cost, out


@dataclass
class RoundPeak:
    """Throughputs measured just before one round of variants (GFLOP/s).

    Attributes:
        square: the 2048^2 matmul per precision.
        achievable_ms: per precision, the fastest a frame could run if every product of
            the model ran at the rate measured for its own shape this round: ViT layers
            at their ``(T, D, D)``, ``(T, D, M)``, ``(T, M, D)`` matmul rates, attention at
            the fused attention kernel's rate, the rest at the square matmul's.
    """

    square: dict[str, float]
    achievable_ms: dict[str, float]


def measure_round_peak(cost: ModelCost, precisions: Sequence[str], device: str,
                       *, seconds: float = 0.15, warmup_s: float = 0.2) -> RoundPeak:
    """The square-matmul peak and the model-shape floor per precision, now (``RoundPeak``).

    Each rate is the better of torch (oneDNN through OpenMP) and, on the CPU where
    installed, OpenVINO (its own oneDNN through TBB, the default path's runtime): what
    this machine demonstrably does, whichever library gets there; on a busy machine
    the two runtimes degrade differently.
    """
    square: dict[str, float] = {}
    achievable: dict[str, float] = {}
    use_openvino = not device.startswith('cuda') and hardware.openvino_available()

    def best(torch_rate: float, key: tuple[object, ...]) -> float:
        return max(torch_rate, openvino_rate(key, seconds=seconds)) if use_openvino else torch_rate

    for precision in precisions:
        square[precision] = best(
            matmul_throughput(precision, device=device, seconds=seconds, warmup_s=warmup_s),
            ('matmul', precision, 2048, 2048, 2048))
        seconds_per_frame = cost.other / (square[precision] * 1e9)
        for shape, flops in cost.linear_shapes().items():
            rate = best(matmul_throughput(precision, device=device, shape=shape,
                                          seconds=seconds, warmup_s=0.05),
                        ('matmul', precision, *shape))
            seconds_per_frame += flops / (rate * 1e9)
        head_dim = cost.hidden // cost.heads
        rate = best(attention_throughput(precision, cost.tokens, cost.heads, head_dim,
                                         device=device, seconds=seconds, warmup_s=0.05),
                    ('attention', precision, cost.tokens, cost.heads, head_dim))
        seconds_per_frame += cost.attention / (rate * 1e9)
        achievable[precision] = seconds_per_frame * 1e3
    return RoundPeak(square, achievable)


#: Compiled one-op OpenVINO models of ``openvino_rate``, by key.
_OPENVINO_PROBES: dict[tuple[object, ...], tuple[Any, list[np.ndarray], float]] = {}


def openvino_rate(key: tuple[object, ...], *, seconds: float = 0.15) -> float:
    """GFLOP/s of one OpenVINO op on the CPU (best of repeated calls within ``seconds``).

    Args:
        key: ``('matmul', precision, m, k, n)``: ``(m, k)`` input times a constant
            ``(k, n)`` weight (a FullyConnected node, as the model's layers); or
            ``('attention', precision, tokens, heads, head_dim)``: one
            ``ScaledDotProductAttention`` op. Compiled once, then reused.
    """
    if key not in _OPENVINO_PROBES:
        import openvino as ov
        import openvino.opset13 as ops

        rng = np.random.default_rng(0)
        kind, precision = key[0], str(key[1])
        if kind == 'matmul':
            m, k, n = (int(v) for v in key[2:])  # type: ignore[call-overload]
            x = ops.parameter([m, k], ov.Type.f32)
            weight = ops.constant(rng.standard_normal((k, n), np.float32))
            graph = ov.Model([ops.matmul(x, weight, False, False)], [x])
            inputs = [rng.standard_normal((m, k), np.float32)]
            flops = 2.0 * m * k * n
        else:
            tokens, heads, head_dim = (int(v) for v in key[2:])  # type: ignore[call-overload]
            shape = [1, heads, tokens, head_dim]
            q, k_, v = (ops.parameter(shape, ov.Type.f32) for _ in range(3))
            graph = ov.Model([ops.scaled_dot_product_attention(q, k_, v, causal=False)],
                             [q, k_, v])
            inputs = [rng.standard_normal(shape, np.float32) for _ in range(3)]
            flops = 4.0 * tokens ** 2 * heads * head_dim
        hint = {'fp32': 'f32', 'bf16': 'bf16'}[precision]
        compiled = ov.Core().compile_model(graph, 'CPU', {
            'INFERENCE_PRECISION_HINT': hint, 'PERFORMANCE_HINT': 'LATENCY',
            'ENABLE_CPU_PINNING': 'NO'})
        _OPENVINO_PROBES[key] = (compiled.create_infer_request(), inputs, flops)
    request, inputs, flops = _OPENVINO_PROBES[key]
    feed = dict(enumerate(inputs))
    return _best_rate(lambda: request.infer(feed), flops, 'cpu', seconds, 0.05)


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
    report: Callable[[list[dict[str, object]], str], None] | None = None,
) -> tuple[list[dict[str, object]], list[RoundPeak]]:
    """Run the comparison (see module doc); return table rows and every round's peaks.

    Args:
        name: registry name of the network (``dav2-s``).
        sizes: ``(width, height)`` image sizes.
        variants: variant names; the first must be the reference ``'torch'``.
        device: ``'cpu'`` or ``'cuda'``.
        repeats: timed rounds.
        frames: synthetic frames for accuracy.
        build: ``build(variant, torch_model, onnx_path, tmp_dir, size) -> DepthModel``.
        report: called with each size's rows and a line on that size's in-run peaks as
            soon as they are measured.
    """
    import torch

    from endo_depth_ros.bench import random_weights_model
    from endo_depth_ros.models.onnx_runtime import export_onnx

    if not variants or variants[0] != 'torch':
        variants = ['torch', *[v for v in variants if v != 'torch']]
    precisions = ('fp32', 'fp16') if device.startswith('cuda') else ('fp32', 'bf16')
    all_rows: list[dict[str, object]] = []
    all_peaks: list[RoundPeak] = []
    for width, height in sizes:
        rows: list[dict[str, object]] = []
        images = synthetic_frames(height, width, frames, seed=0)
        # The same weights every run: the compiled-model caches then serve reruns.
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            reference_model = random_weights_model(name, min(height, width), device=device)
            cost, _ = count_flops(reference_model, images[0])
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
            peaks: list[RoundPeak] = []
            for round_index in range(repeats):
                rgb = images[round_index % len(images)]
                # The peaks under the same conditions as this round's variants.
                peaks.append(measure_round_peak(cost, precisions, device))
                # A rotated order: no variant always runs first after the probes or
                # right after the same neighbour (fixed orders gave the later OpenVINO
                # variants of the same kernels 1.1-1.4x the time on a busy machine).
                shift = round_index % len(built)
                for v in built[shift:] + built[:shift]:
                    start = time.perf_counter()
                    v.model.infer(rgb)
                    v.times_ms.append((time.perf_counter() - start) * 1e3)
        base = statistics.median(built[0].times_ms)
        net_h, net_w = built[0].model.network_size(height, width)
        for v in built:
            ms = statistics.median(v.times_ms)
            errors = np.asarray(accuracy[v.name])
            row: dict[str, object] = {
                'variant': v.name, 'image (WxH)': f'{width}x{height}',
                'network (WxH)': f'{net_w}x{net_h}', 'precision': v.precision,
                'ms/frame': ms, 'best ms': min(v.times_ms), 'vs torch fp32': ms / base,
                'rel. L2 vs fp32': f'{errors[:, 0].mean():.1e}',
                'spearman vs fp32': f'{errors[:, 1].mean():.5f}',
            }
            row.update(roofline_columns(cost, peaks, v.times_ms, precisions))
            row['GFLOP'] = f'{cost.total / 1e9:.3g} ({cost.attention / 1e9:.2g} attn)'
            row['build s'] = f'{v.build_s:.0f}'
            selection = getattr(v.model, 'selection', '')
            notes = [f'{v.model.backend} {v.model.precision}' if selection else '']
            compile_s = getattr(getattr(v.model, 'runner', None), 'compile_seconds', 0.0)
            if compile_s:
                notes.append(f'torch.compile warm-up {compile_s:.0f} s')
            row['notes'] = '; '.join(n for n in notes if n)
            rows.append(row)
        if report is not None:
            report(rows, describe_peaks(cost, peaks, precisions))
        all_rows.extend(rows)
        all_peaks.extend(peaks)
    return all_rows, all_peaks


def round_fractions(ideal_ms: Sequence[float], times_ms: Sequence[float]) -> list[float]:
    """Per round, the fraction of the ideal time the variant reached (``ideal / actual``)."""
    return [ideal / actual for ideal, actual in zip(ideal_ms, times_ms, strict=True)]


def roofline_columns(cost: ModelCost, peaks: Sequence[RoundPeak], times_ms: Sequence[float],
                     precisions: Sequence[str]) -> dict[str, str]:
    """``% P peak`` per precision and ``% P achievable`` for the low precision, per round.

    Each round's time is divided into that round's ideal: the model's FLOPs at the
    square-matmul peak (``% P peak``), or every product at the rate of its own shape
    (``% P achievable``, ``RoundPeak.achievable_ms``). Shown as the median over rounds
    and, in brackets, the lowest and highest round.
    """
    columns: dict[str, str] = {}

    def cell(fractions: list[float]) -> str:
        percent = [100 * f for f in fractions]
        return (f'{statistics.median(percent):.0f} '
                f'({min(percent):.0f}-{max(percent):.0f})')

    for precision in precisions:
        ideal = [cost.total / (p.square[precision] * 1e9) * 1e3 for p in peaks]
        columns[f'% {precision} peak'] = cell(round_fractions(ideal, times_ms))
    low = precisions[-1]
    columns[f'% {low} achievable'] = cell(round_fractions(
        [p.achievable_ms[low] for p in peaks], times_ms))
    return columns


def describe_peaks(cost: ModelCost, peaks: Sequence[RoundPeak],
                   precisions: Sequence[str]) -> str:
    """One line: the in-run 2048^2 peaks and model-shape floor (median, range over rounds)."""
    parts = []
    for precision in precisions:
        rates = [p.square[precision] for p in peaks]
        parts.append(f'{precision} {statistics.median(rates):.0f} GFLOP/s '
                     f'({min(rates):.0f}-{max(rates):.0f})')
    low = precisions[-1]
    floor = [p.achievable_ms[low] for p in peaks]
    roof = [cost.total / (p.square[low] * 1e9) * 1e3 for p in peaks]
    return (f'in-run 2048^2 matmul, median (range) of {len(peaks)} rounds: '
            f'{", ".join(parts)}; {low} roofline {statistics.median(roof):.0f} ms/frame, '
            f'{low} floor at the model\'s own shapes (T={cost.tokens}: {cost.tokens}x'
            f'{cost.hidden}x{cost.mlp} etc., attention {cost.heads}x{cost.hidden // cost.heads}) '
            f'{statistics.median(floor):.0f} ms/frame')


def _needs_onnx(variant: str) -> bool:
    return variant in ('onnxruntime', 'ort-int8', 'openvino', 'openvino-bf16',
                       'openvino-bf16-pinned', 'openvino-int8', 'tensorrt')


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
    if variant in ('openvino-bf16-onnx', 'openvino-bf16-direct'):
        from endo_depth_ros.models.openvino import OpenVinoDepthModel

        # The default disk cache: a rerun of the bench imports the compiled blobs.
        return OpenVinoDepthModel.from_torch(reference, precision='bf16',
                                             converter=variant.rsplit('-', 1)[1])
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

    if variant in ('openvino', 'openvino-bf16', 'openvino-bf16-pinned'):
        return OpenVinoDepthModel.from_file(
            onnx_path, name=name, precision='fp32' if variant == 'openvino' else 'bf16',
            pin_threads=variant == 'openvino-bf16-pinned')
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


def describe_machine(device: str) -> str:
    """The machine's name (CPU model and whether it has native bf16, or the GPU)."""
    if device.startswith('cuda'):
        import torch

        return str(torch.cuda.get_device_name(device))
    return f'{hardware.cpu_name()}, bf16 native: {hardware.cpu_supports_bf16()}'
