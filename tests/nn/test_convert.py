"""masked() / unmasked(): converting a user's model both ways."""

import pytest
import torch
from torch import nn

from sparse_tickets import MaskedConv2d, MaskedLinear, masked, masked_layers, unmasked


class UserModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.Conv2d(4, 4, 3, groups=2, bias=False))
        self.heads = nn.ModuleList([nn.Linear(4 * 6 * 6, 8), nn.Linear(8, 3)])
        self.attention = nn.MultiheadAttention(8, 2)

    def forward(self, x):
        x = self.features(x).flatten(1)
        return self.heads[1](torch.relu(self.heads[0](x)))


def test_masked_converts_every_linear_and_conv_keeping_values():
    model = UserModel().double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    before = model(x)
    weight = model.heads[0].weight
    assert masked(model) is model
    assert isinstance(model.features[0], MaskedConv2d)
    assert isinstance(model.features[3], MaskedConv2d)
    assert all(isinstance(m, MaskedLinear) for m in model.heads)
    assert model.heads[0].weight is weight  # same Parameter: optimizers built earlier still work
    assert model.features[3].groups == 2 and model.heads[0].weight.dtype == torch.float64
    # MultiheadAttention's out_proj is a Linear subclass with its own use: left alone.
    assert type(model.attention.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    assert [name for name, _ in masked_layers(model)] == ["features.0", "features.3",
                                                           "heads.0", "heads.1"]
    assert "features.0.mask" in model.state_dict()


def test_masked_exclude_by_name_or_predicate():
    model = masked(UserModel(), exclude=["heads.1"])
    assert type(model.heads[1]) is nn.Linear and isinstance(model.heads[0], MaskedLinear)
    model = masked(UserModel(), exclude=lambda name, module: isinstance(module, nn.Conv2d))
    assert type(model.features[0]) is nn.Conv2d and isinstance(model.heads[1], MaskedLinear)
    with pytest.raises(ValueError, match="exclude names modules not in the model: head.9"):
        masked(UserModel(), exclude=["head.9"])


def test_masked_on_a_single_layer_and_on_shared_layers():
    assert isinstance(masked(nn.Linear(2, 3)), MaskedLinear)
    shared = nn.Linear(4, 4)
    model = masked(nn.Sequential(shared, nn.ReLU(), shared))
    assert model[0] is model[2] and isinstance(model[0], MaskedLinear)


def test_unmasked_returns_plain_layers_with_zeroed_weights():
    model = masked(UserModel())
    for _, layer in masked_layers(model):
        layer.set_mask(torch.rand(layer.weight.shape) < 0.3)
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    expected = model(x)
    masks = {name: layer.mask.clone() for name, layer in masked_layers(model)}
    unmasked(model)
    assert not list(masked_layers(model))
    assert type(model.features[0]) is nn.Conv2d and type(model.heads[1]) is nn.Linear
    assert "features.0.mask" not in model.state_dict()
    assert (model.features[0].weight[~masks["features.0"]] == 0).all()
    torch.testing.assert_close(model(x), expected)


@pytest.mark.cuda
def test_masked_keeps_the_device():
    model = masked(UserModel().cuda())
    assert model.heads[0].mask.device.type == "cuda"


def test_excluding_a_module_excludes_everything_inside_it():
    model = masked(UserModel(), exclude=["features"])
    assert type(model.features[0]) is nn.Conv2d and type(model.features[3]) is nn.Conv2d
    assert isinstance(model.heads[0], MaskedLinear)
