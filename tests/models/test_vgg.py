import math

import pytest
import torch
from torch import nn

from sparse_tickets import MaskedConv2d, masked_layers
from sparse_tickets.models import VGG19, vgg19


@pytest.fixture(scope="module")
def model():
    # 20M weights: build once for the module.
    torch.manual_seed(0)
    return vgg19()


def test_weight_count_is_the_papers_20m(model):
    # conv: 3*64*9 + 64*64*9 + 64*128*9 + 128*128*9 + 128*256*9 + 3*256*256*9 + 256*512*9
    # + 7*512*512*9 = 20,018,880; fc: 512*10 = 5,120.
    count = sum(layer.weight.numel() for _, layer in masked_layers(model))
    assert count == 20_024_000
    assert round(count / 1e6, 1) == 20.0


def test_every_conv_is_bias_free_and_followed_by_batchnorm_and_relu(model):
    layers = list(model.features)
    convs = [i for i, layer in enumerate(layers) if isinstance(layer, MaskedConv2d)]
    assert len(convs) == 16
    for i in convs:
        conv = layers[i]
        assert conv.bias is None and conv.kernel_size == (3, 3) and conv.padding == (1, 1)
        assert isinstance(layers[i + 1], nn.BatchNorm2d)
        assert layers[i + 1].num_features == conv.out_channels
        assert isinstance(layers[i + 2], nn.ReLU)
    assert sum(isinstance(layer, nn.MaxPool2d) for layer in layers) == 4
    assert model.output.in_features == 512


def test_kaiming_normal_weights_and_identity_batchnorm(model):
    for _, layer in masked_layers(model):
        fan_in = layer.weight[0].numel()
        assert layer.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    assert torch.count_nonzero(model.output.bias) == 0


def test_forward_gives_logits_per_example(model):
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_inputs_smaller_than_32_are_refused():
    with pytest.raises(
        ValueError,
        match=r"^vgg19 cannot take input_shape \(3, 31, 32\).*at "
        r"least 32$",
    ):
        VGG19(input_shape=(3, 31, 32))
