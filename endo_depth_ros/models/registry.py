"""Model names and ``load()``: the one entry point that turns a name into a ``DepthModel``.

Names (``MODEL_NAMES``):

- ``photometric``: the weight-free endoscope prior (OpenCV, CPU; the default).
- ``dav1-s|b|l``: Depth Anything V1 (ViT-S/B/L), relative disparity.
- ``dav2-s|b|l``: Depth Anything V2, relative disparity.
- ``dav2-metric-s|b|l``: Depth Anything V2 metric heads, metric depth in metres.
- ``dpt-hybrid`` / ``dpt-large``: MiDaS v3 DPT from Hugging Face folders (their image
  processor: square input), relative disparity.
- ``midas-dpt-large``: an original isl-org/MiDaS ``dpt_large_384.pt`` (or a DPT-Large
  Hugging Face folder) with the official MiDaS preprocessing, relative disparity. The
  original ``dpt_hybrid_384.pt`` is not converted (its HF folder loads as ``dpt-hybrid``).
- ``dav1`` / ``dav2`` / ``dav2-metric``: like the sized names, with the ViT size
  read from the checkpoint's tensor shapes (any size, also non-standard ones).
- ``endodac``: EndoDAC (``depth_model.pth``; adapters merged at load), relative disparity.
- ``monodepth2`` / ``af-sfmlearner``: monodepth2-layout folders (``encoder.pth`` +
  ``depth.pth``) of nianticlabs/Endo-Depth-and-Motion resp. AF-SfMLearner (they differ in
  normalisation and depth range); ``sc-sfmlearner``: SC-SfMLearner/Endo-SfMLearner
  ``dispnet_*.pth.tar``. Relative disparity.
- ``zoedepth``: ZoeDepth Hugging Face folders, metric depth in metres.
- ``vda-s|b|l``, ``vda-metric-s|b|l``: Video Depth Anything (relative disparity /
  metres), a video model: ``infer`` streams, ``infer_video`` runs offline windows.
- ``vda`` / ``vda-metric``: like the sized names, ViT size read from the checkpoint.
- ``endodav``: EndoDAV (VDA fine-tuned with adapters, merged at load; size from the
  checkpoint), a video model like VDA.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from endo_depth_ros.errors import BackendUnavailableError, ConfigError, ModelLoadError
from endo_depth_ros.models.base import DepthModel

#: Every name ``load()`` accepts.
MODEL_NAMES: tuple[str, ...] = (
    'photometric',
    'dav1-s', 'dav1-b', 'dav1-l',
    'dav2-s', 'dav2-b', 'dav2-l',
    'dav2-metric-s', 'dav2-metric-b', 'dav2-metric-l',
    'dpt-hybrid', 'dpt-large',
    'midas-dpt-large',
    'dav1', 'dav2', 'dav2-metric',
    'endodac', 'monodepth2', 'af-sfmlearner', 'sc-sfmlearner', 'zoedepth',
    'vda-s', 'vda-b', 'vda-l', 'vda-metric-s', 'vda-metric-b', 'vda-metric-l',
    'vda', 'vda-metric', 'endodav',
)
#: Names served by a family module other than depth_anything.py: name -> module.
FAMILY_MODULES: dict[str, str] = {
    'endodac': 'endo_depth_ros.models.endodac',
    'monodepth2': 'endo_depth_ros.models.monodepth2',
    'af-sfmlearner': 'endo_depth_ros.models.monodepth2',
    'sc-sfmlearner': 'endo_depth_ros.models.monodepth2',
    'zoedepth': 'endo_depth_ros.models.zoedepth',
}
#: Values of ``load(backend=...)``.
BACKENDS: tuple[str, ...] = ('torch', 'onnxruntime', 'tensorrt')
#: Values of ``load(precision=...)``.
PRECISIONS: tuple[str, ...] = ('auto', 'fp32', 'fp16')


def load(
    name: str = 'photometric',
    checkpoint: str | Path | None = None,
    *,
    device: str = 'auto',
    precision: str = 'auto',
    backend: str = 'torch',
    input_size: int | None = None,
    max_depth: float | None = None,
) -> DepthModel:
    """Build a depth model by name and load its weights.

    Args:
        name: one of ``MODEL_NAMES``.
        checkpoint: weights of a network model: a Hugging Face folder (``config.json``
            + ``model.safetensors``), an official Depth Anything ``.pth`` state dict, or
            a single ``.safetensors``/``.pth`` file in Hugging Face key layout. For
            ``backend='onnxruntime'``/``'tensorrt'``: the ``.onnx`` file written by
            ``endo-depth-export``. Must be ``None`` for ``photometric``.
        device: ``'auto'`` (CUDA if available, else CPU), ``'cpu'``, ``'cuda'``,
            ``'cuda:N'``. Never falls back silently: an unavailable device raises.
        precision: ``'auto'`` (fp16 on CUDA, fp32 on CPU), ``'fp32'`` or ``'fp16'``
            (CUDA only: fp16 on the CPU raises ``ConfigError``).
        backend: ``'torch'``, ``'onnxruntime'`` or ``'tensorrt'``.
        input_size: target size of the network input in pixels, applied by the family's
            official resize rule (Depth Anything: short side, multiple of 14; MiDaS: the
            side nearest to it, multiples of 32; DPT folders: square). None: the official
            size (518 Depth Anything, 384 MiDaS/DPT). Ignored by ``photometric`` (it works
            at its own low resolution) and by ONNX/TensorRT files (fixed at export).
        max_depth: metric Depth Anything models only: the largest depth (m) the
            network outputs (its sigmoid head's scale: 20 for the official indoor
            models, 80 for the outdoor ones). None: a Hugging Face folder's value, else
            20 with a ``MaxDepthAssumedWarning``. An ONNX/TensorRT export has it baked
            in: a different value raises ``ConfigError``.

    Returns:
        A ready (warmed-up) ``DepthModel``.

    Raises:
        ModelLoadError: unknown name, missing or unreadable checkpoint, wrong file
            format, or weights that do not fit the architecture (missing, unexpected or
            mis-shaped keys are listed, with the file name).
        BackendUnavailableError: the device or runtime asked for is not installed/present.
        ConfigError: a bad option value (backend, precision, input_size, max_depth).
    """
    if name not in MODEL_NAMES:
        raise ModelLoadError(
            f'Unknown depth model {name!r}; known models: {", ".join(MODEL_NAMES)}.')
    if backend not in BACKENDS:
        raise ConfigError(f'Unknown backend {backend!r}; expected one of {BACKENDS}.')
    if precision not in PRECISIONS:
        raise ConfigError(f'Unknown precision {precision!r}; expected one of {PRECISIONS}.')
    if input_size is not None and (
            isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 14):
        raise ConfigError(f'input_size must be None or an integer >= 14, got {input_size!r}.')
    if name == 'photometric':
        return _load_photometric(checkpoint, device, precision, backend)
    if checkpoint is None:
        raise ModelLoadError(
            f'Model {name!r} needs a checkpoint (a Hugging Face folder or an official .pth); '
            "no weights can be downloaded. Use name 'photometric' to run without weights.")
    path = Path(checkpoint)
    if not path.exists():
        raise ModelLoadError(f'Checkpoint of {name!r} not found: {path}')
    from endo_depth_ros.models.video_depth_anything import is_video_name, load_video_model
    if is_video_name(name):
        if backend == 'onnxruntime':
            from endo_depth_ros.models.video_depth_anything import OnnxVideoDepthModel
            return OnnxVideoDepthModel(path, name=name, device=device)
        if backend != 'torch':
            raise ConfigError(
                f'Video model {name!r} runs with torch or onnxruntime; TensorRT engines of '
                'its streaming step are not built yet (see the README, "Video models").')
        if max_depth is not None:
            raise ConfigError(
                f'max_depth does not apply to {name!r}: Video Depth Anything heads are '
                'unbounded (metric models output metres directly).')
        # The official video models run at 518 (short side) unless told otherwise.
        return load_video_model(name, path, device=device, precision=precision,
                                input_size=input_size or 518)
    from endo_depth_ros.models.depth_anything import check_max_depth, parse_name

    if name in FAMILY_MODULES:
        if max_depth is not None:
            raise ConfigError(f'max_depth applies to Depth Anything V2 metric models only, '
                              f'not {name!r}.')
    else:
        check_max_depth(name, parse_name(name).metric, max_depth)
    if backend in ('onnxruntime', 'tensorrt'):
        return _load_export(name, path, backend, device, precision, max_depth)
    from endo_depth_ros.models.depth_anything import TorchDepthModel, load_network
    from endo_depth_ros.models.preprocessing import resolve_device, resolve_precision

    # Refuse an unavailable device before reading (possibly large) weights.
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    network, output_kind = (load_family_network(name, path, input_size=input_size)
                            if name in FAMILY_MODULES
                            else load_network(name, path, max_depth=max_depth))
    return TorchDepthModel(network, name=name, output_kind=output_kind, device=device,
                           precision=precision, input_size=input_size)


def _load_export(
    name: str, path: Path, backend: str, device: str, precision: str, max_depth: float | None,
) -> DepthModel:
    from endo_depth_ros.models.onnx_runtime import OnnxDepthModel, read_metadata

    stored = read_metadata(path).get('max_depth')
    exported = float(stored) if stored else None
    if max_depth is not None and exported is not None and max_depth != exported:
        raise ConfigError(
            f'{path} was exported with max_depth {exported:g} m, not {max_depth:g}; '
            're-export it with endo-depth-export --max-depth.')
    model: DepthModel
    if backend == 'onnxruntime':
        model = OnnxDepthModel(path, name=name, device=device, precision=precision)
    else:
        from endo_depth_ros.models.tensorrt import TensorRTDepthModel
        model = TensorRTDepthModel(path, name=name, device=device, precision=precision)
    if model.output_kind == 'metric_depth':
        model.max_depth = exported
    return model


def load_family_network(name: str, path: str | Path, *,
                        input_size: int | None) -> tuple[Any, Any]:
    """``(network, output_kind)`` of a ``FAMILY_MODULES`` name (its module's ``load_network``)."""
    import importlib

    module = importlib.import_module(FAMILY_MODULES[name])
    if input_size and 'input_size' in inspect.signature(module.load_network).parameters:
        return module.load_network(name, path, input_size=input_size)
    return module.load_network(name, path)


def _load_photometric(
    checkpoint: str | Path | None, device: str, precision: str, backend: str,
) -> DepthModel:
    from endo_depth_ros.models.photometric import PhotometricModel
    if checkpoint is not None:
        raise ModelLoadError(
            f"Model 'photometric' has no weights; got checkpoint {str(checkpoint)!r}.")
    if backend != 'torch':
        raise ConfigError(
            f"Model 'photometric' runs with OpenCV only; backend {backend!r} does not apply.")
    if device not in ('auto', 'cpu'):
        raise BackendUnavailableError(
            f"Model 'photometric' runs on the CPU only; device {device!r} is not supported.")
    if precision == 'fp16':
        raise ConfigError("Model 'photometric' computes in fp32 only; got precision 'fp16'.")
    return PhotometricModel()
