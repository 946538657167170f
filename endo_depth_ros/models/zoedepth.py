"""ZoeDepth (metric depth in metres) from Hugging Face folders, through transformers.

A folder holds ``config.json`` (``model_type`` ``zoedepth``), ``model.safetensors`` (or
``pytorch_model.bin``) and usually ``preprocessor_config.json``. Nothing is fetched.

Per frame, as transformers' ``ZoeDepthImageProcessor`` + ``post_process_depth_estimation``
(which follow the original ZoeDepth ``infer`` with ``pad_input=True``), inside one
traceable graph: [0, 1] RGB -> reflect padding of ``int(sqrt(H / 2) * 3)`` rows and
``int(sqrt(W / 2) * 3)`` columns on each side -> bilinear (``align_corners=True``) resize
of the padded image to the processor size (default 384x512, aspect kept "as little
scaling as possible", multiples of 32) -> ``(x - 0.5) / 0.5`` -> network -> bicubic
resize back to the padded size -> padding cropped. The processor's values are read
from ``preprocessor_config.json`` when present.

The original isl-org/ZoeDepth ``.pt`` checkpoints (timm BEiT layout) are not read here:
convert them with transformers' ``convert_zoedepth_to_hf.py`` and load the folder.
"""

from __future__ import annotations

from dataclasses import dataclass
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from endo_depth_ros.errors import ModelLoadError


@dataclass(frozen=True)
class ZoePreprocessing:
    """The processor settings that change the computation (see module doc)."""

    height: int = 384
    width: int = 512
    multiple: int = 32
    keep_aspect_ratio: bool = True
    pad: bool = True
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def from_file(cls, path: Path) -> ZoePreprocessing:
        """Settings of a ``preprocessor_config.json`` (defaults where a key is absent)."""
        try:
            raw = json.loads(path.read_text())
            size = raw.get('size', {})
            multiple = raw.get('ensure_multiple_of', cls.multiple)
            return cls(
                height=int(size.get('height', cls.height)), width=int(size.get('width', cls.width)),
                multiple=max(1, round(multiple)) if multiple >= 1 else 1,
                keep_aspect_ratio=bool(raw.get('keep_aspect_ratio', cls.keep_aspect_ratio)),
                pad=bool(raw.get('do_pad', cls.pad)),
                mean=tuple(raw.get('image_mean', cls.mean)),
                std=tuple(raw.get('image_std', cls.std)))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError,
                ValueError) as err:
            raise ModelLoadError(f'{path} is not a valid ZoeDepth preprocessor config: {err}'
                                 ) from None


def padding(height: int, width: int) -> tuple[int, int]:
    """Reflect padding ``(rows, cols)`` on each side of an image (ZoeDepth's ``fh = fw = 3``)."""
    return int(math.sqrt(height / 2) * 3), int(math.sqrt(width / 2) * 3)


class ZoeDepthFrames(nn.Module):
    """uint8 RGB batch -> metric depth (metres) per image, for a ``ZoeDepthForDepthEstimation``.

    Args:
        network: the transformers model.
        preprocessing: processor settings.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, network: nn.Module, preprocessing: ZoePreprocessing) -> None:
        super().__init__()
        self.network = network
        self.pre = preprocessing
        self.input_size = min(preprocessing.height, preprocessing.width)
        self.register_buffer('mean', torch.tensor(preprocessing.mean).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(preprocessing.std).view(1, 3, 1, 1),
                             persistent=False)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input ``(h, w)`` for an image (after padding), as the processor's resize."""
        pad_h, pad_w = padding(height, width) if self.pre.pad else (0, 0)
        height, width = height + 2 * pad_h, width + 2 * pad_w
        scale_h, scale_w = self.pre.height / height, self.pre.width / width
        if self.pre.keep_aspect_ratio:  # scale as little as possible
            if abs(1 - scale_w) < abs(1 - scale_h):
                scale_h = scale_w
            else:
                scale_w = scale_h

        def constrain(value: float) -> int:
            return int(round(value / self.pre.multiple) * self.pre.multiple)

        return constrain(scale_h * height), constrain(scale_w * width)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """``rgb``: (N, H, W, 3) uint8 -> (N, H, W) float32 depth in metres."""
        height, width = int(rgb.shape[1]), int(rgb.shape[2])
        net_h, net_w = self.network_size(height, width)
        pad_h, pad_w = padding(height, width) if self.pre.pad else (0, 0)
        x = rgb.permute(0, 3, 1, 2).to(self.mean.dtype) * (1.0 / 255.0)
        if pad_h or pad_w:
            x = nn.functional.pad(x, (pad_w, pad_w, pad_h, pad_h), mode='reflect')
        x = nn.functional.interpolate(x, size=(net_h, net_w), mode='bilinear',
                                      align_corners=True)
        x = (x - self.mean) / self.std
        out: Any = self.network(pixel_values=x, return_dict=True)
        depth = out.predicted_depth[:, None]
        depth = nn.functional.interpolate(
            depth, size=(height + 2 * pad_h, width + 2 * pad_w), mode='bicubic',
            align_corners=False)
        return depth[:, 0, pad_h:pad_h + height, pad_w:pad_w + width].float()


def load_network(name: str, path: str | Path) -> tuple[ZoeDepthFrames, str]:
    """Load a ZoeDepth Hugging Face folder strictly.

    Returns:
        The ``ZoeDepthFrames`` (CPU, fp32, eval) and ``'metric_depth'``.

    Raises:
        ModelLoadError: not a folder, not a ZoeDepth config, or weights that do not fit.
    """
    from huggingface_hub.errors import StrictDataclassError
    from transformers import ZoeDepthForDepthEstimation

    path = Path(path)
    if not path.is_dir() or not (path / 'config.json').is_file():
        raise ModelLoadError(
            f'{path} is not a ZoeDepth Hugging Face folder (config.json + model.safetensors); '
            'original isl-org .pt files must be converted with transformers first.')
    try:
        raw = json.loads((path / 'config.json').read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f'{path / "config.json"} is not valid JSON: {err}') from None
    if not isinstance(raw, dict) or raw.get('model_type') != 'zoedepth':
        found = raw.get('model_type') if isinstance(raw, dict) else None
        raise ModelLoadError(
            f"{path / 'config.json'} has model_type {found!r}; expected 'zoedepth' for {name!r}.")
    if not any((path / f).is_file() for f in ('model.safetensors', 'pytorch_model.bin')):
        raise ModelLoadError(f'{path} has no model.safetensors or pytorch_model.bin.')
    try:
        # transformers' own loader: it renames the folder's (legacy) BEiT keys offline.
        loaded: Any = ZoeDepthForDepthEstimation.from_pretrained(
            path, local_files_only=True, output_loading_info=True)
        network, info = loaded
    except (OSError, ValueError, TypeError, KeyError, RuntimeError,
            StrictDataclassError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f'{path} is not a loadable ZoeDepth folder: {first[:200]}') from None
    problems = [f'{label} [{len(keys)}]: {", ".join(map(str, list(keys)[:8]))}'
                for label, keys in (('missing keys', info.get('missing_keys', [])),
                                    ('unexpected keys', info.get('unexpected_keys', [])),
                                    ('shape mismatches', info.get('mismatched_keys', [])))
                if keys]
    if problems:
        raise ModelLoadError(f'Weights in {path} do not fit {name!r}: ' + '; '.join(problems))
    processor = path / 'preprocessor_config.json'
    pre = ZoePreprocessing.from_file(processor) if processor.is_file() else ZoePreprocessing()
    return ZoeDepthFrames(network.float().eval(), pre).eval(), 'metric_depth'
