"""Network input sizing, normalisation and device/precision choice, shared by all backends.

``DepthNet`` wraps a transformers depth network so that the whole per-frame work
runs on the model's device and inside one graph (the same graph is exported to
ONNX): uint8 ``(N, H, W, 3)`` RGB -> float -> resize (bicubic; Depth Anything keeps
the aspect ratio with sides multiples of 14, DPT gets a square multiple of 32) ->
normalise -> network -> bilinear upsampling back to ``(N, H, W)``.
"""

from __future__ import annotations

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
        input_size: short side of the network input (pixels).
        resize: ``'auto'`` or ``'official'`` (see ``RESIZE_MODES``).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, network: nn.Module, input_size: int, resize: str = 'official') -> None:
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ConfigError(f'Unknown input resize {resize!r}; expected one of {RESIZE_MODES}.')
        self.network = network
        self.input_size = input_size
        self.resize = resize
        is_dpt = getattr(network.config, 'model_type', '') == 'dpt'
        self.multiple = 32 if is_dpt else 14
        self.square = is_dpt
        mean, std = (DPT_MEAN, DPT_STD) if is_dpt else (IMAGENET_MEAN, IMAGENET_STD)
        self.register_buffer('mean', torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input ``(h, w)`` for an image of ``height x width``.

        transformers' DPT reshapes ViT tokens to a square grid, so DPT models get a
        square input (as its image processor does); Depth Anything keeps the aspect.
        """
        target = self.input_size
        if self.resize == 'auto':
            own = max(self.multiple, round(min(height, width) / self.multiple) * self.multiple)
            target = min(target, own)
        if self.square:
            side = network_size(1, 1, target, self.multiple)[0]
            return side, side
        return network_size(height, width, target, self.multiple)

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
                pred, size=(height, width), mode='bilinear', align_corners=True)
        return pred[:, 0].float()
