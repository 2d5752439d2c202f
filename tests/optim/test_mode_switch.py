"""Masked optimizers over layers in compact mode, and across switches between the modes:
a compact layer trains as its dense twin does, and a switch mid-training changes no number."""

import copy

import pytest
import torch

from sparse_tickets import masked_layers, ops
from sparse_tickets.optim import MaskedAdam, MaskedSGD

from .optim_parity import batches, loss_of, masked_model

OPTIMIZERS = {
    "sgd": lambda params, model: MaskedSGD(
        params, lr=0.05, momentum=0.9, weight_decay=1e-3, masks=model
    ),
    "nesterov": lambda params, model: MaskedSGD(
        params, lr=0.05, momentum=0.9, nesterov=True, masks=model
    ),
    "adam": lambda params, model: MaskedAdam(params, lr=1e-2, weight_decay=1e-3, masks=model),
    "amsgrad": lambda params, model: MaskedAdam(params, lr=1e-2, amsgrad=True, masks=model),
}


@pytest.fixture(autouse=True)
def _reference(monkeypatch):
    # The numbers of the two modes are compared, not the backends: one backend for both.
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, "reference")


def _set_mode(model, mode):
    for _, layer in masked_layers(model):
        layer.set_mode(mode)


def _train(model, optimizer, data, switches=None):
    for step, batch in enumerate(data):
        if switches and step in switches:
            switches[step](model)
        optimizer.zero_grad()
        loss_of(model, batch).backward()
        optimizer.step()


def _weights(model):
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _assert_close(ours, theirs):
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.allclose(ours[key], theirs[key], atol=1e-6, rtol=1e-5), key


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_compact_training_matches_dense_training(name):
    dense = masked_model(density=0.3)
    compact = copy.deepcopy(dense)
    _set_mode(compact, "compact")
    data = batches(5)
    _train(dense, OPTIMIZERS[name](dense.parameters(), dense), data)
    _train(compact, OPTIMIZERS[name](compact.parameters(), compact), data)
    _assert_close(_weights(compact), _weights(dense))
    for _, layer in masked_layers(compact):
        assert torch.equal(layer.weight[~layer.mask], torch.zeros(int((~layer.mask).sum())))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_optimizer_follows_mode_switches_mid_training(name):
    still = masked_model(density=0.4)
    switching = copy.deepcopy(still)
    data = batches(7)
    _train(still, OPTIMIZERS[name](still.parameters(), still), data)
    optimizer = OPTIMIZERS[name](switching.parameters(), switching)
    _train(
        switching,
        optimizer,
        data,
        switches={
            2: lambda model: _set_mode(model, "compact"),
            4: lambda model: _set_mode(model, "dense"),
            5: lambda model: _set_mode(model, "compact"),
        },
    )
    _assert_close(_weights(switching), _weights(still))
    # The optimizer now holds the compact values, with state of their shape.
    for _, layer in masked_layers(switching):
        assert any(p is layer.values for group in optimizer.param_groups for p in group["params"])
        for value in optimizer.state[layer.values].values():
            assert value.dim() == 0 or value.shape == layer.values.shape


def test_a_mask_change_in_compact_mode_carries_the_state_of_the_kept_weights():
    model = masked_model(density=0.8)
    _set_mode(model, "compact")
    optimizer = MaskedAdam(model.parameters(), lr=1e-2, masks=model)
    data = batches(3)
    _train(model, optimizer, data[:2])
    layer = next(layer for _, layer in masked_layers(model))
    old_index, old_avg = layer.compact_index, optimizer.state[layer.values]["exp_avg"].clone()
    smaller = layer.mask & (torch.rand(layer.mask.shape) < 0.5)
    layer.set_mask(smaller)
    _train(model, optimizer, data[2:])
    # Entries kept by both masks continued from their old moments; the state lines up with the
    # new values, one entry per kept weight.
    new_avg = optimizer.state[layer.values]["exp_avg"]
    assert new_avg.shape == (int(smaller.sum()),)
    before = old_index.to_dense(old_avg)[smaller]
    assert torch.all((new_avg == 0) | (before != 0))
