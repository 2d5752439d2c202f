"""The baselines of the whole-step and whole-IMP benchmarks, in plain PyTorch only.

The paper's networks rebuilt from ``nn.Linear`` / ``nn.Conv2d`` (no sparse_tickets code), with
the same module names as ``sparse_tickets.models`` so that a mask named ``hidden.1`` or
``stages.1.0.shortcut.0`` finds its layer. Two kinds of layer:

- ``PLAIN``: ``nn.Linear`` / ``nn.Conv2d`` themselves, the cost of not pruning;
- ``MASK_MULTIPLY``: the layer multiplies its weight by a 0/1 float mask before every forward
  (``F.linear(x, w * m)``), the gradient flowing through the multiply: what open_lth-style
  tools pay at every density.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

PLAIN = "plain"
MASK_MULTIPLY = "mask_multiply"


class MaskMultiplyLinear(nn.Linear):
    """``nn.Linear`` computing ``x @ (weight * mask).T + bias``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("mask", torch.ones_like(self.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MaskMultiplyConv2d(nn.Conv2d):
    """``nn.Conv2d`` convolving with ``weight * mask``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("mask", torch.ones_like(self.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


LAYERS = {PLAIN: (nn.Linear, nn.Conv2d), MASK_MULTIPLY: (MaskMultiplyLinear, MaskMultiplyConv2d)}


class LeNet300100(nn.Module):
    def __init__(self, kind: str, input_shape=(1, 28, 28), num_classes: int = 10) -> None:
        super().__init__()
        linear, _ = LAYERS[kind]
        channels, height, width = input_shape
        self.hidden = nn.Sequential(
            nn.Flatten(),
            linear(channels * height * width, 300),
            nn.ReLU(),
            linear(300, 100),
            nn.ReLU(),
        )
        self.output = linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(x))


class ConvNet(nn.Module):
    """Conv-2 / Conv-6: pairs of 3x3 convs (ReLU) and a max-pool per pair, then fc 256, 256."""

    def __init__(
        self, kind: str, pair_widths: tuple, input_shape=(3, 32, 32), num_classes: int = 10
    ) -> None:
        super().__init__()
        linear, conv = LAYERS[kind]
        layers, channels = [], input_shape[0]
        for width in pair_widths:
            layers += [
                conv(channels, width, 3, padding=1),
                nn.ReLU(),
                conv(width, width, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        side = input_shape[1] // 2 ** len(pair_widths), input_shape[2] // 2 ** len(pair_widths)
        self.hidden = nn.Sequential(
            nn.Flatten(),
            linear(channels * side[0] * side[1], 256),
            nn.ReLU(),
            linear(256, 256),
            nn.ReLU(),
        )
        self.output = linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(self.features(x)))


class BasicBlock(nn.Module):
    def __init__(self, kind: str, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        _, conv = LAYERS[kind]
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, kind: str, input_shape=(3, 32, 32), num_classes: int = 10) -> None:
        super().__init__()
        linear, conv = LAYERS[kind]
        self.stem = nn.Sequential(
            conv(input_shape[0], 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        stages, channels = [], 16
        for index, width in enumerate((16, 32, 64)):
            blocks = []
            for block in range(3):
                blocks.append(
                    BasicBlock(kind, channels, width, 2 if index > 0 and block == 0 else 1)
                )
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.output = linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def build(model: str, kind: str, input_shape: tuple) -> nn.Module:
    """The plain-PyTorch twin of ``sparse_tickets.models.create(model)``."""
    if model == "lenet_300_100":
        return LeNet300100(kind, input_shape)
    if model == "conv2":
        return ConvNet(kind, (64,), input_shape)
    if model == "conv6":
        return ConvNet(kind, (64, 128, 256), input_shape)
    if model == "resnet20":
        return ResNet20(kind, input_shape)
    raise ValueError(
        f"no plain-PyTorch twin of {model!r}; expected lenet_300_100, conv2, conv6 or resnet20"
    )


def prunable_layers(network: nn.Module) -> dict[str, nn.Module]:
    """Name -> every Linear and Conv2d of ``network``: the layers a mask can name."""
    return {
        name: module
        for name, module in network.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d))
    }


@torch.no_grad()
def set_masks(network: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Copy ``masks`` (layer name or ``<layer>.weight`` -> bool tensor) into the mask-multiply
    layers of ``network`` and zero the pruned weights; every layer must be named."""
    layers = prunable_layers(network)
    by_layer = {name.removesuffix(".weight"): mask for name, mask in masks.items()}
    if set(by_layer) != set(layers):
        raise ValueError(f"masks name layers {sorted(by_layer)}; expected {sorted(layers)}")
    for name, mask in by_layer.items():
        layers[name].mask.copy_(mask)
        layers[name].weight.mul_(layers[name].mask)
