"""masked() / unmasked(): converting a user's model both ways."""

import pytest
import torch
from torch import nn

from sparse_tickets import (
    MaskedConv2d,
    MaskedLinear,
    masked,
    masked_layers,
    masking_report,
    unmasked,
)


class UserModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, groups=2, bias=False),
        )
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
    assert [name for name, _ in masked_layers(model)] == [
        "features.0",
        "features.3",
        "heads.0",
        "heads.1",
    ]
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


def _types_and_buffers(model):
    return (
        {name: type(module) for name, module in model.named_modules()},
        sorted(name for name, _ in model.named_buffers()),
    )


def test_a_refusal_leaves_the_model_as_it_was():
    # The Embedding's mask name is taken; the Linears before it in module order must not be
    # swapped, nor their weights touched, when masked() refuses.
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Embedding(5, 4))
    model[2].weight_mask = torch.zeros(5, 4)
    before = _types_and_buffers(model)
    weights = [layer.weight.detach().clone() for layer in model[:2]]
    with pytest.raises(
        ValueError,
        match=r"^2\.weight: Embedding already has an attribute "
        r"'weight_mask'",
    ) as error:
        masked(model)
    assert "\n" not in str(error.value)
    assert _types_and_buffers(model) == before
    assert all(torch.equal(layer.weight, w) for layer, w in zip(model[:2], weights))


def test_parameters_over_one_memory_are_refused_unless_they_do_not_overlap():
    shared = torch.randn(4, 4)
    twice = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    twice[0].weight, twice[1].weight = nn.Parameter(shared), nn.Parameter(shared)
    base = torch.randn(12, 4)
    overlapping = nn.Sequential(nn.Linear(4, 4), nn.Embedding(4, 4))
    overlapping[0].weight, overlapping[1].weight = (nn.Parameter(base[:4]), nn.Parameter(base[2:6]))
    for model, names in (
        (twice, "'0.weight' and '1.weight'"),
        (overlapping, "'0.weight' and '1.weight'"),
    ):
        before = _types_and_buffers(model)
        with pytest.raises(
            ValueError,
            match=f"masked weights {names} are different Parameters over the same memory",
        ) as error:
            masked(model)
        assert "\n" not in str(error.value) and _types_and_buffers(model) == before
    # Views of separate rows of one tensor share no entry: each keeps its own mask.
    apart = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    apart[0].weight, apart[1].weight = nn.Parameter(base[:4]), nn.Parameter(base[4:8])
    masked(apart)
    assert [name for name, _ in masked_layers(apart)] == ["0", "1"]


def test_masks_aliased_after_conversion_are_refused_before_any_change():
    from sparse_tickets.pruning import Masks

    model = masked(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)))
    model[1].weight.data = model[0].weight.data  # two Parameters, one memory
    masks = Masks({"0.weight": torch.rand(4, 4) < 0.5, "1.weight": torch.rand(4, 4) < 0.5})
    with pytest.raises(ValueError, match="'0.weight' and '1.weight' are different Parameters"):
        masks.apply_to(model)
    assert model[0].mask.all() and model[1].mask.all()


def test_a_model_built_on_meta_gets_masks_that_materialise_full():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 5), nn.Embedding(7, 4), nn.Conv2d(2, 3, 3))
    masked(model)
    assert [type(layer) for layer in model] == [MaskedLinear, nn.Embedding, MaskedConv2d]
    masks = [model[0].mask, model[1].weight_mask, model[2].mask]
    assert all(mask.is_meta for mask in masks)
    assert "density n/a (meta)" in str(masking_report(model))
    model.to_empty(device="cpu")
    masks = [model[0].mask, model[1].weight_mask, model[2].mask]
    assert all(mask.device.type == "cpu" and bool(mask.all()) for mask in masks)
