"""Conv-2, Conv-4 and Conv-6: the VGG-like CIFAR-10 networks of Frankle & Carbin (Figure 2).

Each is a stack of pairs of 3x3 convolutions (padding 1, ReLU) with a 2x2 max-pool after each
pair, then fc 256 -> ReLU -> fc 256 -> ReLU -> fc ``num_classes``. They differ only in how many
pairs they stack, so one class builds all three from its list of pair widths.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import MaskedConv2d, MaskedLinear
from .init import glorot_normal_
from .shapes import as_input_shape, check_dropout, check_num_classes, check_poolable

# Output channels of each conv pair; a 2x2 max-pool follows every pair.
PAIR_WIDTHS = {
    "conv2": (64,),
    "conv4": (64, 128),
    "conv6": (64, 128, 256),
}
HIDDEN_WIDTH = 256


class ConvNet(nn.Module):
    """Conv-2/4/6 by name (a key of :data:`PAIR_WIDTHS`).

    ``dropout`` > 0 adds an ``nn.Dropout(dropout)`` after the ReLU of each of the two hidden fc
    layers (so it drops the inputs of the second and the output fc layer); the convolutional
    part and the flattened conv features never see dropout. The paper's dropout experiments use
    0.5. The first fc layer's width follows from ``input_shape``, so MNIST-sized inputs work as
    long as the max-pools leave at least 1x1. Glorot normal weights, zero biases.
    """

    output_layer_name = "output"

    def __init__(
        self, name: str, input_shape=(3, 32, 32), num_classes: int = 10, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if name not in PAIR_WIDTHS:
            raise ValueError(
                f"unknown conv network {name!r}; expected one of {', '.join(PAIR_WIDTHS)}"
            )
        widths = PAIR_WIDTHS[name]
        self.input_shape = as_input_shape(name, input_shape)
        num_classes = check_num_classes(name, num_classes)
        dropout = check_dropout(name, dropout)
        height, width = check_poolable(name, self.input_shape, halvings=len(widths))

        layers, channels = [], self.input_shape[0]
        for pair_width in widths:
            layers += [
                MaskedConv2d(channels, pair_width, 3, padding=1),
                nn.ReLU(),
                MaskedConv2d(pair_width, pair_width, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels = pair_width
        self.features = nn.Sequential(*layers)

        hidden, in_features = [nn.Flatten()], channels * height * width
        for _ in range(2):
            hidden += [MaskedLinear(in_features, HIDDEN_WIDTH), nn.ReLU()]
            if dropout > 0:
                hidden.append(nn.Dropout(dropout))
            in_features = HIDDEN_WIDTH
        self.hidden = nn.Sequential(*hidden)
        self.output = MaskedLinear(HIDDEN_WIDTH, num_classes)
        glorot_normal_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(self.features(x)))


def conv2(input_shape=(3, 32, 32), num_classes: int = 10, dropout: float = 0.0) -> ConvNet:
    """Conv-2: 64, 64, pool, then the fc head; see :class:`ConvNet`."""
    return ConvNet("conv2", input_shape, num_classes, dropout)


def conv4(input_shape=(3, 32, 32), num_classes: int = 10, dropout: float = 0.0) -> ConvNet:
    """Conv-4: 64, 64, pool, 128, 128, pool, then the fc head; see :class:`ConvNet`."""
    return ConvNet("conv4", input_shape, num_classes, dropout)


def conv6(input_shape=(3, 32, 32), num_classes: int = 10, dropout: float = 0.0) -> ConvNet:
    """Conv-6: 64, 64, pool, 128, 128, pool, 256, 256, pool, then the fc head; see
    :class:`ConvNet`."""
    return ConvNet("conv6", input_shape, num_classes, dropout)
