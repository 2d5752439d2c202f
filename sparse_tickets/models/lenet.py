"""LeNet-300-100, the fully-connected network of Frankle & Carbin's MNIST experiments."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import MaskedLinear
from .init import glorot_normal_
from .shapes import as_input_shape, check_num_classes


class LeNet300100(nn.Module):
    """flatten -> fc 300 -> ReLU -> fc 100 -> ReLU -> fc ``num_classes``.

    The first layer takes the whole flattened input, so any ``(C, H, W)`` works; 1x28x28 gives
    the paper's 266,200 weights. Glorot normal weights, zero biases.
    """

    output_layer_name = "output"

    def __init__(self, input_shape=(1, 28, 28), num_classes: int = 10) -> None:
        super().__init__()
        self.input_shape = as_input_shape("lenet_300_100", input_shape)
        num_classes = check_num_classes("lenet_300_100", num_classes)
        channels, height, width = self.input_shape
        self.hidden = nn.Sequential(
            nn.Flatten(),
            MaskedLinear(channels * height * width, 300),
            nn.ReLU(),
            MaskedLinear(300, 100),
            nn.ReLU(),
        )
        self.output = MaskedLinear(100, num_classes)
        glorot_normal_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(x))


def lenet_300_100(input_shape=(1, 28, 28), num_classes: int = 10) -> LeNet300100:
    """LeNet-300-100 for images of ``input_shape`` (C, H, W); see :class:`LeNet300100`."""
    return LeNet300100(input_shape, num_classes)
