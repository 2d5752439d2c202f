"""Tied weights: one Parameter held by a kernel layer and an embedding (sparse_tickets.nn.tied)."""

import pytest
import torch
from torch import nn

import sparse_tickets as st
from sparse_tickets.compact.choice import default_mode_set_to
from sparse_tickets.pruning import Masks


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(13, 6)
        self.hidden = nn.Linear(6, 6)
        self.head = nn.Linear(6, 13, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.relu(self.hidden(self.embed(ids))))


def pruned_model():
    model = st.masked(TiedLM())
    masks = Masks.from_model(model)
    masks = Masks({name: torch.rand(mask.shape) < 0.4 for name, mask in masks.items()})
    masks.apply_to(model)
    return model, masks


def test_a_tied_weight_has_one_mask_and_stays_dense_in_every_mode():
    model, masks = pruned_model()
    assert list(masks) == ["hidden.weight", "head.weight"]
    assert model.head.weight_shared_with == ("embed.weight",)
    with default_mode_set_to("compact"):
        masks.apply_to(model)
    assert (model.hidden.mode, model.head.mode) == ("compact", "dense")
    with pytest.raises(
        ValueError,
        match=r"^MaskedLinear cannot run in compact mode: its weight "
        r"is shared with embed.weight \(tied weights\)",
    ):
        model.head.set_mode("compact")
    assert model.embed.weight is model.head.weight
    assert model.state_dict()["embed.weight"].shape == (13, 6)  # never emptied
    model(torch.arange(13)).sum().backward()  # the embedding still works


def test_pruned_entries_get_no_gradient_through_the_embedding_and_never_revive():
    model, masks = pruned_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(3):
        model(torch.arange(13)).square().mean().backward()
        assert not model.embed.weight.grad[~masks["head.weight"]].any()
        optimizer.step()
        optimizer.zero_grad()
    assert not model.embed.weight[~masks["head.weight"]].any()


def test_apply_to_changes_nothing_when_one_mask_is_wrong():
    model, masks = pruned_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    bad = dict(masks)
    bad["hidden.weight"] = torch.zeros(6, 6, dtype=torch.bool)
    bad["head.weight"] = torch.full((13, 6), 2)
    with pytest.raises(ValueError, match=r"masks\['head.weight'\] holds the value 2"):
        unchecked = Masks.__new__(Masks)  # Masks(bad) would refuse it at construction already
        unchecked._masks = bad
        unchecked.apply_to(model)
    after = model.state_dict()
    assert all(torch.equal(after[name], tensor) for name, tensor in before.items())


def test_apply_to_refuses_a_layer_whose_own_mode_cannot_be_kept_before_any_change():
    model, masks = pruned_model()
    with default_mode_set_to("compact"):  # the model-wide default: compact where possible
        masks.apply_to(model)
    assert (model.hidden.mode, model.head.mode) == ("compact", "dense")
    model.hidden.set_mode("dense")
    model.head.requested_mode = "compact"  # a request the tied head cannot keep
    with pytest.raises(ValueError, match=r"shared with embed.weight \(tied weights\)"):
        Masks.ones_like(model).apply_to(model)
    assert torch.equal(model.hidden.mask, masks["hidden.weight"])
