"""int8 versions of an ``endo-depth-export`` ONNX file (an option, never an ``auto`` choice).

- ``quantize_dynamic_matmul``: onnxruntime dynamic quantisation of the MatMuls only
  (int8 weights, activations quantised per call). Quantising the convolutions too was
  slower than fp32 on the CPU provider, so they stay fp32. Output: an ONNX file for
  ``backend='onnxruntime'``.
- ``quantize_static_openvino``: NNCF post-training quantisation (transformer preset)
  with calibration frames, e.g. from a bag of the target camera. Output: an OpenVINO IR
  (``.xml`` + ``.bin``) for ``backend='openvino'``.

Both keep the export's ``endo_depth_ros`` metadata with ``precision = int8``. Their
accuracy cost is reported by ``endo-depth-bench models --backends ...,ort-int8,openvino-int8``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
import tempfile

import numpy as np

from endo_depth_ros.errors import ConfigError
from endo_depth_ros.models.onnx_runtime import _META_PREFIX, read_metadata
from endo_depth_ros.models.openvino import import_openvino, write_ir

#: Calibration frames NNCF uses at most (its statistics converge well before).
MAX_CALIBRATION_FRAMES = 300


def quantize_dynamic_matmul(src: str | Path, dst: str | Path) -> Path:
    """Write an onnxruntime int8 copy of ``src`` (MatMul weights int8, dynamic activations).

    Raises:
        ModelLoadError: ``src`` is not an ``endo-depth-export`` file.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    meta = read_metadata(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / 'int8.onnx'
        quantize_dynamic(src, raw, op_types_to_quantize=['MatMul'],
                         weight_type=QuantType.QInt8)
        graph = onnx.load(str(raw))
    del graph.metadata_props[:]
    for key, value in {**meta, 'precision': 'int8', 'quantization': 'dynamic-matmul'}.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = _META_PREFIX + key, str(value)
    onnx.save(graph, str(dst))
    return dst


def quantize_static_openvino(src: str | Path, dst: str | Path,
                             frames: Iterable[np.ndarray], *,
                             max_frames: int = MAX_CALIBRATION_FRAMES) -> tuple[Path, int]:
    """NNCF post-training int8 quantisation of an ONNX export, calibrated on ``frames``.

    Args:
        src: the fp32 ``.onnx`` export.
        dst: the output ``.xml`` (the weights go to the ``.bin`` beside it).
        frames: ``(H, W, 3)`` uint8 RGB images of the export's size.
        max_frames: use at most this many frames.

    Returns:
        The written ``.xml`` path and the number of calibration frames used.

    Raises:
        ConfigError: ``dst`` is not ``.xml``, no frames, or frames of another size.
        BackendUnavailableError: openvino is missing.
    """
    ov = import_openvino()
    try:
        import nncf
    except ImportError as err:
        raise ConfigError('int8 calibration needs the nncf package (pip install nncf).') from err
    src, dst = Path(src), Path(dst)
    if dst.suffix != '.xml':
        raise ConfigError(f'An NNCF int8 model is an OpenVINO IR: use an .xml output, not {dst}.')
    meta = read_metadata(src)
    size = (int(meta['image_height']), int(meta['image_width']))
    batch: list[np.ndarray] = []
    for frame in frames:
        if frame.shape != (*size, 3) or frame.dtype != np.uint8:
            raise ConfigError(f'Calibration frames must be {size[0]}x{size[1]} uint8 RGB, got '
                              f'{frame.shape} {frame.dtype}.')
        batch.append(frame[None])
        if len(batch) >= max_frames:
            break
    if not batch:
        raise ConfigError('No calibration frames.')
    model = ov.Core().read_model(str(src))
    model.reshape({model.inputs[0]: ov.PartialShape([1, *size, 3])})
    quantized = nncf.quantize(model, nncf.Dataset(batch), subset_size=len(batch),
                              model_type=nncf.ModelType.TRANSFORMER)
    dst.parent.mkdir(parents=True, exist_ok=True)
    metadata = {**meta, 'precision': 'int8', 'quantization': 'nncf-ptq',
                'calibration_frames': len(batch)}
    return write_ir(quantized, dst, metadata), len(batch)
