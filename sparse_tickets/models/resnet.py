"""ResNet-20 for CIFAR-10 (He et al., 2016), the network Frankle & Carbin call "Resnet-18".

Three stages of three basic blocks, 16, 32 and 64 channels wide; the first block of stages 2 and
3 halves the sides (stride 2) and doubles the channels, and its shortcut is then a 1x1 conv (stride
2, no bias) followed by BatchNorm. Global average pooling makes any input size work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import MaskedConv2d, MaskedLinear
from .init import kaiming_normal_
from .shapes import as_input_shape, check_num_classes

STAGE_WIDTHS = (16, 32, 64)
BLOCKS_PER_STAGE = 3


class BasicBlock(nn.Module):
    """conv 3x3 -> BN -> ReLU -> conv 3x3 -> BN, plus the shortcut, then ReLU.

    The shortcut is the identity when the shape is kept, and a 1x1 conv + BN projection when
    the block changes the stride or the width. Convs have no bias: BatchNorm follows each.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = MaskedConv2d(
            in_channels, out_channels, 3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = MaskedConv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                MaskedConv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet20(nn.Module):
    """conv 3x3 16 -> BN -> ReLU, three stages of :class:`BasicBlock`, global average pool,
    fc 64 -> ``num_classes``. Kaiming normal weights (conv and fc), zero fc bias, BatchNorm
    weight 1 and bias 0."""

    output_layer_name = "output"

    def __init__(self, input_shape=(3, 32, 32), num_classes: int = 10) -> None:
        super().__init__()
        self.input_shape = as_input_shape("resnet20", input_shape)
        num_classes = check_num_classes("resnet20", num_classes)
        channels = STAGE_WIDTHS[0]
        self.stem = nn.Sequential(
            MaskedConv2d(self.input_shape[0], channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        stages = []
        for index, width in enumerate(STAGE_WIDTHS):
            blocks = []
            for block in range(BLOCKS_PER_STAGE):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.output = MaskedLinear(channels, num_classes)
        kaiming_normal_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def resnet20(input_shape=(3, 32, 32), num_classes: int = 10) -> ResNet20:
    """ResNet-20 for images of ``input_shape`` (C, H, W); see :class:`ResNet20`."""
    return ResNet20(input_shape, num_classes)
