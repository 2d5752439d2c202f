"""Small masked models and expected counts for the pruning tests, built independently of the
code under test."""

from collections import OrderedDict
from decimal import ROUND_HALF_UP, Decimal

import torch
from torch import nn

from sparse_tickets import masked


def small_model() -> nn.Module:
    """A conv layer and two linear layers with odd sizes: 27, 336 and 35 weights."""
    return masked(
        nn.Sequential(
            OrderedDict(
                features=nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU()),
                flatten=nn.Flatten(),
                fc1=nn.Linear(3 * 4 * 4, 7),
                fc2=nn.Linear(7, 5),
            )
        )
    )


def half_up(value: str, count: int) -> int:
    """round(value * count), halves up, in exact decimal arithmetic."""
    return int((Decimal(value) * count).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def one_line(error) -> bool:
    return "\n" not in str(error.value)


def kept(mask: torch.Tensor) -> int:
    return int(mask.sum().item())
