"""How a torch ``DepthNet`` is executed: precision, memory layout, compilation, transfers.

- CPU fp32: plain eager; weights in channels_last (the frame already arrives NHWC).
- CPU bf16: ``torch.autocast('cpu', bfloat16)`` on CPUs with native bf16 (AMX or
  AVX512-BF16; refused elsewhere by ``resolve_precision``).
- CUDA fp16: ``torch.autocast('cuda', float16)``, channels_last; frames go through a
  pinned host buffer (reused per shape) and a non-blocking copy.
- ``compile=True`` (opt-in): ``torch.compile`` for the fixed input shape. On the CPU with
  weight freezing (constant-folds the weights into the kernels; inductor's own cache
  on disk makes the next start faster); on CUDA ``mode='reduce-overhead'``, which
  records the forward into CUDA graphs. The first call of a new shape compiles:
  ``compile_seconds`` reports how long that took.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn


class TorchRunner:
    """Runs a ``DepthNet`` on uint8 NHWC batches with the chosen precision and options.

    Args:
        net: the ``DepthNet`` (already on ``device``).
        device: resolved torch device (``'cpu'``, ``'cuda'``, ``'cuda:N'``).
        precision: resolved ``'fp32'``, ``'bf16'`` or ``'fp16'``.
        compile: compile the forward with ``torch.compile`` (see module doc).

    Attributes:
        compile_seconds: wall time of the latest compiling call (0 before any / eager).
    """

    def __init__(self, net: nn.Module, device: str, precision: str, *,
                 compile: bool = False) -> None:
        self.net = net
        self.device = device
        self.precision = precision
        self.cuda = device.startswith('cuda')
        self.compile_seconds = 0.0
        self._compiled_shapes: set[tuple[int, ...]] = set()
        self._pinned: dict[tuple[int, ...], torch.Tensor] = {}
        # Conv weights of the DPT head in NHWC, matching the NHWC frames: oneDNN and
        # cuDNN then skip layout reorders.
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._forward: Any = net
        if compile:
            if self.cuda:
                self._forward = torch.compile(net, mode='reduce-overhead', dynamic=False)
            else:
                import torch._inductor.config as inductor_config

                # Freezing folds the (inference-only) weights into constants.
                inductor_config.freezing = True
                self._forward = torch.compile(net, dynamic=False)
        self.compiled = compile

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of this precision (None: plain fp32)."""
        return {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(self.precision)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 -> ``(N, H, W)`` float32 on the host."""
        shape = tuple(batch.shape)
        timing = self.compiled and shape not in self._compiled_shapes
        start = time.perf_counter()
        with torch.inference_mode():
            rgb = self._to_device(batch)
            dtype = self.autocast_dtype
            if dtype is not None:
                with torch.autocast('cuda' if self.cuda else 'cpu', dtype=dtype):
                    out = self._forward(rgb)
            else:
                out = self._forward(rgb)
            result = out.float().cpu().numpy()  # synchronises with the device
        if timing:
            self._compiled_shapes.add(shape)
            self.compile_seconds = time.perf_counter() - start
        return result

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(np.ascontiguousarray(batch))
        if not self.cuda:
            return host
        # Page-locked staging buffer, allocated once per shape: lets the copy overlap.
        pinned = self._pinned.get(host.shape)
        if pinned is None:
            if len(self._pinned) >= 4:  # bounded: a few camera sizes / batch sizes
                self._pinned.clear()
            pinned = torch.empty(host.shape, dtype=torch.uint8, pin_memory=True)
            self._pinned[tuple(host.shape)] = pinned
        pinned.copy_(host)
        return pinned.to(self.device, non_blocking=True)
