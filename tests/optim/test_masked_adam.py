import copy

import pytest
import torch

from sparse_tickets import masked_layers
from sparse_tickets.optim import MaskedAdam, MaskedAdamW
from tests.conftest import DEVICES
from tests.optim.optim_parity import (
    LOW_PRECISION,
    assert_pruned_entries_are_zero,
    assert_same_parameters,
    assert_same_state,
    batches,
    layer_masks,
    masked_model,
    objective_for,
    train,
    train_baseline,
    weights_and_others,
)

CONFIGS = {
    "plain": dict(),
    "betas+eps": dict(betas=(0.8, 0.99), eps=1e-6),
    "weight_decay": dict(weight_decay=0.1),
    "decoupled_weight_decay": dict(weight_decay=0.1, decoupled_weight_decay=True),
    "amsgrad+weight_decay": dict(amsgrad=True, weight_decay=0.05),
    "maximize+amsgrad+decoupled": dict(
        maximize=True, amsgrad=True, weight_decay=0.1, decoupled_weight_decay=True
    ),
}


def run_pair(config, steps=50, dtype=torch.float32, device="cpu"):
    """The masked model trained by MaskedAdam, and its copy by torch.optim.Adam kept masked."""
    model = masked_model(dtype, device)
    baseline = copy.deepcopy(model)
    data = batches(steps, dtype, device)
    optimizer = MaskedAdam(weights_and_others(model, 1e-2, 3e-3), masks=model, **config)
    baseline_optimizer = torch.optim.Adam(
        weights_and_others(baseline, 1e-2, 3e-3), foreach=False, **config
    )
    objective = objective_for(config)
    train(model, optimizer, data, objective=objective)
    train_baseline(baseline, baseline_optimizer, layer_masks(baseline), data, objective=objective)
    for parameter in model.parameters():
        assert bool(parameter.isfinite().all())
    return model, optimizer, baseline, baseline_optimizer


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_matches_torch_adam_bitwise(config):
    model, optimizer, baseline, baseline_optimizer = run_pair(config)
    assert_same_parameters(model, baseline)
    assert_same_state(optimizer, baseline_optimizer)
    assert_pruned_entries_are_zero(model, optimizer)


@pytest.mark.parametrize("dtype", [torch.float64, *LOW_PRECISION], ids=str)
def test_matches_torch_adam_in_every_dtype(dtype):
    # eps 1e-8 rounds to 0 in float16, and 0/0 would turn a weight whose gradient is always 0
    # (behind a dead ReLU) into NaN in both optimizers; 1e-4 is a float16 normal number.
    config = dict(CONFIGS["maximize+amsgrad+decoupled"], eps=1e-4)
    model, optimizer, baseline, baseline_optimizer = run_pair(config, steps=20, dtype=dtype)
    state = optimizer.state[model[0].weight]
    assert state["exp_avg"].dtype == state["max_exp_avg_sq"].dtype == dtype
    assert_same_parameters(model, baseline)
    assert_same_state(optimizer, baseline_optimizer)


@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch_adam_on_each_device(device):
    model, optimizer, baseline, baseline_optimizer = run_pair(
        CONFIGS["amsgrad+weight_decay"], steps=20, device=device
    )
    assert_same_parameters(model, baseline)
    assert_same_state(optimizer, baseline_optimizer)


def test_state_layout_and_state_dict_are_torch_adams():
    model, optimizer, _, baseline_optimizer = run_pair(CONFIGS["amsgrad+weight_decay"], steps=3)
    ours, theirs = optimizer.state_dict(), baseline_optimizer.state_dict()
    step = ours["state"][0]["step"]
    assert step.dtype == torch.float32 and step.shape == () and step.device.type == "cpu"
    assert step.item() == 3
    assert ours["state"].keys() == theirs["state"].keys()
    for index, state in ours["state"].items():
        assert state.keys() == theirs["state"][index].keys()
    for group, their_group in zip(ours["param_groups"], theirs["param_groups"]):
        assert {key: group[key] for key in group} == {key: their_group[key] for key in group}


def test_adamw_is_decoupled_adam_with_torchs_default_decay():
    model = masked_model()
    baseline = copy.deepcopy(model)
    data = batches(20)
    optimizer = MaskedAdamW(model.parameters(), lr=1e-2, masks=model)
    baseline_optimizer = torch.optim.AdamW(baseline.parameters(), lr=1e-2, foreach=False)
    assert optimizer.param_groups[0]["weight_decay"] == 1e-2
    assert optimizer.param_groups[0]["decoupled_weight_decay"] is True
    train(model, optimizer, data)
    train_baseline(baseline, baseline_optimizer, layer_masks(baseline), data)
    assert_same_parameters(model, baseline)


def test_adamw_stays_decoupled_after_loading_an_adam_state_dict():
    model = masked_model()
    adam = MaskedAdam(model.parameters(), weight_decay=0.1, masks=model)
    adamw = MaskedAdamW(model.parameters(), masks=model)
    adamw.load_state_dict(adam.state_dict())
    assert adamw.param_groups[0]["decoupled_weight_decay"] is True
    assert adamw.param_groups[0]["weight_decay"] == 0.1


def test_shrinking_mask_zeroes_new_pruned_moments_and_keeps_parity():
    model = masked_model()
    baseline = copy.deepcopy(model)
    data = batches(40)
    config = CONFIGS["amsgrad+weight_decay"]
    optimizer = MaskedAdam(weights_and_others(model, 1e-2, 3e-3), masks=model, **config)
    baseline_optimizer = torch.optim.Adam(
        weights_and_others(baseline, 1e-2, 3e-3), foreach=False, **config
    )
    train(model, optimizer, data[:20])
    train_baseline(baseline, baseline_optimizer, layer_masks(baseline), data[:20])

    for (_, layer), (_, baseline_layer) in zip(masked_layers(model), masked_layers(baseline)):
        smaller = layer.mask & (torch.rand(layer.mask.shape) < 0.5)
        assert bool(optimizer.state[layer.weight]["exp_avg_sq"][layer.mask & ~smaller].ne(0).any())
        layer.set_mask(smaller)
        baseline_layer.set_mask(smaller)

    train(model, optimizer, data[20:21])
    assert_pruned_entries_are_zero(model, optimizer)
    train(model, optimizer, data[21:])
    train_baseline(baseline, baseline_optimizer, layer_masks(baseline), data[20:])
    assert_same_parameters(model, baseline)
    assert_same_state(optimizer, baseline_optimizer, kept=layer_masks(baseline))
    assert_pruned_entries_are_zero(model, optimizer)


@pytest.mark.parametrize("decoupled", [False, True])
def test_weight_decay_never_revives_pruned_weights(decoupled):
    model = masked_model()
    optimizer = MaskedAdam(
        model.parameters(),
        lr=0.1,
        weight_decay=0.5,
        amsgrad=True,
        decoupled_weight_decay=decoupled,
        masks=model,
    )
    data = batches(1)
    for _ in range(30):
        with torch.no_grad():
            for _, layer in masked_layers(model):
                layer.weight.add_(1.0)  # pruned weights written from outside
        train(model, optimizer, data)
        assert_pruned_entries_are_zero(model, optimizer)


def test_amsgrad_switched_on_mid_run_starts_its_maximum_at_zero():
    model = masked_model()
    optimizer = MaskedAdam(model.parameters(), lr=1e-2, masks=model)
    data = batches(3)
    train(model, optimizer, data[:2])
    optimizer.param_groups[0]["amsgrad"] = True
    train(model, optimizer, data[2:])
    state = optimizer.state[model[0].weight]
    assert torch.equal(state["max_exp_avg_sq"], state["exp_avg_sq"])


@pytest.mark.parametrize(
    "argument, value, error, message",
    [
        ("lr", -1.0, ValueError, r"^lr must be >= 0; got -1.0$"),
        ("eps", -1e-8, ValueError, r"^eps must be >= 0; got -1e-08$"),
        ("weight_decay", -0.1, ValueError, r"^weight_decay must be >= 0; got -0.1$"),
        ("betas", (1.0, 0.999), ValueError, r"^betas\[0\] must be in \[0, 1\); got 1.0$"),
        ("betas", (0.9, -0.1), ValueError, r"^betas\[1\] must be in \[0, 1\); got -0.1$"),
        ("betas", 0.9, TypeError, r"^betas must be a pair \(beta1, beta2\); got 0.9$"),
        ("amsgrad", "no", TypeError, r"^amsgrad must be True or False; got str 'no'$"),
        ("decoupled_weight_decay", 1, TypeError, r"^decoupled_weight_decay must be True or False"),
    ],
)
def test_invalid_hyperparameters_fail_in_one_line(argument, value, error, message):
    model = masked_model()
    with pytest.raises(error, match=message):
        MaskedAdam(model.parameters(), masks=model, **{argument: value})
