import math

import pytest
import torch

from sparse_tickets import masked_layers
from sparse_tickets.models import LeNet300100, lenet_300_100


def prunable_weights(model):
    return sum(layer.weight.numel() for _, layer in masked_layers(model))


def test_weight_count_is_the_papers_266k():
    # Figure 2: 784*300 + 300*100 + 100*10 = 235,200 + 30,000 + 1,000.
    count = prunable_weights(lenet_300_100())
    assert count == 266_200
    assert round(count / 1e3) == 266


def test_layer_widths_are_300_100_and_the_classes():
    model = lenet_300_100(num_classes=4)
    widths = [(layer.in_features, layer.out_features) for _, layer in masked_layers(model)]
    assert widths == [(784, 300), (300, 100), (100, 4)]


def test_any_input_shape_flattens_into_the_first_layer():
    model = LeNet300100(input_shape=(3, 5, 7))
    assert model.hidden[1].in_features == 3 * 5 * 7
    assert model(torch.randn(4, 3, 5, 7)).shape == (4, 10)


def test_glorot_normal_weights_and_zero_biases():
    model = lenet_300_100()
    for _, layer in masked_layers(model):
        fan_out, fan_in = layer.weight.shape
        expected_std = math.sqrt(2.0 / (fan_in + fan_out))
        assert layer.weight.std().item() == pytest.approx(expected_std, rel=0.1)
        assert layer.weight.mean().item() == pytest.approx(0.0, abs=expected_std * 0.1)
        assert torch.count_nonzero(layer.bias) == 0
