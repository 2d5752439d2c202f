"""VGG-19 for CIFAR-10 with batch norm (Frankle & Carbin, Figure 2).

The conv plan and the single fc layer are those of open_lth's CIFAR VGG; unlike open_lth, the
convs have no bias (the BatchNorm that follows makes one redundant) and BatchNorm starts at
weight 1, bias 0.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import MaskedConv2d, MaskedLinear
from .init import kaiming_normal_
from .shapes import as_input_shape, check_num_classes, check_poolable

MAX_POOL = "M"
VGG19_PLAN = (
    64,
    64,
    MAX_POOL,
    128,
    128,
    MAX_POOL,
    256,
    256,
    256,
    256,
    MAX_POOL,
    512,
    512,
    512,
    512,
    MAX_POOL,
    512,
    512,
    512,
    512,
)


class VGG19(nn.Module):
    """Each number of :data:`VGG19_PLAN` is a 3x3 conv (padding 1, no bias: BatchNorm follows)
    -> BatchNorm2d -> ReLU; each "M" a 2x2 max-pool. Then a 2x2 average pool, flatten, and one
    fc layer to ``num_classes``.

    On 32x32 inputs the pools leave 1x1x512, so the fc layer is 512 -> ``num_classes``; larger
    inputs widen it to 512 * h * w. Kaiming normal weights (conv and fc), zero fc bias,
    BatchNorm weight 1 and bias 0.
    """

    output_layer_name = "output"

    def __init__(self, input_shape=(3, 32, 32), num_classes: int = 10) -> None:
        super().__init__()
        self.input_shape = as_input_shape("vgg19", input_shape)
        num_classes = check_num_classes("vgg19", num_classes)
        # The max-pools of the plan and the final average pool each halve the sides.
        height, width = check_poolable(
            "vgg19", self.input_shape, halvings=VGG19_PLAN.count(MAX_POOL) + 1
        )

        layers, channels = [], self.input_shape[0]
        for step in VGG19_PLAN:
            if step == MAX_POOL:
                layers.append(nn.MaxPool2d(2))
                continue
            layers += [
                MaskedConv2d(channels, step, 3, padding=1, bias=False),
                nn.BatchNorm2d(step),
                nn.ReLU(),
            ]
            channels = step
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(2)
        self.output = MaskedLinear(channels * height * width, num_classes)
        kaiming_normal_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(torch.flatten(self.pool(self.features(x)), 1))


def vgg19(input_shape=(3, 32, 32), num_classes: int = 10) -> VGG19:
    """VGG-19 with batch norm for images of ``input_shape`` (C, H, W); see :class:`VGG19`."""
    return VGG19(input_shape, num_classes)
