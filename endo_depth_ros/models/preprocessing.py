"""Network input sizing, normalisation and device/precision choice, shared by all backends.

``DepthNet`` wraps a transformers depth network so that the whole per-frame work
runs on the model's device and inside one graph (the same graph is exported to
ONNX): uint8 ``(N, H, W, 3)`` RGB -> float -> resize (bicubic, no antialiasing) ->
normalise -> network -> upsampling back to ``(N, H, W)``. An ``InputRecipe`` holds
what differs between the families' official code:

=====================  ==========  ===========================  ========  ====================
recipe                 multiple    resize rule                  mean/std  output upsampling
=====================  ==========  ===========================  ========  ====================
Depth Anything V2      14          short side >= size (lower)   ImageNet  bilinear, corners
Depth Anything V1      14          short side >= size (lower)   ImageNet  bilinear
MiDaS v3 (official)    32          side nearest to size         0.5/0.5   bicubic
DPT (HF processor)     32          square size x size           0.5/0.5   bilinear, corners
=====================  ==========  ===========================  ========  ====================

("corners": ``align_corners=True``.) V2 is ``infer_image``, V1 its ``run.py``, MiDaS
its ``run.py`` with ``keep_aspect_ratio`` (the default), DPT the transformers image
processor of the Hugging Face DPT folders.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any

import torch
from torch import nn

from endo_depth_ros.errors import BackendUnavailableError, ConfigError
from endo_depth_ros.models import hardware

#: ImageNet statistics, used by Depth Anything (DINOv2 backbone).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: MiDaS v3 / DPT normalise to [-1, 1].
DPT_MEAN = (0.5, 0.5, 0.5)
DPT_STD = (0.5, 0.5, 0.5)
#: How the network input size follows the camera: ``'auto'`` scales the short side to
#: ``input_size`` but never above the camera's own short side (rounded to the patch
#: multiple), so a small camera is not upsampled into a slower, no more detailed input;
#: ``'official'`` always scales the short side to ``input_size``, as the authors' code.
RESIZE_MODES: tuple[str, ...] = ('auto', 'official')


@dataclass(frozen=True)
class InputRecipe:
    """How a family's official code sizes, normalises and restores an image (module table).

    Attributes:
        multiple: network sides are multiples of it (pixels).
        resize: ``'lower_bound'``, ``'minimal'`` or ``'square'`` (see ``recipe_size``).
        mean, std: per-channel normalisation of RGB in [0, 1].
        output_mode: ``'bilinear'`` or ``'bicubic'`` upsampling of the output.
        output_align_corners: ``align_corners`` of that upsampling.
        native_size: the official network size (pixels), used when none is given.
    """

    multiple: int
    resize: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_mode: str
    output_align_corners: bool
    native_size: int


DEPTH_ANYTHING_V2 = InputRecipe(14, 'lower_bound', IMAGENET_MEAN, IMAGENET_STD, 'bilinear',
                                True, 518)
DEPTH_ANYTHING_V1 = InputRecipe(14, 'lower_bound', IMAGENET_MEAN, IMAGENET_STD, 'bilinear',
                                False, 518)
MIDAS_V3 = InputRecipe(32, 'minimal', DPT_MEAN, DPT_STD, 'bicubic', False, 384)
HF_DPT = InputRecipe(32, 'square', DPT_MEAN, DPT_STD, 'bilinear', True, 384)


def recipe_size(recipe: InputRecipe, height: int, width: int, size: int) -> tuple[int, int]:
    """Network input ``(h, w)`` for an image under ``recipe`` with target ``size``.

    ``'lower_bound'``: see ``network_size``. ``'minimal'`` (MiDaS): keep the aspect
    ratio, scaling by whichever of ``size / height`` and ``size / width`` is closer to
    1, and round both sides to the nearest multiple. ``'square'``: ``size`` rounded
    to a multiple, for both sides.
    """
    m = recipe.multiple
    if recipe.resize == 'lower_bound':
        return network_size(height, width, size, m)
    if recipe.resize == 'minimal':
        scale_h, scale_w = size / height, size / width
        scale = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h
        # round() rounds halves to even, as numpy's round in the official code.
        return (max(m, round(height * scale / m) * m), max(m, round(width * scale / m) * m))
    side = network_size(1, 1, size, m)[0]
    return side, side


def network_size(height: int, width: int, input_size: int, multiple: int) -> tuple[int, int]:
    """Network input size for an image, as the official Depth Anything ``Resize``.

    Keeps the aspect ratio, scales so that the short side is ``input_size``
    ("lower bound"), and rounds both sides to multiples of ``multiple`` (rounding up
    where rounding to nearest would fall below the lower bound).

    Args:
        height, width: image size in pixels.
        input_size: target short side in pixels.
        multiple: patch multiple (14 for DINOv2, 32 for DPT).

    Returns:
        ``(network_height, network_width)``.
    """
    scale = input_size / min(height, width)

    def constrain(x: float) -> int:
        y = round(x / multiple) * multiple
        if y < min(input_size, x):
            y = math.ceil(x / multiple) * multiple
        return max(multiple, int(y))

    return constrain(height * scale), constrain(width * scale)


def resolve_device(device: str) -> str:
    """Turn ``'auto'|'cpu'|'cuda'|'cuda:N'`` into a concrete torch device string.

    Raises:
        ConfigError: not one of those forms.
        BackendUnavailableError: CUDA was asked for but torch sees no CUDA device.
    """
    if device == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cpu':
        return device
    if device == 'cuda' or (device.startswith('cuda:') and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f'Device {device!r} requested but CUDA is not available to torch '
                f'{torch.__version__} (no GPU, driver or CUDA build); use device="cpu".')
        index = int(device[5:]) if ':' in device else 0
        if index >= torch.cuda.device_count():
            raise BackendUnavailableError(
                f'Device {device!r} requested but only {torch.cuda.device_count()} CUDA '
                'device(s) exist.')
        return device
    raise ConfigError(f"Unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'.")


def resolve_precision(precision: str, device: str) -> str:
    """``'auto'`` -> fp16 on CUDA, fp32 on CPU; fp16 on the CPU and bf16 without it refused.

    ``auto`` stays fp32 on the CPU here: the ``auto`` backend choice
    (``endo_depth_ros.models.auto``) decides whether bf16 is worth it for a network.

    Raises:
        ConfigError: unknown value, ``'fp16'`` on the CPU (slow and inaccurate there), or
            ``'bf16'`` on a CPU without native bf16 (``hardware.cpu_supports_bf16``).
    """
    if precision == 'auto':
        return 'fp16' if device.startswith('cuda') else 'fp32'
    if precision == 'fp32':
        return precision
    if precision == 'bf16':
        if not device.startswith('cuda') and not hardware.cpu_supports_bf16():
            raise ConfigError(
                f"precision 'bf16' needs a CPU with native bf16 (AMX or AVX512-BF16); "
                f'{hardware.cpu_name()} has neither. Use precision fp32 or auto.')
        return precision
    if precision == 'fp16':
        if not device.startswith('cuda'):
            raise ConfigError(
                f"precision 'fp16' needs a CUDA device (device is {device!r}); "
                "use precision 'fp32' or 'auto' on the CPU.")
        return precision
    raise ConfigError(
        f"Unknown precision {precision!r}; expected 'auto', 'fp32', 'fp16' or 'bf16'.")


class DepthNet(nn.Module):
    """uint8 RGB batch in, one float32 map per image at the input resolution out.

    Args:
        network: a transformers ``DepthAnythingForDepthEstimation`` or
            ``DPTForDepthEstimation``.
        input_size: target size of the network input (pixels, see ``recipe_size``).
        recipe: the family's official pre/post-processing (None: Depth Anything V2
            for Depth Anything networks, the HF processor for DPT ones).
        input_size: short side of the network input (pixels).
        resize: ``'auto'`` or ``'official'`` (see ``RESIZE_MODES``).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, network: nn.Module, input_size: int, recipe: InputRecipe | None = None,
        resize: str = 'official',
    ) -> None:
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ConfigError(f'Unknown input resize {resize!r}; expected one of {RESIZE_MODES}.')
        self.network = network
        self.input_size = input_size
        self.resize = resize
        if recipe is None:
            is_dpt = getattr(network.config, 'model_type', '') == 'dpt'
            recipe = HF_DPT if is_dpt else DEPTH_ANYTHING_V2
        self.recipe = recipe
        self.multiple = recipe.multiple
        self.register_buffer('mean', torch.tensor(recipe.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(recipe.std).view(1, 3, 1, 1), persistent=False)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input ``(h, w)`` for an image of ``height x width`` (per the recipe).

        With ``resize='auto'`` the target never exceeds the image's own short side
        (rounded to the patch multiple): a small camera is not upsampled.
        """
        target = self.input_size
        if self.resize == 'auto':
            own = max(self.multiple, round(min(height, width) / self.multiple) * self.multiple)
            target = min(target, own)
        return recipe_size(self.recipe, height, width, target)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``rgb``: (N, H, W, 3) uint8 -> (N, H, W) float32 network output."""
        # Python ints: sizes are static per camera (ONNX/TensorRT graphs bake them in).
        height, width = int(rgb.shape[1]), int(rgb.shape[2])
        net_h, net_w = self.network_size(height, width)
        x = rgb.permute(0, 3, 1, 2).to(self.mean.dtype) * (1.0 / 255.0)
        if (net_h, net_w) != (height, width):
            # Bicubic without antialiasing, as the official cv2.INTER_CUBIC resize.
            x = nn.functional.interpolate(
                x, size=(net_h, net_w), mode='bicubic', align_corners=False)
        x = (x - self.mean) / self.std
        out: Any = self.network(pixel_values=x, return_dict=True)
        pred = out.predicted_depth
        if pred.ndim == 3:
            pred = pred[:, None]
        if tuple(pred.shape[-2:]) != (height, width):
            pred = nn.functional.interpolate(
                pred, size=(height, width), mode=self.recipe.output_mode,
                align_corners=self.recipe.output_align_corners)
        return pred[:, 0].float()
