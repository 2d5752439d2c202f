"""Masks to and from torch.nn.utils.prune, and the plain state_dict."""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import sparse_tickets as st
from sparse_tickets.pruning import Masks


def plain():
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Conv1d(5, 4, 1), nn.Embedding(9, 4))


def test_import_from_torch_prune_then_mask_gives_the_same_model():
    model = plain()
    prune.l1_unstructured(model[0], "weight", 0.5)
    prune.random_unstructured(model[2], "weight", 0.3)
    prune.random_unstructured(model[3], "weight", 0.7)
    expected = {
        name: model[int(name[0])].weight.detach().clone()
        for name in ("0.weight", "2.weight", "3.weight")
    }
    torch_masks = {f"{i}.weight": model[i].weight_mask.bool() for i in (0, 2, 3)}
    masks = Masks.from_torch_prune(model, remove=True)
    assert masks == torch_masks
    st.masked(model)
    masks.apply_to(model)
    for name, weight in st.pruning.weights_of(model).items():
        assert torch.equal(weight, expected[name]), name
    with pytest.raises(ValueError, match="has no tensor pruned with torch.nn.utils.prune"):
        Masks.from_torch_prune(model)


def test_export_to_torch_prune_and_plain_state_dict_load_strictly():
    model = st.masked(plain())
    masks = Masks(
        {name: torch.rand(mask.shape) < 0.5 for name, mask in Masks.from_model(model).items()}
    )
    masks.apply_to(model)
    target = plain()
    target.load_state_dict(st.plain_state_dict(model), strict=True)
    masks.to_torch_prune(target)
    for name, mask in masks.items():
        module = target[int(name[0])]
        assert torch.equal(module.weight_mask.bool(), mask)
        assert torch.equal(module.weight, st.pruning.weights_of(model)[name])
    with pytest.raises(
        ValueError,
        match=r"0 carries sparse_tickets masks; expected a plain "
        r"model \(take them out with ",
    ):
        masks.to_torch_prune(model)


def test_export_checks_every_name_and_shape_before_pruning_anything():
    target = plain()
    masks = Masks(
        {
            "0.weight": torch.ones(5, 6, dtype=torch.bool),
            "3.weight": torch.ones(4, 9, dtype=torch.bool),
        }
    )
    with pytest.raises(ValueError, match=r"masks\['3.weight'\] has shape \(4, 9\); expected"):
        masks.to_torch_prune(target)
    assert not prune.is_pruned(target)
    with pytest.raises(ValueError, match=r"masks\['9.weight'\] names no Parameter"):
        Masks({"9.weight": torch.ones(2, dtype=torch.bool)}).to_torch_prune(target)
