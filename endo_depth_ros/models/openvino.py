"""OpenVINO ``DepthModel``: the CPU backend that reaches the machine's bf16 matrix units.

Two sources of a graph:

- a file written by ``endo-depth-export``: ONNX (``.onnx``) or an OpenVINO IR
  (``.xml`` + ``.bin``, e.g. the NNCF int8 export). Its image size is fixed, and
  images of another size are refused exactly as with onnxruntime;
- a ``TorchDepthModel`` converted in memory, one graph per camera image size, compiled
  on the first image of that size (the trace bakes the resize targets in). At most
  ``MAX_SIZES`` sizes are kept. Two converters (``CONVERTERS``): ``'onnx'``, a
  static-shape ONNX trace (the graph ``endo-depth-export`` writes; attention becomes
  MatMul + Softmax, which the CPU plugin fuses back), and ``'direct'``,
  ``openvino.convert_model`` on the torch module (attention stays one
  ``ScaledDotProductAttention`` op; 3-4x slower to convert, once per size: the
  compiled blob is cached).

Precision: ``fp32`` sets ``INFERENCE_PRECISION_HINT=f32`` explicitly (OpenVINO
silently computes in bf16 on AMX CPUs otherwise); ``bf16`` needs native bf16
(``hardware.cpu_supports_bf16``) and is refused elsewhere; ``auto`` takes bf16 where it
is native, else fp32. int8 graphs (NNCF) report ``precision='int8'``; their unquantised
parts follow the same hint.

Compiled models are cached on disk (``compiled_key``: model hash, input shape,
precision, OpenVINO version and CPU), like the TensorRT engines: a second load of the
same model imports the blob in about a second instead of converting and compiling for a
minute. One inference request per compiled size is created once and reused.
"""

from __future__ import annotations

from collections import OrderedDict
import hashlib
import io
import os
from pathlib import Path
import tempfile
import time
from typing import Any
import warnings

import numpy as np

from endo_depth_ros.errors import BackendUnavailableError, ConfigError, ModelLoadError
from endo_depth_ros.models import hardware
from endo_depth_ros.models.base import OUTPUT_KINDS, DepthModel, OutputKind
from endo_depth_ros.models.onnx_runtime import check_image_size, check_name, read_metadata

#: Camera sizes whose compiled graph a torch-converted model keeps in memory.
MAX_SIZES = 2
#: rt_info section holding the ``endo_depth_ros`` metadata of an IR file.
RT_INFO_KEY = 'endo_depth_ros'
#: How a torch model becomes an OpenVINO graph (see module doc).
CONVERTERS = ('onnx', 'direct')
#: ``INFERENCE_PRECISION_HINT`` of each precision.
HINTS = {'fp32': 'f32', 'bf16': 'bf16'}


def import_openvino() -> Any:
    """The ``openvino`` module, or ``BackendUnavailableError`` saying how to get it."""
    try:
        import openvino
    except ImportError as err:
        raise BackendUnavailableError(
            "backend 'openvino' needs the openvino package (pip install openvino); "
            "use backend='onnxruntime' or 'torch'.") from err
    return openvino


def resolve_precision(precision: str) -> str:
    """``'auto'`` -> bf16 where the CPU has native bf16, else fp32.

    Raises:
        ConfigError: unknown value, fp16 (not a CPU precision), or bf16 on a CPU
            without native bf16 (``hardware.cpu_supports_bf16``).
    """
    if precision == 'auto':
        return 'bf16' if hardware.cpu_supports_bf16() else 'fp32'
    if precision == 'fp32':
        return precision
    if precision == 'bf16':
        if not hardware.cpu_supports_bf16():
            raise ConfigError(
                f"precision 'bf16' needs a CPU with native bf16 (AMX or AVX512-BF16); "
                f'{hardware.cpu_name()} has neither. Use precision fp32 or auto.')
        return precision
    raise ConfigError(
        f"backend 'openvino' computes in 'fp32' or 'bf16' (or 'auto'), not {precision!r}.")


def default_cache_dir() -> Path:
    """``$ENDO_DEPTH_OV_CACHE`` or ``~/.cache/endo_depth_ros/openvino``."""
    env = os.environ.get('ENDO_DEPTH_OV_CACHE')
    return Path(env) if env else Path.home() / '.cache' / 'endo_depth_ros' / 'openvino'


def compiled_key(model_hash: str, shape: tuple[int, ...], precision: str,
                 ov_version: str, cpu: str) -> str:
    """Cache key of a compiled model: everything a compiled blob is specific to."""
    dims = 'x'.join(str(d) for d in shape)
    version = ov_version.split('-')[0]
    return f'{model_hash[:16]}_{dims}_{precision}_ov{version}_{cpu}'


#: Changes with the way this package turns a torch model into a graph (not visible in
#: the weights or the library versions), so that blobs compiled from an older graph are
#: not reused: 2 = static ONNX trace, position-embedding resize as matrix products.
GRAPH_REVISION = 'graph-2'


def network_hash(net: Any, *extra: object) -> str:
    """SHA-256 over a torch module's tensors (names, shapes, bytes) and ``extra`` values."""
    import torch

    digest = hashlib.sha256()
    for key, tensor in net.state_dict().items():
        digest.update(f'{key}{tuple(tensor.shape)}{tensor.dtype}'.encode())
        data = tensor.detach().to('cpu').reshape(-1)  # flat: any memory format hashes alike
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b'')
    for value in extra:
        digest.update(repr(value).encode())
    return digest.hexdigest()


def read_ir_metadata(model: Any, path: Path) -> dict[str, str]:
    """The ``endo_depth_ros`` rt_info of an IR model (see ``write_ir``)."""
    if not model.has_rt_info([RT_INFO_KEY, 'name']):
        raise ModelLoadError(f'{path} lacks the endo_depth_ros metadata; export it with '
                             'endo-depth-export.')
    info = model.get_rt_info()[RT_INFO_KEY]
    meta = {str(k): str(v.astype(str) if hasattr(v, 'astype') else v) for k, v in info.items()}
    if meta.get('output_kind') not in OUTPUT_KINDS:
        raise ModelLoadError(f'{path} has an unknown output_kind {meta.get("output_kind")!r}.')
    return meta


def write_ir(model: Any, path: str | Path, metadata: dict[str, object]) -> Path:
    """Save an OpenVINO model as IR (``path`` .xml + .bin) with ``metadata`` in its rt_info."""
    ov = import_openvino()
    path = Path(path)
    for key, value in metadata.items():
        model.set_rt_info(str(value), [RT_INFO_KEY, key])
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


class OpenVinoDepthModel(DepthModel):
    """A depth network run by the OpenVINO CPU plugin.

    Build it with ``from_file`` (an export) or ``from_torch`` (a loaded torch model).

    Attributes:
        cache_hits, cache_misses: compiled models imported from / written to the disk
            cache by this instance.
        compile_seconds: wall time of the latest convert + compile (or cache import).
    """

    def __init__(self, *, name: str, output_kind: OutputKind, precision: str,
                 model_hash: str, cache_dir: str | Path | None) -> None:
        self._ov = import_openvino()
        self._core = self._ov.Core()
        self.name = name
        self.output_kind = output_kind
        self.backend = 'openvino'
        self.device = 'cpu'
        self.precision = resolve_precision(precision)
        self._hint = self.precision
        self._model_hash = model_hash
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache_hits = 0
        self.cache_misses = 0
        self.compile_seconds = 0.0
        self.budget: float | None = None
        #: The budget check divides by the reference's variation around its mean instead
        #: of its norm (``from_torch`` ``centred``).
        self.centred_check = False
        #: Relative L2 against torch fp32 measured per image size (``budget`` checks).
        self.measured_error: dict[tuple[int, int], float] = {}
        self._requests: OrderedDict[tuple[int, int], Any] = OrderedDict()
        self._last_size = (0, 0)
        # Set by the constructors:
        self.path: Path | None = None
        self.image_size: tuple[int, int] | None = None
        self._network_size: tuple[int, int] | None = None
        self._torch_model: Any = None
        self.converter = 'onnx'
        #: ``ENABLE_CPU_PINNING``. Off: OpenVINO's LATENCY default pins its two threads
        #: to the cores, and a core taken by another thread of the node (or process)
        #: then stalls every parallel step; unpinned, DAv2-S bf16 ran in 0.87x and 1.00x
        #: the pinned time in two runs on the busy 2-core machine (``endo-depth-bench
        #: models --backends openvino-bf16,openvino-bf16-pinned`` for this machine).
        self.pin_threads = False

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_file(cls, path: str | Path, *, name: str, device: str = 'auto',
                  precision: str = 'auto',
                  cache_dir: str | Path | None = None,
                  pin_threads: bool = False) -> OpenVinoDepthModel:
        """Load an ``endo-depth-export`` ONNX or IR file for the image size it was made for.

        ``pin_threads``: pin OpenVINO's threads to cores (off by default, see
        ``pin_threads`` in the constructor).

        Raises:
            BackendUnavailableError: openvino is not installed.
            ConfigError: a device other than the CPU, or a precision the CPU lacks.
            ModelLoadError: not an export of ``endo-depth-export``, or of another model.
        """
        _check_device(device)
        ov = import_openvino()
        path = Path(path)
        if path.suffix == '.xml':
            try:
                graph = ov.Core().read_model(str(path))
            except RuntimeError as err:
                raise ModelLoadError(f'OpenVINO cannot read {path}: {err}') from err
            meta = read_ir_metadata(graph, path)
            blob = path.read_bytes() + path.with_suffix('.bin').read_bytes()
        else:
            meta = read_metadata(path)
            blob = path.read_bytes()
        check_name(name, meta['name'], path)
        model = cls(name=meta['name'], output_kind=meta['output_kind'],  # type: ignore[arg-type]
                    precision=precision, model_hash=hashlib.sha256(blob).hexdigest(),
                    cache_dir=cache_dir)
        model.path = path
        model.pin_threads = pin_threads
        model.image_size = (int(meta['image_height']), int(meta['image_width']))
        model._network_size = (int(meta['network_height']), int(meta['network_width']))
        if meta.get('precision') == 'int8':
            model.precision = 'int8'
        model.infer(np.zeros((*model.image_size, 3), np.uint8))  # compile + warm-up
        return model

    @classmethod
    def from_torch(cls, torch_model: Any, *, precision: str = 'auto',
                   cache_dir: str | Path | None = None,
                   warmup_size: tuple[int, int] | None = None,
                   budget: float | None = None,
                   centred: bool = False,
                   converter: str = 'onnx') -> OpenVinoDepthModel:
        """Convert a ``TorchDepthModel`` directly; each camera size is compiled on first use.

        Args:
            torch_model: the loaded torch model (its network and resize policy are used).
            precision: ``'auto'``, ``'fp32'`` or ``'bf16'``.
            cache_dir: compiled-model cache (default ``default_cache_dir()``).
            warmup_size: ``(height, width)`` compiled now (None: the first image decides).
            budget: when set (the ``auto`` choice), each size compiled in bf16 is checked
                once against torch fp32 on a synthetic endoscope frame of that size; above
                this relative L2 error that size is recompiled in fp32 and ``selection``
                says so. The measured error is kept beside the cached blob.
            centred: measure that error relative to the reference's variation around its
                mean (``||out - ref|| / ||ref - mean(ref)||``) rather than its norm: for
                heads that add a constant (the sigmoid disparity of monodepth2-like
                networks, ``min_disp + range * sigmoid``), whose offset would otherwise
                hide an error as large as the map's whole structure.
            converter: ``'onnx'`` or ``'direct'`` (``CONVERTERS``).

        Raises:
            ConfigError: an unknown converter (and see ``resolve_precision``).
        """
        if converter not in CONVERTERS:
            raise ConfigError(f'Unknown OpenVINO converter {converter!r}; expected one of '
                              f'{CONVERTERS}.')
        import torch
        import transformers

        net = torch_model.net
        model_hash = network_hash(
            net, torch_model.name, net.input_size, getattr(net, 'resize', 'official'),
            torch.__version__, transformers.__version__, GRAPH_REVISION,
            *(() if converter == 'onnx' else (converter,)))  # onnx: the keys cached so far
        model = cls(name=torch_model.name, output_kind=torch_model.output_kind,
                    precision=precision, model_hash=model_hash, cache_dir=cache_dir)
        model._torch_model = torch_model
        model.converter = converter
        model._last_size = torch_model.input_size  # the torch model's warm-up size
        model.budget = budget
        model.centred_check = centred
        if warmup_size is not None:
            model.infer(np.zeros((*warmup_size, 3), np.uint8))
        return model

    # ------------------------------------------------------------------ DepthModel

    @property
    def input_size(self) -> tuple[int, int]:
        if self._network_size is not None:
            return self._network_size
        return self._last_size

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        if self._network_size is not None:
            self._check_size(height, width)
            return self._network_size
        size: tuple[int, int] = self._torch_model.network_size(height, width)
        return size

    def _check_size(self, height: int, width: int) -> None:
        if self.image_size is not None and self.path is not None:
            check_image_size(self.path, self.image_size, height, width)

    def _infer_batch(self, batch: np.ndarray) -> np.ndarray:
        height, width = batch.shape[1], batch.shape[2]
        self._check_size(height, width)
        request = self._request(height, width)
        self._last_size = self.network_size(height, width)
        out = np.empty(batch.shape[:3], np.float32)
        for i in range(len(batch)):
            # share_inputs: no copy of the frame; the output is copied out of the
            # request's buffer, which the next call overwrites.
            result = request.infer({0: np.ascontiguousarray(batch[i:i + 1])}, share_inputs=True)
            out[i] = result[0][0]
        return out

    # ------------------------------------------------------------------ compiling

    def cache_file(self, height: int, width: int) -> Path:
        """Where the compiled model for ``height x width`` images is (or will be) cached."""
        key = compiled_key(self._model_hash, (1, height, width, 3), self.precision,
                           self._ov.__version__, hardware.cpu_key())
        return self.cache_dir / f'{self.name}_{key}.blob'

    def _request(self, height: int, width: int) -> Any:
        size = (height, width)
        if size in self._requests:
            self._requests.move_to_end(size)
            return self._requests[size]
        start = time.perf_counter()
        compiled = self._load_or_compile(height, width)
        request = compiled.create_infer_request()
        if self.budget is not None and self.precision == 'bf16':
            request = self._check_budget(height, width, request)
        self.compile_seconds = time.perf_counter() - start
        self._requests[size] = request
        while len(self._requests) > MAX_SIZES:
            self._requests.popitem(last=False)
        return self._requests[size]

    def _check_budget(self, height: int, width: int, request: Any) -> Any:
        """Measure this size's bf16 error once (kept beside the blob); fp32 when over budget."""
        import json

        budget = self.budget if self.budget is not None else 0.0
        metric = 'centred-error' if self.centred_check else 'error'
        record = self.cache_file(height, width).with_suffix(f'.{metric}.json')
        try:
            error = float(json.loads(record.read_text())['rel_l2'])
        except (OSError, ValueError, KeyError, TypeError):
            from endo_depth_ros.synth import SynthConfig, render_sequence

            frame = next(iter(render_sequence(SynthConfig(width=width, height=height,
                                                          frames=1)))).rgb[None]
            reference = self._torch_model.runner(frame)
            out = request.infer({0: frame})[0]
            scale = reference - reference.mean() if self.centred_check else reference
            error = float(np.linalg.norm(out - reference)
                          / max(float(np.linalg.norm(scale)), 1e-12))
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({'rel_l2': error}))
        self.measured_error[(height, width)] = error
        kind = 'centred ' if self.centred_check else ''
        if error <= budget:
            self.selection = (f'{self.selection} Measured at {width}x{height}: {kind}rel. L2 '
                              f'{error:.1e} vs torch fp32 on a synthetic frame.').strip()
            return request
        self.precision = self._hint = 'fp32'
        self.selection = (f'{self.selection} bf16 measured {kind}rel. L2 {error:.1e} at {width}x'
                          f'{height}, over the {budget:.0e} budget: fp32 instead.').strip()
        return self._load_or_compile(height, width).create_infer_request()

    def _config(self) -> dict[str, str]:
        return {'INFERENCE_PRECISION_HINT': HINTS[self._hint], 'PERFORMANCE_HINT': 'LATENCY',
                'ENABLE_CPU_PINNING': 'YES' if self.pin_threads else 'NO'}

    def _load_or_compile(self, height: int, width: int) -> Any:
        file = self.cache_file(height, width)
        if file.is_file():
            try:
                compiled = self._core.import_model(io.BytesIO(file.read_bytes()), 'CPU',
                                                   self._config())
                self.cache_hits += 1
                return compiled
            except RuntimeError:
                pass  # a blob of another build or a damaged file: compile afresh below
        graph = self._graph(height, width)
        try:
            compiled = self._core.compile_model(graph, 'CPU', self._config())
        except RuntimeError as err:
            raise ModelLoadError(f'OpenVINO cannot compile {self.name}: {err}') from err
        self.cache_misses += 1
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f'{file.name}.{os.getpid()}.tmp')
        tmp.write_bytes(compiled.export_model().getvalue())
        tmp.replace(file)  # atomic: a concurrent reader never sees half a blob
        return compiled

    def _graph(self, height: int, width: int) -> Any:
        """The uncompiled graph for one ``(1, height, width, 3)`` uint8 input."""
        ov = self._ov
        shape = [1, height, width, 3]
        if self.path is not None:
            try:
                graph = self._core.read_model(str(self.path))
            except RuntimeError as err:
                raise ModelLoadError(f'OpenVINO cannot read {self.path}: {err}') from err
            graph.reshape({graph.inputs[0]: ov.PartialShape(shape)})
            return graph
        if self.converter == 'direct':
            import torch

            example = torch.zeros(shape, dtype=torch.uint8)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # tracer warnings: sizes baked in on purpose
                graph = ov.convert_model(self._torch_model.net.eval(), example_input=example)
            graph.reshape({graph.inputs[0]: ov.PartialShape(shape)})
            return graph
        from endo_depth_ros.models.onnx_runtime import export_onnx

        # Through a static-shape ONNX trace, as the explicit ``openvino`` export: the same
        # graph as ``endo-depth-export`` gives, converted in a fraction of
        # ``openvino.convert_model``'s time (DAv2-S 518x518: 10 s vs 33-47 s).
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(self._torch_model, Path(tmp) / 'graph.onnx', height, width,
                               dynamic_batch=False)
            graph = self._core.read_model(str(path))
            graph.reshape({graph.inputs[0]: ov.PartialShape(shape)})
            return graph  # read into memory: the file may go


def _check_device(device: str) -> None:
    if device not in ('auto', 'cpu'):
        raise ConfigError(
            f"backend 'openvino' runs on the CPU here; got device {device!r} "
            "(use backend='tensorrt' or 'torch' for CUDA).")
