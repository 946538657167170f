"""The one interface every depth model implements: ``DepthModel.infer(rgb)``.

A model maps RGB uint8 images to one float32 map per image at the input
resolution. ``output_kind`` says what the numbers mean:

- ``'relative_disparity'``: affine-invariant inverse depth (larger = nearer), what
  Depth Anything V1/V2, MiDaS/DPT and the photometric prior emit;
- ``'metric_depth'``: depth along the optical axis in metres.

NaN marks pixels without an estimate (only the photometric prior produces them:
black pixels outside the endoscope's field of view).
"""

from __future__ import annotations

import abc
from typing import Literal

import numpy as np

from endo_depth_ros.errors import BadInputError

OutputKind = Literal['relative_disparity', 'metric_depth']
#: Values of ``DepthModel.output_kind``.
OUTPUT_KINDS: tuple[str, ...] = ('relative_disparity', 'metric_depth')


class DepthModel(abc.ABC):
    """A depth estimator: RGB image(s) in, one float32 map per image out.

    Attributes:
        name: registry name (``'photometric'``, ``'dav2-s'``, ...).
        output_kind: ``'relative_disparity'`` or ``'metric_depth'`` (see module doc).
        device: where the computation runs (``'cpu'``, ``'cuda'``, ``'cuda:1'``).
        precision: ``'fp32'``, ``'fp16'``, ``'bf16'`` or ``'int8'`` (a quantised export).
        backend: ``'torch'``, ``'onnxruntime'``, ``'openvino'``, ``'tensorrt'`` or
            ``'opencv'``.
        selection: which backend and precision ``load()`` chose and why (one sentence,
            for the start-up log and ``/diagnostics``; empty when built directly).
        max_depth: metric networks with a bounded head: the largest depth (m) they can
            output (the scale of Depth Anything's sigmoid head); None otherwise.
    """

    name: str
    output_kind: OutputKind
    device: str
    precision: str
    backend: str
    max_depth: float | None = None
    selection: str = ''

    @property
    @abc.abstractmethod
    def input_size(self) -> tuple[int, int]:
        """Network input ``(height, width)`` of the latest call (before any: of the warm-up)."""

    @abc.abstractmethod
    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The network input ``(height, width)`` used for an image of ``height x width``."""

    @abc.abstractmethod
    def _infer_batch(self, batch: np.ndarray) -> np.ndarray:
        """Predict for a validated ``(N, H, W, 3)`` uint8 batch; return ``(N, H, W)`` float32."""

    def infer(self, rgb: np.ndarray) -> np.ndarray:
        """Estimate depth or disparity for one image or a batch.

        Args:
            rgb: ``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 RGB.

        Returns:
            ``(H, W)`` or ``(N, H, W)`` float32 at the input resolution, in the units
            given by ``output_kind``; NaN where the model has no estimate.

        Raises:
            BadInputError: ``rgb`` is not a uint8 array of one of those shapes
                (reason ``'encoding'`` for the dtype, ``'image_shape'`` for the shape).
        """
        batch = as_batch(rgb)
        out = self._infer_batch(batch)
        return out[0] if rgb.ndim == 3 else out

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(name={self.name!r}, output_kind={self.output_kind!r}, '
                f'backend={self.backend!r}, device={self.device!r}, '
                f'precision={self.precision!r}, input_size={self.input_size})')


def as_batch(rgb: object) -> np.ndarray:
    """Validate an RGB image or batch and return it as ``(N, H, W, 3)`` uint8.

    Raises:
        BadInputError: not an ndarray, not uint8 (reason ``'encoding'``) or not
            ``(H, W, 3)`` / ``(N, H, W, 3)`` with positive sizes (reason ``'image_shape'``).
    """
    if not isinstance(rgb, np.ndarray):
        raise BadInputError(
            f'Expected an RGB image as a numpy array, got {type(rgb).__name__}.', 'image_shape')
    if rgb.dtype != np.uint8:
        raise BadInputError(f'Expected a uint8 RGB image, got dtype {rgb.dtype}.', 'encoding')
    if rgb.ndim not in (3, 4) or rgb.shape[-1] != 3 or min(rgb.shape) < 1:
        raise BadInputError(
            f'Expected an (H, W, 3) or (N, H, W, 3) RGB image, got shape {rgb.shape}.',
            'image_shape')
    if rgb.shape[-3] < 2 or rgb.shape[-2] < 2:
        raise BadInputError(f'Image is too small: shape {rgb.shape}.', 'image_shape')
    return rgb[None] if rgb.ndim == 3 else rgb
