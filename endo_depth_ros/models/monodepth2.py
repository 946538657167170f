"""Self-supervised ResNet depth networks: the monodepth2 family and SC-SfMLearner's DispResNet.

Both share monodepth2's U-Net decoder (five upsampling stages, ELU, reflection padding,
nearest-neighbour upsampling, skip connections) on a torchvision-named ResNet
(``resnet.py``). They differ in checkpoint layout, input normalisation and how the
sigmoid output becomes a disparity, and folders of different authors look identical,
so the variant is part of the registry name, never guessed:

=================  ===================================  ================  ======================
name               checkpoint                           network input     disparity
=================  ===================================  ================  ======================
``monodepth2``     folder ``encoder.pth`` + ``depth.pth``  ``(x-0.45)/0.225``  ``disp_to_depth``,
                   (nianticlabs Monodepth2,                                   [0.1, 100]
                   Endo-Depth-and-Motion)
``af-sfmlearner``  same folder layout (AF-SfMLearner)   ``x`` in [0, 1]   ``disp_to_depth``,
                                                                          [0.1, 150]
``sc-sfmlearner``  ``dispnet_*.pth.tar`` (SC-SfMLearner,  ``(x-0.45)/0.225``  ``10 σ + 0.01``
                   EndoSLAM's Endo-SfMLearner)
=================  ===================================  ================  ======================

(σ: the decoder's finest-scale sigmoid; ``disp_to_depth(σ, min, max) = 1/max + (1/min -
1/max) σ``; the formulas are those of each repository's evaluation code, and
``DispResNet``'s ``alpha σ + beta``.) The output is a relative disparity (the authors
evaluate with per-image median scaling).

Input size: monodepth2 folders store the training size in ``encoder.pth`` (``height``,
``width``), and the authors' test code resizes every image to it (PIL Lanczos), as done
here. SC-SfMLearner checkpoints store no size: the network input keeps the image aspect
with its short side ``input_size``, both sides rounded to multiples of 32 (the
decoder's constraint). The ResNet depth (18/34/50) is read from the tensor shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
import pickle
from typing import Any
import zipfile

import torch
from torch import nn

from endo_depth_ros.errors import ModelLoadError
from endo_depth_ros.models.frame_network import FrameNetwork, SizeRule, aspect_size, fixed_size
from endo_depth_ros.models.resnet import RESNET_LAYOUTS, ResNetEncoder

#: monodepth2's normalisation, inside its ``ResnetEncoder`` (and SC-SfMLearner's loaders).
MONODEPTH_MEAN = (0.45, 0.45, 0.45)
MONODEPTH_STD = (0.225, 0.225, 0.225)
_DECODER_CHANNELS = (16, 32, 64, 128, 256)
#: Tensors of a torchvision ResNet that the depth networks never use.
_CLASSIFIER_KEYS = ('fc.weight', 'fc.bias')


@dataclass(frozen=True)
class Variant:
    """How one author's network is fed and how its sigmoid becomes a disparity.

    Attributes:
        name: registry name.
        layout: ``'monodepth2'`` (folder) or ``'sc-sfmlearner'`` (one ``.pth.tar``).
        normalise: apply ``(x - 0.45) / 0.225`` to the [0, 1] image.
        min_depth, max_depth: ``disp_to_depth`` range (monodepth2 layout).
        alpha, beta: ``alpha * sigmoid + beta`` (SC-SfMLearner layout).
    """

    name: str
    layout: str
    normalise: bool
    min_depth: float = 0.1
    max_depth: float = 100.0
    alpha: float = 10.0
    beta: float = 0.01

    def disparity_range(self) -> tuple[float, float]:
        """``(lowest, highest)`` disparity the output can take."""
        if self.layout == 'monodepth2':
            return 1.0 / self.max_depth, 1.0 / self.min_depth
        return self.beta, self.alpha + self.beta


VARIANTS: dict[str, Variant] = {
    'monodepth2': Variant('monodepth2', 'monodepth2', normalise=True, max_depth=100.0),
    'af-sfmlearner': Variant('af-sfmlearner', 'monodepth2', normalise=False, max_depth=150.0),
    'sc-sfmlearner': Variant('sc-sfmlearner', 'sc-sfmlearner', normalise=True),
}


class ReflectConv3x3(nn.Module):
    """Reflection padding + 3x3 convolution (monodepth2's ``Conv3x3``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class ConvELU(nn.Module):
    """``ReflectConv3x3`` + ELU (monodepth2's ``ConvBlock``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ReflectConv3x3(in_channels, out_channels)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.conv(x))


class DepthDecoder(nn.Module):
    """monodepth2's decoder; only the finest-scale sigmoid is computed.

    ``decoder`` holds, in checkpoint order, ``(upconv i, 0)`` and ``(upconv i, 1)`` for
    i = 4..0, then the four ``dispconv`` heads (scales 0..3; 1..3 are training-only but
    kept so checkpoints load strictly).
    """

    def __init__(self, encoder_channels: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(4, -1, -1):
            in_up = encoder_channels[-1] if i == 4 else _DECODER_CHANNELS[i + 1]
            layers.append(ConvELU(in_up, _DECODER_CHANNELS[i]))
            in_fuse = _DECODER_CHANNELS[i] + (encoder_channels[i - 1] if i > 0 else 0)
            layers.append(ConvELU(in_fuse, _DECODER_CHANNELS[i]))
        layers += [ReflectConv3x3(_DECODER_CHANNELS[s], 1) for s in range(4)]
        self.decoder = nn.ModuleList(layers)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Five encoder maps -> (N, 1, H, W) sigmoid at the input resolution."""
        x = features[-1]
        for stage, i in enumerate(range(4, -1, -1)):
            x = self.decoder[2 * stage](x)
            x = nn.functional.interpolate(x, scale_factor=2.0, mode='nearest')
            if i > 0:
                x = torch.cat([x, features[i - 1]], 1)
            x = self.decoder[2 * stage + 1](x)
        return torch.sigmoid(self.decoder[10](x))


class SelfSupervisedDepthNet(nn.Module):
    """ResNet encoder + monodepth2 decoder + the variant's disparity formula.

    Args:
        num_layers: ResNet depth (18, 34, 50).
        variant: one of ``VARIANTS``.

    Input ``(N, 3, H, W)`` (H, W multiples of 32), already normalised as the variant
    says; output ``(N, 1, H, W)`` disparity.
    """

    def __init__(self, num_layers: int, variant: Variant) -> None:
        super().__init__()
        self.variant = variant
        self.encoder = ResNetEncoder(num_layers)
        self.decoder = DepthDecoder(self.encoder.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sigmoid = self.decoder(self.encoder(x))
        v = self.variant
        if v.layout == 'monodepth2':
            low, high = v.disparity_range()
            return low + (high - low) * sigmoid
        return v.alpha * sigmoid + v.beta


# ------------------------------------------------------------------------- loading


def load_network(
    name: str, path: str | Path, *, input_size: int = 256,
) -> tuple[FrameNetwork, str]:
    """Build a monodepth2-family or SC-SfMLearner network from its official checkpoint.

    Args:
        name: ``'monodepth2'``, ``'af-sfmlearner'`` or ``'sc-sfmlearner'``.
        path: monodepth2 layout: the folder with ``encoder.pth`` and ``depth.pth`` (or
            the ``encoder.pth`` inside it); SC-SfMLearner: the ``dispnet_*.pth.tar`` file.
        input_size: SC-SfMLearner only: short side of the network input (pixels).

    Returns:
        The ``FrameNetwork`` (CPU, fp32, eval) and its output kind
        (``'relative_disparity'``).

    Raises:
        ModelLoadError: unknown name, missing file, or tensors that do not fit
            (listed with the file name).
    """
    variant = VARIANTS.get(name)
    if variant is None:
        raise ModelLoadError(f'{name!r} is not a monodepth2/SC-SfMLearner model name.')
    path = Path(path)
    if variant.layout == 'monodepth2':
        state, size, source = _read_monodepth2_folder(path)
        rule: SizeRule = fixed_size(*size)
        reported = min(size)
    else:
        state, source = _read_sc_sfmlearner(path), path
        rule, reported = aspect_size(input_size, 32), input_size
    network = SelfSupervisedDepthNet(_resnet_depth(state, source), variant)
    load_strict(network, state, source, name)
    mean, std = (MONODEPTH_MEAN, MONODEPTH_STD) if variant.normalise else (None, None)
    frame = FrameNetwork(network.eval(), rule, input_size=reported, mean=mean, std=std)
    return frame.eval(), 'relative_disparity'


def monodepth2_state_dicts(
    network: SelfSupervisedDepthNet, height: int, width: int,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(encoder.pth, depth.pth)`` contents in the authors' layout (for tests/conversion).

    ``encoder.pth`` also gets torchvision's unused classifier and the training size.
    """
    state = network.state_dict()
    encoder: dict[str, Any] = {k: v for k, v in state.items() if k.startswith('encoder.')}
    channels = network.encoder.channels[-1]
    encoder['encoder.fc.weight'] = torch.zeros(1000, channels)
    encoder['encoder.fc.bias'] = torch.zeros(1000)
    encoder.update(height=height, width=width, use_stereo=False)
    depth = {k[len('decoder.'):]: v for k, v in state.items() if k.startswith('decoder.')}
    return encoder, depth


def sc_sfmlearner_checkpoint(network: SelfSupervisedDepthNet) -> dict[str, Any]:
    """A ``dispnet_*.pth.tar`` content in SC-SfMLearner's layout (for tests/conversion)."""
    state: dict[str, Any] = {}
    for key, value in network.state_dict().items():
        state['encoder.' + key if key.startswith('encoder.') else key] = value
    channels = network.encoder.channels[-1]
    state['encoder.encoder.fc.weight'] = torch.zeros(1000, channels)
    state['encoder.encoder.fc.bias'] = torch.zeros(1000)
    return {'epoch': 1, 'state_dict': state}


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError,
            zipfile.BadZipFile, KeyError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f'{path} is not a PyTorch/safetensors checkpoint ({first[:200]}).') from None


def _tensors(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, dict):
        raise ModelLoadError(f'{path} does not contain a state dict (names -> tensors).')
    return {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _read_monodepth2_folder(path: Path) -> tuple[dict[str, torch.Tensor], tuple[int, int], Path]:
    folder = path.parent if path.is_file() else path
    encoder_file, depth_file = folder / 'encoder.pth', folder / 'depth.pth'
    for file in (encoder_file, depth_file):
        if not file.is_file():
            raise ModelLoadError(
                f'{folder} is not a monodepth2 model folder: {file.name} is missing '
                '(expected encoder.pth and depth.pth).')
    raw_encoder = _torch_load(encoder_file)
    encoder = _tensors(raw_encoder, encoder_file)
    height, width = raw_encoder.get('height'), raw_encoder.get('width')
    if not all(isinstance(v, int) and not isinstance(v, bool) and 32 <= v <= 4096
               for v in (height, width)):
        raise ModelLoadError(
            f'{encoder_file} lacks the training size (integer height/width entries, as '
            f'written by the monodepth2 trainer); found height={height!r}, width={width!r}.')
    if height % 32 or width % 32:
        raise ModelLoadError(
            f'{encoder_file} stores a training size {height}x{width} that is not a multiple of 32.')
    depth = _tensors(_torch_load(depth_file), depth_file)
    state = {k: v for k, v in encoder.items() if k[len('encoder.'):] not in _CLASSIFIER_KEYS}
    state.update({'decoder.' + k: v for k, v in depth.items()})
    return state, (height, width), folder


def _read_sc_sfmlearner(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelLoadError(f'SC-SfMLearner checkpoint not found (expected a file): {path}')
    loaded = _torch_load(path)
    if isinstance(loaded, dict) and isinstance(loaded.get('state_dict'), dict):
        loaded = loaded['state_dict']
    tensors = _tensors(loaded, path)
    if all(k.startswith('module.') for k in tensors):
        tensors = {k[len('module.'):]: v for k, v in tensors.items()}
    state = {}
    for key, value in tensors.items():
        if key.startswith('encoder.encoder.'):
            key = key[len('encoder.'):]
            if key[len('encoder.'):] in _CLASSIFIER_KEYS:
                continue
        state[key] = value
    return state


def _resnet_depth(state: Mapping[str, torch.Tensor], source: Path) -> int:
    """18, 34 or 50 from the tensors (bottleneck ``conv3`` and blocks in ``layer3``)."""
    if 'encoder.conv1.weight' not in state:
        raise ModelLoadError(
            f'{source} has no ResNet encoder tensors (encoder.conv1.weight); keys start with: '
            f'{", ".join(list(state)[:5])}.')
    blocks = 1 + max((int(k.split('.')[2]) for k in state if k.startswith('encoder.layer3.')),
                     default=-1)
    bottleneck = 'encoder.layer1.0.conv3.weight' in state
    for depth, (layout, kind) in RESNET_LAYOUTS.items():
        if layout[2] == blocks and (kind == 'bottleneck') == bottleneck:
            return depth
    raise ModelLoadError(
        f'{source} holds a ResNet with {blocks} blocks in layer3 '
        f'({"bottleneck" if bottleneck else "basic"}), not ResNet-18/34/50.')


def load_strict(network: nn.Module, state: Mapping[str, torch.Tensor], source: Path,
                name: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line ``ModelLoadError`` naming the keys."""
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f'{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})'
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    parts = []
    for label, keys in (('missing keys', missing), ('unexpected keys', unexpected),
                        ('shape mismatches', mismatched)):
        if keys:
            more = f', ... ({len(keys) - 8} more)' if len(keys) > 8 else ''
            parts.append(f'{label} [{len(keys)}]: {", ".join(keys[:8])}{more}')
    if parts:
        raise ModelLoadError(f'Weights in {source} do not fit {name!r}: ' + '; '.join(parts))
    network.load_state_dict(dict(state), strict=True)
