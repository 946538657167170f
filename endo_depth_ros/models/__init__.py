"""Depth models behind one interface: ``load(name, checkpoint) -> DepthModel``.

Example::

    from endo_depth_ros import models
    model = models.load('photometric')            # no weights needed
    disparity = model.infer(rgb)                  # (H, W) float32, NaN invalid
    model = models.load('dav2-s', 'depth_anything_v2_vits.pth')

Torch, transformers, onnxruntime and TensorRT are imported only by the models that
need them, so ``load('photometric')`` stays light.
"""

from endo_depth_ros.models.base import OUTPUT_KINDS, DepthModel, OutputKind
from endo_depth_ros.models.registry import BACKENDS, MODEL_NAMES, PRECISIONS, load

__all__ = [
    'BACKENDS',
    'MODEL_NAMES',
    'OUTPUT_KINDS',
    'PRECISIONS',
    'DepthModel',
    'OutputKind',
    'load',
]
