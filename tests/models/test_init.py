import math

import pytest
import torch
from torch import nn

from sparse_tickets import MaskedConv2d, MaskedLinear
from sparse_tickets.models import glorot_normal_, kaiming_normal_


def small_model():
    return nn.Sequential(
        MaskedConv2d(3, 64, 3),
        nn.BatchNorm2d(64),
        nn.Flatten(),
        MaskedLinear(400, 300),
        nn.Linear(300, 10),
    )


@pytest.mark.parametrize(
    "initialise, expected_std",
    [
        (glorot_normal_, lambda fan_in, fan_out: math.sqrt(2.0 / (fan_in + fan_out))),
        (kaiming_normal_, lambda fan_in, fan_out: math.sqrt(2.0 / fan_in)),
    ],
)
def test_weight_spread_matches_the_scheme_and_biases_are_zero(initialise, expected_std):
    model = small_model()
    with torch.no_grad():
        model[1].weight.fill_(3.0)
        model[1].bias.fill_(-1.0)
    assert initialise(model) is model
    for layer in (model[0], model[3], model[4]):
        fan_in = layer.weight[0].numel()
        fan_out = layer.weight.shape[0] * layer.weight[0, 0].numel()
        assert layer.weight.std().item() == pytest.approx(expected_std(fan_in, fan_out), rel=0.1)
        assert torch.count_nonzero(layer.bias) == 0
    assert torch.all(model[1].weight == 1) and torch.all(model[1].bias == 0)


@pytest.mark.parametrize("initialise", [glorot_normal_, kaiming_normal_])
def test_reinitialising_keeps_pruned_weights_at_zero(initialise):
    model = small_model()
    mask = torch.rand(model[3].weight.shape) < 0.3
    model[3].set_mask(mask)
    initialise(model)
    assert torch.count_nonzero(model[3].weight[~mask]) == 0
    assert torch.count_nonzero(model[3].weight[mask]) == mask.sum()
