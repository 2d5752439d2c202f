"""The initialisations the paper's models use, applied to every layer of a model at once.

Both initialise the weight of every Linear and Conv2d (masked or not), zero their biases, and set
BatchNorm to the identity (weight 1, bias 0). Masked layers then re-apply their masks, so the
zero-where-pruned invariant holds even when a pruned model is re-initialised.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import MaskedLayer

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def glorot_normal_(model: nn.Module) -> nn.Module:
    """Glorot (Xavier) normal weights, as Frankle & Carbin use for LeNet and Conv-2/4/6.
    In place; returns ``model``."""
    return _initialise(model, nn.init.xavier_normal_)


@torch.no_grad()
def kaiming_normal_(model: nn.Module) -> nn.Module:
    """Kaiming (He) normal weights, fan-in with the ReLU gain, as in the VGG and ResNet
    experiments. In place; returns ``model``."""
    return _initialise(
        model, lambda weight: nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
    )


def _initialise(model: nn.Module, init_weight) -> nn.Module:
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init_weight(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _BATCH_NORMS) and module.affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, MaskedLayer):
            module.apply_mask()
    return model
