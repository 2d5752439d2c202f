"""Plain torch.optim optimizers on masked models (sparse_tickets.optim.plain)."""

import pytest
import torch
from torch import nn

import sparse_tickets as st
from sparse_tickets.pruning import Masks


def pruned_mlp():
    model = st.masked(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)))
    Masks(
        {name: torch.rand(mask.shape) < 0.5 for name, mask in Masks.from_model(model).items()}
    ).apply_to(model)
    return model


def step(model, optimizer, x):
    model(x).square().sum().backward()
    optimizer.step()
    optimizer.zero_grad()


@pytest.mark.parametrize(
    "make",
    [lambda p: torch.optim.AdamW(p, lr=0.01), lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)],
    ids=["adamw", "sgd-momentum"],
)
def test_follows_switches_both_ways_and_steps_like_a_fresh_copy(make):
    model, x = pruned_mlp(), torch.randn(4, 5)
    optimizer = make(model.parameters())
    step(model, optimizer, x)
    for mode in ("compact", "dense", "compact"):
        for layer in (model[0], model[2]):
            layer.set_mode(mode)
        before = [layer.trainable_weight.detach().clone() for layer in (model[0], model[2])]
        step(model, optimizer, x)
        after = [layer.trainable_weight for layer in (model[0], model[2])]
        assert all(not torch.equal(a, b) for a, b in zip(after, before)), mode
        assert {id(p) for p in optimizer.param_groups[0]["params"]} >= {id(p) for p in after}
    for layer in (model[0], model[2]):
        assert not layer.weight[~layer.mask].any()


def test_state_of_newly_pruned_entries_is_zeroed_so_they_do_not_revive():
    model, x = pruned_mlp(), torch.randn(4, 5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step(model, optimizer, x)
    model[0].set_mask(model[0].mask & (torch.rand(7, 5) < 0.5))
    step(model, optimizer, x)
    buffer = optimizer.state[model[0].weight]["momentum_buffer"]
    assert not buffer[~model[0].mask].any() and not model[0].weight[~model[0].mask].any()


def test_an_update_that_revives_pruned_weights_is_undone_with_a_warning():
    class Noisy(torch.optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, {})

        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                for param in group["params"]:
                    param.add_(1.0)

    model = pruned_mlp()
    optimizer = Noisy(model.parameters())
    with pytest.warns(
        RuntimeWarning,
        match=r"^Noisy moved \d+ pruned weights off zero; they "
        r"were zeroed again",
    ):
        optimizer.step()
    assert not model[0].weight[~model[0].mask].any()


def test_state_that_cannot_follow_a_switch_raises_at_the_next_step():
    model, x = pruned_mlp(), torch.randn(4, 5)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = model(x).square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    model[0].set_mode("compact")
    with pytest.raises(
        RuntimeError,
        match=r"^LBFGS holds a compact-mode switched MaskedLinear "
        r"weight .* its state cannot follow",
    ):
        optimizer.step(closure)
