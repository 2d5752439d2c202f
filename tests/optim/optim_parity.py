"""Shared by the optimizer tests: a small masked model, its data, and the torch.optim baseline
that the masked optimizers must match (masked gradients before each step, masked weights
after it)."""

from __future__ import annotations

import torch
from torch import nn

from sparse_tickets import MaskedConv2d, MaskedLinear, masked_layers

LOW_PRECISION = (torch.float16, torch.bfloat16)


def masked_model(dtype=torch.float32, device="cpu", density=0.5) -> nn.Sequential:
    """Conv -> linear -> linear, every weight masked at about ``density``."""
    model = nn.Sequential(
        MaskedConv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        MaskedLinear(4 * 5 * 5, 8),
        nn.ReLU(),
        MaskedLinear(8, 3),
    ).to(device=device, dtype=dtype)
    for _, layer in masked_layers(model):
        layer.set_mask(torch.rand(layer.weight.shape, device=device) < density)
    return model


def batches(count: int, dtype=torch.float32, device="cpu") -> list:
    """``count`` (input, target) pairs for :func:`masked_model`, the same on every call."""
    generator = torch.Generator().manual_seed(1234)
    return [
        (
            torch.randn(6, 2, 5, 5, generator=generator).to(device=device, dtype=dtype),
            torch.randn(6, 3, generator=generator).to(device=device, dtype=dtype),
        )
        for _ in range(count)
    ]


def loss_of(model: nn.Module, batch) -> torch.Tensor:
    inputs, targets = batch
    return (model(inputs) - targets).pow(2).mean()


def objective_for(config: dict):
    """What the optimizer follows: the loss, or its negation when it maximizes (maximizing the
    loss itself would diverge to inf within the test's steps)."""
    if config.get("maximize"):
        return lambda model, batch: -loss_of(model, batch)
    return loss_of


def weights_and_others(model: nn.Module, weight_lr: float, other_lr: float) -> list[dict]:
    """Two param groups with different learning rates: the weights, then everything else."""
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    others = [p for name, p in model.named_parameters() if not name.endswith("weight")]
    return [{"params": weights, "lr": weight_lr}, {"params": others, "lr": other_lr}]


def layer_masks(model: nn.Module) -> dict:
    """{weight: mask} of the model's masked layers (the live buffers)."""
    return {layer.weight: layer.mask for _, layer in masked_layers(model)}


def train(model, optimizer, data, scheduler=None, objective=loss_of) -> None:
    """Plain training: the masked optimizers need nothing more."""
    for batch in data:
        optimizer.zero_grad()
        objective(model, batch).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def train_baseline(model, optimizer, masks: dict, data, scheduler=None, objective=loss_of) -> None:
    """A torch.optim optimizer made to respect ``masks`` from outside: gradients masked before
    the step and weights after it (masked_fill, so a pruned weight is +0.0 as ours is)."""
    for batch in data:
        optimizer.zero_grad()
        objective(model, batch).backward()
        for param, mask in masks.items():
            param.grad.masked_fill_(~mask, 0.0)
        optimizer.step()
        with torch.no_grad():
            for param, mask in masks.items():
                param.masked_fill_(~mask, 0.0)
        if scheduler is not None:
            scheduler.step()


def assert_same_parameters(model, baseline) -> None:
    for (name, ours), theirs in zip(model.named_parameters(), baseline.parameters()):
        assert torch.equal(ours, theirs), f"{name} differs from torch.optim's"


def assert_same_state(optimizer, baseline_optimizer, kept: dict | None = None) -> None:
    """Every state tensor equal to the baseline's; where ``kept`` maps a baseline parameter to
    a mask, only on the entries the mask keeps (the baseline's pruned state is not zeroed)."""
    kept = kept or {}
    ours_params = [p for group in optimizer.param_groups for p in group["params"]]
    theirs_params = [p for group in baseline_optimizer.param_groups for p in group["params"]]
    for ours, theirs in zip(ours_params, theirs_params):
        ours_state = optimizer.state.get(ours, {})
        theirs_state = baseline_optimizer.state.get(theirs, {})
        assert ours_state.keys() == theirs_state.keys()
        for key, value in ours_state.items():
            expected = theirs_state[key]
            if key != "step" and theirs in kept:
                value, expected = value[kept[theirs]], expected[kept[theirs]]
            assert torch.equal(value, expected), f"state {key!r} differs from torch.optim's"


def assert_pruned_entries_are_zero(model, optimizer) -> None:
    """Each masked weight, and each state tensor of its shape, is +0.0 where pruned."""
    for name, layer in masked_layers(model):
        pruned = ~layer.mask
        tensors = {f"{name}.weight": layer.weight}
        tensors.update(
            {
                f"{name}.weight state {key!r}": value
                for key, value in optimizer.state.get(layer.weight, {}).items()
                if value.shape == layer.weight.shape
            }
        )
        for label, tensor in tensors.items():
            values = tensor.detach()[pruned]
            assert bool((values == 0).all()), f"{label} is nonzero where pruned"
            assert not bool(values.signbit().any()), f"{label} holds -0.0 where pruned"
