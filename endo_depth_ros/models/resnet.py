"""ResNet-18/34/50 feature encoders with torchvision's parameter names.

The self-supervised endoscopic depth networks (monodepth2 family, SC-SfMLearner) wrap a
torchvision ResNet; their checkpoints store its tensors under torchvision's names
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ...). torchvision is
not usable here, so the same modules are defined locally with the same names, and
official checkpoints load strictly. The ImageNet classifier (``fc``) is not built: the
depth networks never use it.

``ResNetEncoder.forward`` returns the five feature maps monodepth2's decoder consumes:
after the stem (stride 2, 64 channels) and after each of the four stages (strides 4, 8,
16, 32).
"""

from __future__ import annotations

import torch
from torch import nn

#: Blocks per stage and block type of each supported depth.
RESNET_LAYOUTS: dict[int, tuple[tuple[int, int, int, int], str]] = {
    18: ((2, 2, 2, 2), 'basic'),
    34: ((3, 4, 6, 3), 'basic'),
    50: ((3, 4, 6, 3), 'bottleneck'),
}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 convolutions, 4x expansion (ResNet-50; torchvision v1.5)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(in_planes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False),
                         nn.BatchNorm2d(out_planes))


class ResNetEncoder(nn.Module):
    """A torchvision-named ResNet trunk returning five feature maps.

    Args:
        num_layers: 18, 34 or 50.

    Attributes:
        channels: channels of the five returned feature maps
            (``(64, 64, 128, 256, 512)``; ResNet-50: ``(64, 256, 512, 1024, 2048)``).
    """

    def __init__(self, num_layers: int = 18) -> None:
        super().__init__()
        if num_layers not in RESNET_LAYOUTS:
            raise ValueError(
                f'num_layers must be one of {sorted(RESNET_LAYOUTS)}, got {num_layers}.')
        blocks, kind = RESNET_LAYOUTS[num_layers]
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock if kind == 'basic' else Bottleneck
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_planes = 64
        stages = []
        for index, (count, planes) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True)):
            layers = []
            for i in range(count):
                stride = 2 if index > 0 and i == 0 else 1
                layers.append(block(in_planes, planes, stride))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.channels = (64, *(p * block.expansion for p in (64, 128, 256, 512)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x``: (N, 3, H, W) -> five maps at strides 2, 4, 8, 16, 32."""
        stem = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(stem))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [stem, f1, f2, f3, self.layer4(f3)]
