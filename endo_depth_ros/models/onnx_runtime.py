"""ONNX export of the torch depth models, and an onnxruntime ``DepthModel``.

The exported graph is the whole ``DepthNet``: uint8 ``(N, H, W, 3)`` RGB in,
``(N, H, W)`` float32 out, with resizing and normalisation inside. The TorchScript
exporter (``dynamo=False``) is used because ``torch.export`` fails on free image
height/width for these models; it bakes the image size into the graph (resize
targets become constants), so an export serves exactly one camera size. Only the
batch axis is dynamic. The image and network sizes are stored in the ONNX metadata
and checked on every call, so a mismatching image raises instead of silently
returning a map of the export's size.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
import warnings

import numpy as np

from endo_depth_ros.errors import (
    BackendUnavailableError,
    BadInputError,
    ConfigError,
    ModelLoadError,
)
from endo_depth_ros.models.base import OUTPUT_KINDS, DepthModel, OutputKind

#: Default ONNX opset of ``export_onnx``.
DEFAULT_OPSET = 17
INPUT_NAME = 'rgb'
OUTPUT_NAME = 'depth'
_META_PREFIX = 'endo_depth_ros.'


def export_onnx(
    model: Any,
    path: str | Path,
    height: int,
    width: int,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    precision: str = 'fp32',
) -> Path:
    """Export a ``TorchDepthModel`` to ONNX for ``height x width`` images.

    Args:
        model: a ``TorchDepthModel`` (any device; the export runs on a CPU fp32 copy).
        path: output ``.onnx`` file (parent folders are created).
        height, width: camera image size in pixels, fixed in the graph.
        opset: ONNX opset version (>= 16 for bicubic resize with ``align_corners``).
        dynamic_batch: leave the batch axis free (the graph supports it).
        precision: ``'fp32'``, or ``'fp16'`` for a graph computing in half precision
            (uint8 in, float32 out), needed for fp16 with TensorRT >= 11.

    Returns:
        The written path.

    Raises:
        ConfigError: bad size or opset, or a model that is not a torch network.
    """
    import onnx
    import torch

    from endo_depth_ros.models.depth_anything import TorchDepthModel

    if not isinstance(model, TorchDepthModel):
        raise ConfigError(
            f'Only torch network models can be exported to ONNX, not {type(model).__name__} '
            f'({getattr(model, "name", "?")}).')
    if height < 14 or width < 14:
        raise ConfigError(f'Export size must be at least 14x14 pixels, got {height}x{width}.')
    if not 16 <= opset <= 21:
        raise ConfigError(f'opset must be in 16..21, got {opset}.')
    if precision not in ('fp32', 'fp16'):
        raise ConfigError(f"Export precision must be 'fp32' or 'fp16', got {precision!r}.")
    # Export from a CPU copy so the caller's model keeps its device and dtype.
    net = copy.deepcopy(model.net).to('cpu')
    net = (net.half() if precision == 'fp16' else net.float()).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros((1, height, width, 3), dtype=torch.uint8)
    axes = {INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}} if dynamic_batch else None
    with warnings.catch_warnings():
        # The tracer warns about every Python int taken from a shape: baking sizes is intended.
        warnings.simplefilter('ignore')
        torch.onnx.export(
            net, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes=axes, opset_version=opset, dynamo=False)
    net_h, net_w = net.network_size(height, width)
    graph = onnx.load(str(path))
    metadata = {
        'name': model.name, 'output_kind': model.output_kind,
        'image_height': height, 'image_width': width,
        'network_height': net_h, 'network_width': net_w,
        'input_size': net.input_size, 'input_resize': getattr(net, 'resize', 'official'),
        'dynamic_batch': int(dynamic_batch), 'precision': precision,
    }
    if model.max_depth is not None:
        metadata['max_depth'] = model.max_depth
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = _META_PREFIX + key, str(value)
    onnx.save(graph, str(path))
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``endo_depth_ros.*`` metadata of an exported ONNX file (prefix removed).

    Raises:
        ModelLoadError: the file is not ONNX or was not written by ``export_onnx``.
    """
    import onnx

    path = Path(path)
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf/onnx raise assorted types for bad bytes
        raise ModelLoadError(f'{path} is not a readable ONNX file: {err}') from err
    meta = {p.key[len(_META_PREFIX):]: p.value for p in graph.metadata_props
            if p.key.startswith(_META_PREFIX)}
    required = ('name', 'output_kind', 'image_height', 'image_width',
                'network_height', 'network_width')
    missing = [k for k in required if k not in meta]
    if missing:
        raise ModelLoadError(
            f'{path} lacks the endo_depth_ros metadata ({", ".join(missing)}); '
            'export it with endo-depth-export.')
    if meta['output_kind'] not in OUTPUT_KINDS:
        raise ModelLoadError(f'{path} has an unknown output_kind {meta["output_kind"]!r}.')
    return meta


def check_name(requested: str, exported: str, path: Path) -> None:
    """Refuse an export whose model family/kind/size contradicts the requested name."""
    from endo_depth_ros.models.depth_anything import parse_name
    from endo_depth_ros.models.registry import FAMILY_MODULES

    if requested in FAMILY_MODULES or exported in FAMILY_MODULES:
        if requested != exported:  # these names carry no size to leave open
            raise ModelLoadError(f'{path} was exported from {exported!r}, not {requested!r}.')
        return
    want, have = parse_name(requested), parse_name(exported)
    if (want.family, want.metric) != (have.family, have.metric) or (
            want.size is not None and have.size is not None and want.size != have.size):
        raise ModelLoadError(f'{path} was exported from {exported!r}, not {requested!r}.')


def check_image_size(path: Path, image_size: tuple[int, int], height: int, width: int) -> None:
    """Refuse images of another size than the export's (the graph would ignore it).

    Raises:
        BadInputError: reason ``'size_mismatch'``, naming both sizes.
    """
    if (height, width) != image_size:
        h, w = image_size
        raise BadInputError(
            f'{path.name} was exported for {h}x{w} images but got {height}x{width}; '
            f're-export with endo-depth-export --height {height} --width {width}.',
            'size_mismatch')


class OnnxDepthModel(DepthModel):
    """A model exported by ``export_onnx`` run by onnxruntime.

    Args:
        path: the ``.onnx`` file.
        name: registry name the caller asked for (checked against the export's).
        device: ``'auto'`` (CUDA execution provider if installed, else CPU), ``'cpu'``,
            ``'cuda'``/``'cuda:N'`` (needs onnxruntime-gpu).
        precision: ``'auto'``/``'fp32'``; ``'fp16'`` only with the TensorRT execution
            provider (the graph itself is fp32).
    """

    def __init__(self, path: str | Path, *, name: str, device: str = 'auto',
                 precision: str = 'auto') -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendUnavailableError(
                "backend 'onnxruntime' needs the onnxruntime package (pip install "
                'onnxruntime, or onnxruntime-gpu for CUDA).') from err
        self.path = Path(path)
        meta = read_metadata(self.path)
        check_name(name, meta['name'], self.path)
        self.name = meta['name']
        self.output_kind: OutputKind = meta['output_kind']  # type: ignore[assignment]
        self.backend = 'onnxruntime'
        self.image_size = (int(meta['image_height']), int(meta['image_width']))
        self._network_size = (int(meta['network_height']), int(meta['network_width']))
        graph_precision = meta.get('precision', 'fp32')
        if graph_precision == 'fp16':
            if precision == 'fp32':
                raise ConfigError(f"{self.path} computes in fp16; precision 'fp32' is impossible.")
            precision = 'fp32'  # no TensorRT-EP down-casting on top of an fp16 graph
        providers, self.device, self.precision = _providers(
            ort.get_available_providers(), device, precision)
        if graph_precision in ('fp16', 'int8'):
            self.precision = graph_precision
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as err:  # onnxruntime raises its own pybind types
            raise ModelLoadError(f'onnxruntime cannot load {self.path}: {err}') from err
        self._dynamic_batch = not isinstance(self.session.get_inputs()[0].shape[0], int)
        self.infer(np.zeros((*self.image_size, 3), np.uint8))  # warm-up

    @property
    def input_size(self) -> tuple[int, int]:
        return self._network_size

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        self._check_size(height, width)
        return self._network_size

    def _check_size(self, height: int, width: int) -> None:
        check_image_size(self.path, self.image_size, height, width)

    def _infer_batch(self, batch: np.ndarray) -> np.ndarray:
        self._check_size(batch.shape[1], batch.shape[2])
        batch = np.ascontiguousarray(batch)
        if self._dynamic_batch:
            return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        return np.concatenate(
            [self.session.run([OUTPUT_NAME], {INPUT_NAME: batch[i:i + 1]})[0]
             for i in range(len(batch))])


def _providers(
    available: list[str], device: str, precision: str,
) -> tuple[list[Any], str, str]:
    """Execution providers for a device request, plus the resolved device and precision."""
    gpu: list[str] = [
        p for p in ('TensorrtExecutionProvider', 'CUDAExecutionProvider') if p in available]
    if device == 'cpu':
        chosen: list[str] = []
    elif device == 'auto':
        chosen = gpu
    elif device == 'cuda' or (device.startswith('cuda:') and device[5:].isdigit()):
        if not gpu:
            raise BackendUnavailableError(
                f'Device {device!r} requested but onnxruntime has no CUDA/TensorRT execution '
                f'provider (available: {", ".join(available)}); install onnxruntime-gpu.')
        chosen = gpu
    else:
        raise ConfigError(f"Unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'.")
    if precision not in ('auto', 'fp32', 'fp16'):
        raise ConfigError(f"Unknown precision {precision!r}; expected 'auto', 'fp32' or 'fp16'.")
    has_trt = 'TensorrtExecutionProvider' in chosen
    use_fp16 = precision == 'fp16' or (precision == 'auto' and has_trt)
    if use_fp16 and not has_trt:
        raise ConfigError(
            "precision 'fp16' with onnxruntime needs the TensorRT execution provider; the "
            "exported graph is fp32. Use precision 'fp32' or backend 'tensorrt'.")
    index = int(device[5:]) if device.startswith('cuda:') else 0
    providers: list[Any] = []
    for name in chosen:
        options: dict[str, object] = {'device_id': index}
        if name == 'TensorrtExecutionProvider':
            options['trt_fp16_enable'] = use_fp16
        providers.append((name, options))
    providers.append('CPUExecutionProvider')
    resolved = f'cuda:{index}' if chosen and index else ('cuda' if chosen else 'cpu')
    return providers, resolved, 'fp16' if use_fp16 else 'fp32'
