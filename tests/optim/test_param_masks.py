import copy

import pytest
import torch
from torch import nn

from sparse_tickets import MaskedLinear, masked_layers
from sparse_tickets.optim import MaskedAdam, MaskedSGD
from tests.optim.optim_parity import (
    assert_pruned_entries_are_zero,
    assert_same_parameters,
    assert_same_state,
    batches,
    masked_model,
    train,
    train_baseline,
)

# name -> (masked optimizer, its torch.optim twin, hyperparameters for both)
OPTIMIZERS = {
    "sgd": (MaskedSGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.1)),
    "adam": (MaskedAdam, torch.optim.Adam, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
}


def masked_optimizer(name, params, masks):
    masked_class, _, hyperparameters = OPTIMIZERS[name]
    return masked_class(params, masks=masks, **hyperparameters)


def plain_model() -> nn.Sequential:
    """The masked model's twin in plain torch layers: its weight gradients are dense."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )


def random_masks(model: nn.Module) -> dict:
    return {
        module.weight: torch.rand(module.weight.shape) < 0.5
        for module in model
        if isinstance(module, (nn.Linear, nn.Conv2d))
    }


def test_mapping_masks_ignore_dense_gradients_and_match_torch():
    model = plain_model()
    masks = random_masks(model)
    with torch.no_grad():
        for param, mask in masks.items():
            param.masked_fill_(~mask, 0.0)
    baseline = copy.deepcopy(model)
    baseline_masks = dict(zip([p for p in baseline.parameters() if p.dim() > 1], masks.values()))
    data = batches(50)
    optimizer = MaskedAdam(model.parameters(), lr=1e-2, weight_decay=0.1, masks=masks)
    baseline_optimizer = torch.optim.Adam(
        baseline.parameters(), lr=1e-2, weight_decay=0.1, foreach=False
    )

    train(model, optimizer, data[:1])
    # Plain layers give gradients at the pruned entries too; the step must have ignored them.
    assert all(bool(param.grad[~mask].ne(0).any()) for param, mask in masks.items())
    assert all(bool(param[~mask].eq(0).all()) for param, mask in masks.items())

    train(model, optimizer, data[1:])
    train_baseline(baseline, baseline_optimizer, baseline_masks, data)
    assert_same_parameters(model, baseline)
    assert_same_state(optimizer, baseline_optimizer)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_mapping_masks_follow_in_place_updates(name):
    model = plain_model()
    masks = random_masks(model)
    optimizer = masked_optimizer(name, model.parameters(), masks)
    data = batches(4)
    train(model, optimizer, data[:2])
    for mask in masks.values():
        mask &= torch.rand(mask.shape) < 0.5
    train(model, optimizer, data[2:])
    for param, mask in masks.items():
        assert bool(param[~mask].eq(0).all())
        for value in optimizer.state[param].values():
            if value.shape == param.shape:
                assert bool(value[~mask].eq(0).all())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_model_masks_are_read_live_after_set_mask(name):
    model = masked_model()
    optimizer = masked_optimizer(name, model.parameters(), model)
    data = batches(4)
    train(model, optimizer, data[:2])
    for _, layer in masked_layers(model):
        layer.set_mask(layer.mask & (torch.rand(layer.mask.shape) < 0.5))
    train(model, optimizer, data[2:])
    assert_pruned_entries_are_zero(model, optimizer)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_model_masks_are_read_live_when_the_buffer_is_replaced(name):
    # model.to(device) gives every layer a new mask buffer: the optimizer must read the new one.
    model = masked_model()
    optimizer = masked_optimizer(name, model.parameters(), model)
    train(model, optimizer, batches(1))
    for _, layer in masked_layers(model):
        layer.mask = layer.mask & (torch.rand(layer.mask.shape) < 0.5)
    train(model, optimizer, batches(2))
    assert_pruned_entries_are_zero(model, optimizer)


@pytest.mark.cuda
def test_model_moved_to_cuda_after_building_the_optimizer():
    model = masked_model()
    optimizer = MaskedAdam(model.parameters(), lr=1e-2, weight_decay=0.1, masks=model)
    model.to("cuda")
    train(model, optimizer, batches(5, device="cuda"))
    assert model[0].weight.device.type == "cuda"
    assert_pruned_entries_are_zero(model, optimizer)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_unmasked_parameters_step_as_in_torch(name):
    pruned = torch.eye(4, 5, dtype=torch.bool)
    weight = nn.Parameter(torch.randn(4, 5).masked_fill(pruned, 0.0))
    bias = nn.Parameter(torch.randn(4))
    bias_alone = nn.Parameter(bias.detach().clone())
    optimizer = masked_optimizer(name, [weight, bias], {weight: ~pruned})
    _, torch_class, hyperparameters = OPTIMIZERS[name]
    baseline_optimizer = torch_class([bias_alone], foreach=False, **hyperparameters)
    for _ in range(10):
        weight.grad = torch.randn(4, 5)
        bias.grad = torch.randn(4)
        bias_alone.grad = bias.grad.clone()
        optimizer.step()
        baseline_optimizer.step()
    assert torch.equal(bias, bias_alone)
    assert bool(weight[pruned].eq(0).all()) and bool(weight[~pruned].ne(0).all())


def test_an_empty_mapping_masks_nothing():
    model = plain_model()
    baseline = copy.deepcopy(model)
    data = batches(5)
    train(model, MaskedSGD(model.parameters(), lr=0.05, momentum=0.9, masks={}), data)
    train(
        baseline, torch.optim.SGD(baseline.parameters(), lr=0.05, momentum=0.9, foreach=False), data
    )
    assert_same_parameters(model, baseline)


def test_masks_default_to_the_parameters_own_and_must_otherwise_be_a_model_or_a_mapping():
    model = masked_model()
    optimizer = MaskedSGD(model.parameters())
    for _, layer in masked_layers(model):
        assert optimizer._mask_of(layer.weight) is layer.mask
        assert optimizer._mask_of(layer.bias) is None
    with pytest.raises(
        TypeError,
        match=r"^masks must be None \(the parameters' own masks\), "
        r"the model \(an nn.Module .*\) or a mapping "
        r"\{Parameter: bool mask\}; got str$",
    ):
        MaskedSGD(model.parameters(), masks="model")


def test_mapping_keys_must_be_the_optimizers_parameters():
    model = plain_model()
    with pytest.raises(
        TypeError,
        match=r"^masks keys must be the optimizer's Parameters; got "
        r"str '3.weight' \(to mask by layer, pass the model",
    ):
        MaskedSGD(model.parameters(), masks={"3.weight": torch.ones(8, 100, dtype=torch.bool)})
    stranger = nn.Parameter(torch.zeros(8, 100))
    with pytest.raises(
        ValueError,
        match=r"^masks has an entry for a tensor of shape \(8, 100\) "
        r"that is not among the optimizer's parameters$",
    ):
        MaskedSGD(model.parameters(), masks={stranger: torch.ones(8, 100, dtype=torch.bool)})


@pytest.mark.parametrize(
    "mask, error, message",
    [
        (
            torch.ones(8, 100),
            TypeError,
            r"^mask of param_groups\[0\]\['params'\]\[2\] must be a "
            r"bool tensor; got torch.float32$",
        ),
        ([[True] * 100] * 8, TypeError, r"must be a bool tensor; got list$"),
        (
            torch.ones(100, 8, dtype=torch.bool),
            ValueError,
            r"^mask of param_groups\[0\]\['params'\]\[2\] has shape \(100, 8\); expected the "
            r"parameter's shape \(8, 100\)$",
        ),
        (
            torch.ones(8, 100, dtype=torch.bool, device="meta"),
            ValueError,
            r"^mask of param_groups\[0\]\['params'\]\[2\] is on meta; expected the parameter's "
            r"device cpu$",
        ),
    ],
)
def test_bad_mapping_masks_fail_in_one_line_naming_the_parameter(mask, error, message):
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Linear(100, 8))
    with pytest.raises(error, match=message):
        MaskedSGD(model.parameters(), masks={model[1].weight: mask})


def test_a_mask_gone_bad_fails_at_the_step_naming_the_layer():
    model = masked_model()
    optimizer = MaskedSGD(model.parameters(), masks=model)
    model[3].mask = torch.ones(100, 8, dtype=torch.bool)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    with pytest.raises(
        ValueError,
        match=r"^mask of 3.weight has shape \(100, 8\); expected "
        r"the parameter's shape \(8, 100\)$",
    ):
        optimizer.step()


def test_a_model_without_masked_layers_is_refused():
    model = plain_model()
    with pytest.raises(
        ValueError,
        match=r"^masks: the model has no masked layers; convert it "
        r"with sparse_tickets.masked\(model\) first",
    ):
        MaskedAdam(model.parameters(), masks=model)


def test_masks_of_another_model_are_refused():
    model = masked_model()
    copy_of_model = copy.deepcopy(model)
    with pytest.raises(
        ValueError,
        match=r"^masks: none of the model's 3 masked-layer weights "
        r"is among the optimizer's parameters",
    ):
        MaskedSGD(copy_of_model.parameters(), masks=model)


def test_one_weight_in_two_masked_layers_needs_one_mask():
    first, second = MaskedLinear(4, 4), MaskedLinear(4, 4)
    second.weight = first.weight
    model = nn.Sequential(first, second)
    assert MaskedSGD(first.parameters(), masks=model)._mask_of(first.weight) is first.mask
    second.set_mask(torch.eye(4, dtype=torch.bool))
    with pytest.raises(
        ValueError,
        match=r"^masks: 0.weight is one Parameter in several masked "
        r"layers with different masks; expected one mask",
    ):
        MaskedSGD(first.parameters(), masks=model)
