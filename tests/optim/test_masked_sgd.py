import copy

import pytest
import torch

from sparse_tickets import masked_layers
from sparse_tickets.optim import MaskedSGD
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
    "momentum": dict(momentum=0.9),
    "dampening+weight_decay": dict(momentum=0.9, dampening=0.3, weight_decay=1e-2),
    "nesterov+weight_decay": dict(momentum=0.8, nesterov=True, weight_decay=5e-2),
    "maximize": dict(momentum=0.5, weight_decay=1e-2, maximize=True),
}


def run_pair(config, steps=50, dtype=torch.float32, device="cpu"):
    """The masked model trained by MaskedSGD, and its copy by torch.optim.SGD kept masked."""
    model = masked_model(dtype, device)
    baseline = copy.deepcopy(model)
    data = batches(steps, dtype, device)
    optimizer = MaskedSGD(weights_and_others(model, 0.05, 0.02), masks=model, **config)
    baseline_optimizer = torch.optim.SGD(
        weights_and_others(baseline, 0.05, 0.02), foreach=False, **config
    )
    objective = objective_for(config)
    train(model, optimizer, data, objective=objective)
    train_baseline(baseline, baseline_optimizer, layer_masks(baseline), data, objective=objective)
    for parameter in model.parameters():
        assert bool(parameter.isfinite().all())
    return model, optimizer, baseline, baseline_optimizer


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_matches_torch_sgd_bitwise(config):
    model, optimizer, baseline, baseline_optimizer = run_pair(config)
    assert_same_parameters(model, baseline)
    assert_same_state(optimizer, baseline_optimizer)
    assert_pruned_entries_are_zero(model, optimizer)


@pytest.mark.parametrize("dtype", [torch.float64, *LOW_PRECISION], ids=str)
def test_matches_torch_sgd_in_every_dtype(dtype):
    model, optimizer, baseline, baseline_optimizer = run_pair(
        CONFIGS["nesterov+weight_decay"], steps=20, dtype=dtype
    )
    assert model[0].weight.dtype == dtype
    assert optimizer.state[model[0].weight]["momentum_buffer"].dtype == dtype
    assert_same_parameters(model, baseline)
    assert_same_state(optimizer, baseline_optimizer)


@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch_sgd_on_each_device(device):
    model, optimizer, baseline, baseline_optimizer = run_pair(
        CONFIGS["dampening+weight_decay"], steps=20, device=device
    )
    assert_same_parameters(model, baseline)
    assert_same_state(optimizer, baseline_optimizer)


def test_no_momentum_keeps_no_state_as_torch():
    model, optimizer, _, baseline_optimizer = run_pair(CONFIGS["plain"], steps=2)
    assert optimizer.state_dict()["state"] == baseline_optimizer.state_dict()["state"] == {}


def test_shrinking_mask_zeroes_new_pruned_momentum_and_keeps_parity():
    model = masked_model()
    baseline = copy.deepcopy(model)
    data = batches(40)
    config = CONFIGS["nesterov+weight_decay"]
    optimizer = MaskedSGD(weights_and_others(model, 0.05, 0.02), masks=model, **config)
    baseline_optimizer = torch.optim.SGD(
        weights_and_others(baseline, 0.05, 0.02), foreach=False, **config
    )
    train(model, optimizer, data[:20])
    train_baseline(baseline, baseline_optimizer, layer_masks(baseline), data[:20])

    for (_, layer), (_, baseline_layer) in zip(masked_layers(model), masked_layers(baseline)):
        smaller = layer.mask & (torch.rand(layer.mask.shape) < 0.5)
        assert bool(
            optimizer.state[layer.weight]["momentum_buffer"][layer.mask & ~smaller].ne(0).any()
        )
        layer.set_mask(smaller)
        baseline_layer.set_mask(smaller)

    train(model, optimizer, data[20:21])
    assert_pruned_entries_are_zero(model, optimizer)
    train(model, optimizer, data[21:])
    train_baseline(baseline, baseline_optimizer, layer_masks(baseline), data[20:])
    assert_same_parameters(model, baseline)
    # torch's momentum at the newly pruned entries lives on; on the kept ones both agree.
    assert_same_state(optimizer, baseline_optimizer, kept=layer_masks(baseline))
    assert_pruned_entries_are_zero(model, optimizer)


def test_weight_decay_never_revives_pruned_weights():
    model = masked_model()
    optimizer = MaskedSGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.5, masks=model)
    data = batches(1)
    for _ in range(30):
        with torch.no_grad():
            # Pruned weights written from outside: the next step must zero them again.
            for _, layer in masked_layers(model):
                layer.weight.add_(1.0)
        train(model, optimizer, data)
        assert_pruned_entries_are_zero(model, optimizer)


def test_nesterov_needs_momentum_and_no_dampening():
    model = masked_model()
    with pytest.raises(
        ValueError,
        match=r"nesterov=True needs momentum > 0 and dampening == 0; "
        r"got momentum=0, dampening=0",
    ):
        MaskedSGD(model.parameters(), nesterov=True, masks=model)
    with pytest.raises(ValueError, match="dampening=0.1"):
        MaskedSGD(model.parameters(), momentum=0.9, dampening=0.1, nesterov=True, masks=model)


@pytest.mark.parametrize(
    "argument, value, error, message",
    [
        ("lr", -1.0, ValueError, r"^lr must be >= 0; got -1.0$"),
        ("lr", float("nan"), ValueError, r"^lr must be >= 0; got nan$"),
        ("lr", torch.tensor(0.1), TypeError, r"^lr must be a real number; got Tensor"),
        ("momentum", -0.5, ValueError, r"^momentum must be >= 0; got -0.5$"),
        ("weight_decay", -1e-4, ValueError, r"^weight_decay must be >= 0; got -0.0001$"),
        ("dampening", "0.1", TypeError, r"^dampening must be a real number; got str '0.1'$"),
        ("nesterov", 1, TypeError, r"^nesterov must be True or False; got int 1$"),
        ("maximize", None, TypeError, r"^maximize must be True or False; got NoneType None$"),
    ],
)
def test_invalid_hyperparameters_fail_in_one_line(argument, value, error, message):
    model = masked_model()
    with pytest.raises(error, match=message):
        MaskedSGD(model.parameters(), masks=model, **{argument: value})
