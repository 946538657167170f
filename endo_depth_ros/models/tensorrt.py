"""TensorRT ``DepthModel``: build (or reuse) an engine from an ``endo-depth-export`` ONNX file.

Written to the TensorRT >= 10 name-based Python API (``num_io_tensors``,
``set_tensor_address``, ``execute_async_v3``). CUDA memory is handled through torch
tensors (no pycuda/cuda-python dependency); buffers are allocated once per batch
size and reused. Engines are cached on disk, keyed by the ONNX file's hash, the
input shape, the precision, the TensorRT version and the GPU name, because an
engine is only valid for exactly that combination.

Precision: fp32 builds the graph as exported. fp16 uses ``BuilderFlag.FP16`` where
TensorRT still has it (10.x); TensorRT 11 removed weak typing, so there fp16 needs an
ONNX file whose graph is already fp16 (``endo-depth-export --precision fp16``).

Selected only when ``tensorrt`` imports and torch sees a CUDA device; otherwise
``BackendUnavailableError`` names what is missing. Nothing here can run on the
project's CPU-only machines.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
import re
from typing import Any

import numpy as np

from endo_depth_ros.errors import BackendUnavailableError, ConfigError, ModelLoadError
from endo_depth_ros.models.base import DepthModel, OutputKind
from endo_depth_ros.models.onnx_runtime import (
    INPUT_NAME,
    OUTPUT_NAME,
    check_image_size,
    check_name,
    read_metadata,
)

#: Largest batch the engine's optimisation profile accepts (sliding windows of frames).
MAX_BATCH = 8
#: Workspace memory TensorRT may use while building (bytes).
WORKSPACE_BYTES = 1 << 30


def missing_requirements() -> list[str]:
    """What the TensorRT backend lacks on this machine (empty: it can run)."""
    missing = []
    try:
        import tensorrt

        major = int(str(tensorrt.__version__).split('.')[0])
        if major < 10:
            missing.append(f'TensorRT >= 10 (found {tensorrt.__version__})')
    except ImportError:
        missing.append('the tensorrt Python package (pip install tensorrt)')
    import torch

    if not torch.cuda.is_available():
        missing.append(f'a CUDA device visible to torch (torch {torch.__version__} sees none)')
    return missing


def default_cache_dir() -> Path:
    """``$ENDO_DEPTH_TRT_CACHE`` or ``~/.cache/endo_depth_ros/tensorrt``."""
    env = os.environ.get('ENDO_DEPTH_TRT_CACHE')
    return Path(env) if env else Path.home() / '.cache' / 'endo_depth_ros' / 'tensorrt'


def engine_key(onnx_bytes: bytes, shape: tuple[int, ...], precision: str,
               trt_version: str, gpu_name: str) -> str:
    """Cache key of an engine: everything an engine is specific to."""
    model_hash = hashlib.sha256(onnx_bytes).hexdigest()[:16]
    gpu = re.sub(r'[^A-Za-z0-9]+', '-', gpu_name).strip('-')
    dims = 'x'.join(str(d) for d in shape)
    return f'{model_hash}_{dims}_{precision}_trt{trt_version}_{gpu}'


class TensorRTDepthModel(DepthModel):
    """An ``endo-depth-export`` ONNX model run by a TensorRT engine on a CUDA device.

    Args:
        path: the ``.onnx`` file.
        name: registry name the caller asked for (checked against the export's).
        device: ``'auto'``, ``'cuda'`` or ``'cuda:N'`` (``'cpu'`` is refused).
        precision: ``'auto'`` (fp16 when this TensorRT can build it, else fp32),
            ``'fp16'`` or ``'fp32'``.
        cache_dir: where engines are stored (default ``default_cache_dir()``).

    Raises:
        BackendUnavailableError: tensorrt or CUDA missing (the message lists which).
        ModelLoadError: not an exported ONNX file, or TensorRT cannot parse/build it.
    """

    def __init__(self, path: str | Path, *, name: str, device: str = 'auto',
                 precision: str = 'auto', cache_dir: str | Path | None = None) -> None:
        missing = missing_requirements()
        if missing:
            raise BackendUnavailableError(
                "backend 'tensorrt' is unavailable: missing " + ' and '.join(missing)
                + "; use backend='onnxruntime' or 'torch'.")
        import tensorrt as trt
        import torch

        if device == 'cpu':
            raise ConfigError("backend 'tensorrt' runs on CUDA only; got device 'cpu'.")
        if device not in ('auto', 'cuda') and not re.fullmatch(r'cuda:\d+', device):
            raise ConfigError(f"Unknown device {device!r}; expected 'auto', 'cuda' or 'cuda:N'.")
        if precision not in ('auto', 'fp16', 'fp32'):
            raise ConfigError(f"Unknown precision {precision!r}; expected 'auto', 'fp16', 'fp32'.")
        self.path = Path(path)
        meta = read_metadata(self.path)
        check_name(name, meta['name'], self.path)
        self.name = meta['name']
        self.output_kind: OutputKind = meta['output_kind']  # type: ignore[assignment]
        self.backend = 'tensorrt'
        self.device = 'cuda' if device == 'auto' else device
        graph_fp16 = meta.get('precision') == 'fp16'
        if precision == 'auto':
            # fp16 where this TensorRT can build it from this graph, else fp32.
            precision = 'fp16' if graph_fp16 or hasattr(trt.BuilderFlag, 'FP16') else 'fp32'
        if graph_fp16 and precision == 'fp32':
            raise ConfigError(f"{self.path} computes in fp16; precision 'fp32' is impossible.")
        self.precision = precision
        self.image_size = (int(meta['image_height']), int(meta['image_width']))
        self._network_size = (int(meta['network_height']), int(meta['network_width']))
        self._torch = torch
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            engine_bytes = self._load_or_build(graph_fp16, cache_dir)
            # The runtime must outlive its engine: keep a reference.
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
            if self.engine is None:
                raise ModelLoadError(f'TensorRT could not deserialize the engine of {self.path}.')
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(device=self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if INPUT_NAME not in names or OUTPUT_NAME not in names:
            raise ModelLoadError(
                f'{self.path}: engine tensors {names} lack {INPUT_NAME!r}/{OUTPUT_NAME!r}.')
        self._buffers: dict[int, tuple[Any, Any]] = {}
        self.infer(np.zeros((*self.image_size, 3), np.uint8))  # warm-up

    @property
    def input_size(self) -> tuple[int, int]:
        return self._network_size

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        check_image_size(self.path, self.image_size, height, width)
        return self._network_size

    def _load_or_build(self, graph_fp16: bool, cache_dir: str | Path | None) -> bytes:
        trt, torch = self._trt, self._torch
        onnx_bytes = self.path.read_bytes()
        shape = (MAX_BATCH, *self.image_size, 3)
        key = engine_key(onnx_bytes, shape, self.precision, trt.__version__,
                         torch.cuda.get_device_name(self.device))
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        engine_file = cache / f'{self.path.stem}_{key}.engine'
        if engine_file.is_file():
            return engine_file.read_bytes()
        engine = self._build(onnx_bytes, graph_fp16)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = engine_file.with_suffix('.tmp')
        tmp.write_bytes(engine)
        tmp.replace(engine_file)  # atomic: a concurrent reader never sees half an engine
        return engine

    def _build(self, onnx_bytes: bytes, graph_fp16: bool) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        flags = 0
        if graph_fp16 and hasattr(trt.NetworkDefinitionCreationFlag, 'STRONGLY_TYPED'):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_bytes):
            errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelLoadError(f'TensorRT cannot parse {self.path}: {errors}')
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if self.precision == 'fp16' and not graph_fp16:
            if not hasattr(trt.BuilderFlag, 'FP16'):
                raise BackendUnavailableError(
                    f'TensorRT {trt.__version__} has no BuilderFlag.FP16 (weak typing was '
                    'removed in 11.x): export with endo-depth-export --precision fp16, or use '
                    "precision='fp32'.")
            config.set_flag(trt.BuilderFlag.FP16)
        tensor = network.get_input(0)
        if tensor.shape[0] == -1:  # dynamic batch: one profile covering 1..MAX_BATCH
            h, w = self.image_size
            profile = builder.create_optimization_profile()
            profile.set_shape(tensor.name, (1, h, w, 3), (1, h, w, 3), (MAX_BATCH, h, w, 3))
            config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ModelLoadError(f'TensorRT failed to build an engine from {self.path}.')
        return bytes(serialized)

    def _io(self, batch_size: int) -> tuple[Any, Any]:
        """Device input/output tensors for a batch size, allocated once and reused."""
        if batch_size not in self._buffers:
            torch, trt = self._torch, self._trt
            h, w = self.image_size
            dtypes = {
                name: torch.from_numpy(
                    np.empty(0, trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
                for name in (INPUT_NAME, OUTPUT_NAME)}
            rgb = torch.empty((batch_size, h, w, 3), dtype=dtypes[INPUT_NAME], device=self.device)
            out = torch.empty((batch_size, h, w), dtype=dtypes[OUTPUT_NAME], device=self.device)
            self._buffers[batch_size] = (rgb, out)
        return self._buffers[batch_size]

    def _infer_batch(self, batch: np.ndarray) -> np.ndarray:
        check_image_size(self.path, self.image_size, batch.shape[1], batch.shape[2])
        if len(batch) > MAX_BATCH:
            return np.concatenate([self._infer_batch(batch[i:i + MAX_BATCH])
                                   for i in range(0, len(batch), MAX_BATCH)])
        torch = self._torch
        rgb, out = self._io(len(batch))
        with torch.cuda.stream(self.stream):
            rgb.copy_(torch.from_numpy(np.ascontiguousarray(batch)), non_blocking=True)
            self.context.set_input_shape(INPUT_NAME, tuple(rgb.shape))
            self.context.set_tensor_address(INPUT_NAME, rgb.data_ptr())
            self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f'TensorRT execution failed for {self.path}.')
            result = out.float().cpu()  # synchronises with the stream
        return result.numpy()
