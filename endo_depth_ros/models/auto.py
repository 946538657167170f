"""``backend='auto'`` and ``precision='auto'``: the fastest path this machine has, within budget.

The rule, from ``endo-depth-bench models --backends`` (DAv2-S, uint8 in -> depth out,
ratios to torch fp32 in one run on a 2-core AMX Xeon): OpenVINO bf16 0.18x when the
issue was filed, 0.32x on the idle machine later (same library, same graph: the VM's
bf16 matmul peak had fallen from 1736 to ~880 GFLOP/s while fp32 stayed ~250-300),
torch bf16 0.5x, OpenVINO fp32 0.6-0.9x, onnxruntime fp32 0.75-1.1x; bf16 costs a
relative L2 error of ~5e-3 against fp32, int8 ~1e-2 or more. Hence, for a network
checkpoint:

1. CUDA visible (device ``auto``/``cuda``): torch with fp16 autocast (TensorRT for an
   ONNX export when tensorrt is installed).
2. CPU with native bf16 (AMX / AVX512-BF16) and openvino installed: OpenVINO bf16.
3. CPU with native bf16, no openvino: torch bf16.
4. Otherwise OpenVINO fp32 when installed, else torch fp32.

Only paths whose error stays within ``ACCURACY_BUDGET`` (relative L2 against fp32) are
candidates: int8 is never chosen automatically. Networks below ``SMALL_NETWORK_PARAMS``
parameters (test-size networks) stay in torch fp32: converting costs seconds and bf16
saves nothing at that size. With ``precision='auto'`` each camera size compiled in bf16
is checked once against torch fp32 on a synthetic frame (``OpenVinoDepthModel``
``budget``) and compiled in fp32 instead when over budget: the rule holds per network
and size, not only for the network it was measured on (the monodepth2-like families,
whose sigmoid heads add a constant, are checked relative to the map's variation around
its mean). An explicit backend or precision is honoured and refused with a reason where
the machine cannot run it; ``auto`` never picks an unavailable path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endo_depth_ros.errors import ConfigError
from endo_depth_ros.models import hardware

#: Largest relative L2 error against fp32 an automatic choice may cost.
ACCURACY_BUDGET = 1e-2
#: Networks with fewer parameters run in torch fp32 under ``auto`` (see module doc).
SMALL_NETWORK_PARAMS = 1_000_000
#: Families ``auto`` keeps in torch fp32: their OpenVINO/bf16 paths are not measured.
#: (Depth Anything, DPT/MiDaS, monodepth2, AF-SfMLearner, SC-SfMLearner and EndoDAC
#: are: ``endo-depth-bench models --backends`` / ``--families``; and every size compiled
#: in bf16 is checked against torch fp32 on a probe frame, see ``OpenVinoDepthModel``.)
TORCH_ONLY_FAMILIES = ('zoedepth',)
#: Relative L2 against fp32 measured per path on DAv2-S (``endo-depth-bench models``).
MEASURED_ERROR = {'fp32': 1e-6, 'bf16': 5.4e-3, 'fp16': 1e-3, 'int8': 1.2e-2}


@dataclass(frozen=True)
class Plan:
    """What ``load()`` will build, and why.

    Attributes:
        backend: ``'torch'``, ``'onnxruntime'``, ``'openvino'`` or ``'tensorrt'``.
        precision: the precision to ask that backend for (may still be ``'auto'`` for
            backends that resolve it themselves, e.g. TensorRT).
        reason: one sentence for the start-up log and ``/diagnostics``.
    """

    backend: str
    precision: str
    reason: str


def checkpoint_kind(path: Path) -> str:
    """``'onnx'`` (``.onnx``), ``'ir'`` (OpenVINO ``.xml``) or ``'torch'`` (anything else)."""
    suffix = path.suffix.lower()
    return {'.onnx': 'onnx', '.xml': 'ir'}.get(suffix, 'torch')


def _wants_cuda(device: str) -> bool:
    if device.startswith('cuda'):
        return True
    return device == 'auto' and hardware.cuda_available()


def plan_for_export(kind: str, backend: str, device: str, precision: str) -> Plan:
    """Plan for an exported file (``kind`` ``'onnx'`` or ``'ir'``).

    Raises:
        ConfigError: the backend cannot read this kind of file.
    """
    if kind == 'ir' and backend not in ('auto', 'openvino'):
        raise ConfigError(f"An OpenVINO IR (.xml) runs with backend 'openvino', not {backend!r}.")
    if backend != 'auto':
        return Plan(backend, precision, f'backend {backend} requested')
    if kind == 'ir':
        return Plan('openvino', precision, 'OpenVINO IR file')
    if _wants_cuda(device):
        from endo_depth_ros.models.tensorrt import missing_requirements

        if not missing_requirements():
            return Plan('tensorrt', precision, 'CUDA and TensorRT present: TensorRT engine')
        return Plan('onnxruntime', precision, 'CUDA present, no TensorRT: onnxruntime')
    if hardware.openvino_available() and device in ('auto', 'cpu'):
        return Plan('openvino', precision, _cpu_reason('openvino', precision))
    return Plan('onnxruntime', precision, 'CPU without openvino: onnxruntime')


def plan_for_network(network: Any, backend: str, device: str, precision: str) -> Plan:
    """Plan for a torch network (loaded weights) on a resolved ``device``.

    Raises:
        ConfigError: ``backend`` cannot run a torch checkpoint directly.
    """
    if backend in ('onnxruntime', 'tensorrt'):
        raise ConfigError(
            f"backend {backend!r} runs an ONNX file: export the checkpoint with "
            "endo-depth-export first, or use backend 'torch', 'openvino' or 'auto'.")
    params = sum(p.numel() for p in network.parameters())
    small = params < SMALL_NETWORK_PARAMS
    if backend == 'auto':
        if device.startswith('cuda'):
            backend = 'torch'
        elif small:
            return Plan('torch', 'fp32' if precision == 'auto' else precision,
                        f'small network ({params / 1e6:.2f} M parameters): torch fp32, '
                        'conversion and bf16 would cost more than they save')
        elif hardware.openvino_available():
            backend = 'openvino'
        else:
            backend = 'torch'
    if precision != 'auto':
        return Plan(backend, precision, f'{backend} {precision} requested')
    if device.startswith('cuda'):
        return Plan(backend, 'fp16', 'CUDA device: torch fp16 autocast')
    if small:
        return Plan(backend, 'fp32', f'small network ({params / 1e6:.2f} M parameters): fp32')
    bf16 = hardware.cpu_supports_bf16()
    resolved = 'bf16' if bf16 else 'fp32'
    return Plan(backend, resolved, _cpu_reason(backend, resolved))


def _cpu_reason(backend: str, precision: str) -> str:
    bf16 = hardware.cpu_supports_bf16()
    if precision == 'auto':
        precision = 'bf16' if bf16 else 'fp32'
    cpu = f'CPU {hardware.cpu_name()} ' + (
        'with native bf16' if bf16 else 'without native bf16')
    error = MEASURED_ERROR.get(precision, 0.0)
    return (f'{cpu}: {backend} {precision}, the fastest CPU path installed whose error '
            f'(rel. L2 {error:.0e} vs fp32 on DAv2-S) is within the {ACCURACY_BUDGET:.0e} '
            'budget')
