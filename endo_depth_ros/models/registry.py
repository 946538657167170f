"""Model names and ``load()``: the one entry point that turns a name into a ``DepthModel``.

Names (``MODEL_NAMES``):

- ``photometric``: the weight-free endoscope prior (OpenCV, CPU; the default).
- ``dav1-s|b|l``: Depth Anything V1 (ViT-S/B/L), relative disparity.
- ``dav2-s|b|l``: Depth Anything V2, relative disparity.
- ``dav2-metric-s|b|l``: Depth Anything V2 metric heads, metric depth in metres.
- ``dpt-hybrid`` / ``dpt-large``: MiDaS v3 DPT from Hugging Face folders (their image
  processor: square input), relative disparity.
- ``midas-dpt-large`` / ``midas-dpt-hybrid``: an original isl-org/MiDaS
  ``dpt_large_384.pt`` / ``dpt_hybrid_384.pt`` (or a DPT-Large / DPT-Hybrid Hugging Face
  folder) with the official MiDaS preprocessing, relative disparity.
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
from endo_depth_ros.models.auto import Plan
from endo_depth_ros.models.base import DepthModel

#: Every name ``load()`` accepts.
MODEL_NAMES: tuple[str, ...] = (
    'photometric',
    'dav1-s', 'dav1-b', 'dav1-l',
    'dav2-s', 'dav2-b', 'dav2-l',
    'dav2-metric-s', 'dav2-metric-b', 'dav2-metric-l',
    'dpt-hybrid', 'dpt-large',
    'midas-dpt-large', 'midas-dpt-hybrid',
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
#: Values of ``load(backend=...)`` (``auto``: see ``endo_depth_ros.models.auto``).
BACKENDS: tuple[str, ...] = ('auto', 'torch', 'onnxruntime', 'openvino', 'tensorrt')
#: Values of ``load(precision=...)``.
PRECISIONS: tuple[str, ...] = ('auto', 'fp32', 'fp16', 'bf16')


def load(
    name: str = 'photometric',
    checkpoint: str | Path | None = None,
    *,
    device: str = 'auto',
    precision: str = 'auto',
    backend: str = 'auto',
    input_size: int | None = None,
    input_resize: str = 'auto',
    compile: bool = False,
    max_depth: float | None = None,
) -> DepthModel:
    """Build a depth model by name and load its weights.

    Args:
        name: one of ``MODEL_NAMES``.
        checkpoint: weights of a network model: a Hugging Face folder (``config.json``
            + ``model.safetensors``), an official Depth Anything ``.pth`` state dict, or
            a single ``.safetensors``/``.pth`` file in Hugging Face key layout; or a file
            written by ``endo-depth-export`` (``.onnx``; ``.xml`` OpenVINO IR). Must be
            ``None`` for ``photometric``.
        device: ``'auto'`` (CUDA if available, else CPU), ``'cpu'``, ``'cuda'``,
            ``'cuda:N'``. Never falls back silently: an unavailable device raises.
        precision: ``'auto'`` (the fastest within ``auto.ACCURACY_BUDGET``: fp16 on
            CUDA, bf16 on CPUs with native bf16, else fp32), ``'fp32'``, ``'fp16'``
            (CUDA only) or ``'bf16'`` (CPUs with AMX/AVX512-BF16, or CUDA).
        backend: ``'auto'`` (see ``endo_depth_ros.models.auto``), ``'torch'``,
            ``'onnxruntime'``, ``'openvino'`` or ``'tensorrt'``.
        input_size: target size of the network input in pixels, applied by the family's
            official resize rule (Depth Anything: short side, multiple of 14; MiDaS: the
            side nearest to it, multiples of 32; DPT folders: square). None: the official
            size (518 Depth Anything, 384 MiDaS/DPT). Ignored by ``photometric`` (it works
            at its own low resolution) and by exported files (fixed at export).
        input_resize: ``'auto'`` (never upsample a camera beyond its own short side) or
            ``'official'`` (always use ``input_size``, as the authors; for parity).
        compile: ``torch.compile`` the torch backend (opt-in; the first frame of each
            size compiles for tens of seconds).
        max_depth: metric Depth Anything models only: the largest depth (m) the
            network outputs (its sigmoid head's scale: 20 for the official indoor
            models, 80 for the outdoor ones). None: a Hugging Face folder's value, else
            20 with a ``MaxDepthAssumedWarning``. An ONNX/TensorRT export has it baked
            in: a different value raises ``ConfigError``.

    Returns:
        A ready ``DepthModel``; ``selection`` says which path ``auto`` took and why.

    Raises:
        ModelLoadError: unknown name, missing or unreadable checkpoint, wrong file
            format, or weights that do not fit the architecture (missing, unexpected or
            mis-shaped keys are listed, with the file name).
        BackendUnavailableError: the device or runtime asked for is not installed/present.
        ConfigError: a bad option value (backend, precision, input_size, max_depth), or a
            precision the hardware lacks.
    """
    from endo_depth_ros.models import auto

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
    if input_resize not in ('auto', 'official'):
        raise ConfigError(
            f"input_resize must be 'auto' or 'official', got {input_resize!r}.")
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
        if backend not in ('auto', 'torch'):
            raise ConfigError(
                f'Video model {name!r} runs with torch or onnxruntime; OpenVINO and TensorRT '
                'engines of its streaming step are not built yet (see the README, "Video '
                'models").')
        if max_depth is not None:
            raise ConfigError(
                f'max_depth does not apply to {name!r}: Video Depth Anything heads are '
                'unbounded (metric models output metres directly).')
        # The official video models run at 518 (short side) unless told otherwise.
        video = load_video_model(name, path, device=device,
                                 precision='fp32' if precision == 'auto' else precision,
                                 input_size=input_size or 518)
        video.selection = f'torch {video.precision}: video models stream in torch.'
        return video
    from endo_depth_ros.models.depth_anything import check_max_depth, parse_name

    if name in FAMILY_MODULES:
        if max_depth is not None:
            raise ConfigError(f'max_depth applies to Depth Anything V2 metric models only, '
                              f'not {name!r}.')
    else:
        check_max_depth(name, parse_name(name).metric, max_depth)
    # backend 'torch' always reads a checkpoint (an ONNX file given to it is refused as one).
    kind = 'torch' if backend == 'torch' else auto.checkpoint_kind(path)
    if kind != 'torch':
        plan = auto.plan_for_export(kind, backend, device, precision)
        model = _load_export(plan, path, name, device, max_depth)
    else:
        model, plan = _load_network(name, path, backend, device, precision, input_size,
                                    input_resize, compile, max_depth)
    model.selection = f'{model.backend} {model.precision}: {plan.reason}.'
    return model


def _load_export(plan: Plan, path: Path, name: str, device: str,
                 max_depth: float | None) -> DepthModel:
    backend, precision = plan.backend, plan.precision
    exported = None
    if path.suffix == '.onnx':
        from endo_depth_ros.models.onnx_runtime import read_metadata

        stored = read_metadata(path).get('max_depth')
        exported = float(stored) if stored else None
        if max_depth is not None and exported is not None and max_depth != exported:
            raise ConfigError(
                f'{path} was exported with max_depth {exported:g} m, not {max_depth:g}; '
                're-export it with endo-depth-export --max-depth.')
    model: DepthModel
    if backend == 'onnxruntime':
        from endo_depth_ros.models.onnx_runtime import OnnxDepthModel
        model = OnnxDepthModel(path, name=name, device=device, precision=precision)
    elif backend == 'openvino':
        from endo_depth_ros.models.openvino import OpenVinoDepthModel
        model = OpenVinoDepthModel.from_file(path, name=name, device=device,
                                             precision=precision)
    elif backend == 'tensorrt':
        from endo_depth_ros.models.tensorrt import TensorRTDepthModel
        model = TensorRTDepthModel(path, name=name, device=device, precision=precision)
    else:
        raise ConfigError(f'backend {backend!r} runs a torch checkpoint, not the export {path}.')
    if model.output_kind == 'metric_depth':
        model.max_depth = exported
    return model


def _load_network(name: str, path: Path, backend: str, device: str, precision: str,
                  input_size: int | None, input_resize: str, compile: bool,
                  max_depth: float | None) -> tuple[DepthModel, Plan]:
    from endo_depth_ros.models import auto
    from endo_depth_ros.models.depth_anything import TorchDepthModel, load_network
    from endo_depth_ros.models.preprocessing import resolve_device, resolve_precision

    if backend == 'openvino':
        from endo_depth_ros.models.openvino import _check_device, import_openvino
        _check_device(device)
        import_openvino()
        device = 'cpu'
    # Refuse an unavailable device or precision before reading (possibly large) weights.
    device = resolve_device(device)
    if precision != 'auto' and backend in ('auto', 'torch'):
        resolve_precision(precision, device)
    network, output_kind = (load_family_network(name, path, input_size=input_size)
                            if name in FAMILY_MODULES
                            else load_network(name, path, max_depth=max_depth))
    if name in auto.TORCH_ONLY_FAMILIES and backend == 'auto':
        plan = Plan('torch', 'fp32' if precision == 'auto' else precision,
                    f'{name} runs in torch (its OpenVINO/bf16 accuracy is not measured)')
    else:
        plan = auto.plan_for_network(network, backend, device, precision)
    on_torch = plan.backend == 'torch'
    model: DepthModel = TorchDepthModel(
        network, name=name, output_kind=output_kind, device=device,
        precision=plan.precision if on_torch else 'fp32', input_size=input_size,
        resize=input_resize, compile=compile and on_torch, warmup=on_torch)
    if compile and on_torch:
        seconds = model.runner.compile_seconds  # type: ignore[attr-defined]
        plan = Plan(plan.backend, plan.precision,
                    f'{plan.reason}; torch.compile warm-up took {seconds:.1f} s '
                    '(each new image size compiles again)')
    if plan.backend == 'openvino':
        from endo_depth_ros.models.openvino import OpenVinoDepthModel
        # Converted and compiled per camera size on its first frame (cached on disk).
        # With precision 'auto', bf16 is checked against the accuracy budget per size.
        model = OpenVinoDepthModel.from_torch(
            model, precision=plan.precision,
            budget=auto.ACCURACY_BUDGET if precision == 'auto' else None,
            centred=name in FAMILY_MODULES)  # sigmoid heads add a constant (see there)
    return model, plan

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
    if backend not in ('auto', 'torch'):
        raise ConfigError(
            f"Model 'photometric' runs with OpenCV only; backend {backend!r} does not apply.")
    if device not in ('auto', 'cpu'):
        raise BackendUnavailableError(
            f"Model 'photometric' runs on the CPU only; device {device!r} is not supported.")
    if precision in ('fp16', 'bf16'):
        raise ConfigError(
            f"Model 'photometric' computes in fp32 only; got precision {precision!r}.")
    model = PhotometricModel()
    model.selection = 'opencv fp32: the photometric prior has no backend choice'
    return model
