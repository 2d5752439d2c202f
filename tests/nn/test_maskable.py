"""Masks on the weights of any registered layer type, kept in place (weight_mask, registry)."""

import copy
import pickle

import pytest
import torch
from torch import nn

import sparse_tickets as st
from sparse_tickets.nn import masked_weights, register_maskable
from sparse_tickets.pruning import Masks


class Gated(nn.Module):
    """A user's layer with two weights and a forward of its own."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(5, 4))
        self.gate = nn.Parameter(torch.randn(5, 4))

    def forward(self, x):
        return x @ self.weight.t() * torch.sigmoid(x @ self.gate.t())


class Zoo(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 4)
        self.conv1 = nn.Conv1d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv3d(1, 2, 2)
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)
        self.gated = Gated()

    def forward(self, ids, volume):
        x = self.embed(ids)  # (N, L, 4)
        x = self.conv1(x.transpose(1, 2)).transpose(1, 2)
        x = self.attention(x, x, x, need_weights=False)[0]
        return self.gated(x).sum() + self.conv3(volume).sum()


def inputs():
    return torch.randint(0, 11, (2, 6)), torch.randn(2, 1, 3, 3, 3)


def test_every_registered_weight_gets_a_mask_in_place():
    register_maskable(Gated, weights=("weight", "gate"))
    model = Zoo()
    types = {name: type(module) for name, module in model.named_modules()}
    st.masked(model)
    assert {name: type(module) for name, module in model.named_modules()} == types
    assert list(masked_weights(model)) == [
        "embed.weight",
        "conv1.weight",
        "conv3.weight",
        "attention.in_proj_weight",
        "attention.out_proj.weight",
        "gated.weight",
        "gated.gate",
    ]
    assert "attention.in_proj_weight_mask" in model.state_dict()
    assert st.masking_report(model).coverage == 1.0


def test_pruned_weights_are_zero_their_gradients_too_and_outputs_follow():
    register_maskable(Gated, weights=("weight", "gate"))
    model = st.masked(Zoo())
    masks = Masks(
        {
            name: torch.rand(source.mask.shape) < 0.5
            for name, source in masked_weights(model).items()
        }
    )
    masks.apply_to(model)
    plain = Zoo()
    plain.load_state_dict(st.plain_state_dict(model))
    batch = inputs()
    torch.testing.assert_close(model(*batch), plain(*batch), rtol=0, atol=0)
    model(*batch).backward()
    for name, source in masked_weights(model).items():
        assert not source.weight[~masks[name]].any(), name
        assert not source.weight.grad[~masks[name]].any(), name


def test_masks_survive_loading_copying_and_unmasking():
    model = st.masked(nn.Sequential(nn.Embedding(7, 3)))
    source = masked_weights(model)["0.weight"]
    source.set_mask(torch.eye(7, 3, dtype=torch.bool))
    with torch.no_grad():
        source.weight.fill_(1.0)  # an outside write, undone by the next load
    model.load_state_dict(model.state_dict())
    assert torch.equal(source.weight, torch.eye(7, 3))
    copied = copy.deepcopy(model)
    copied(torch.arange(7)).sum().backward()  # the copy's Parameter is masked from its 1st call
    assert torch.equal(copied[0].weight.grad, torch.eye(7, 3))
    st.unmasked(model)
    assert "0.weight_mask" not in model.state_dict() and not list(masked_weights(model))


def test_register_maskable_and_the_report_of_what_was_left():
    class Unknown(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.zeros(3, 3))
            self.scale = nn.Parameter(torch.ones(3))

    model = nn.Sequential(nn.Linear(3, 3), Unknown())
    with pytest.warns(UserWarning, match=r"unregistered layer types: Unknown \(table\)"):
        st.masked(model)
    report = st.masking_report(model)
    assert [row.key for row in report.masked] == ["0.weight"]
    assert [(row.name, row.reason) for row in report.left] == [
        (
            "1.table",
            "unregistered layer type Unknown: register_maskable(Unknown, weights=('table',))",
        )
    ]
    assert report.small_params == 2 and report.coverage == pytest.approx(0.5)
    with pytest.raises(TypeError, match="register_maskable expects a class"):
        register_maskable(Unknown, weights=("not a name",))


def test_a_module_pruned_by_torch_is_refused_with_the_way_out():
    layer = nn.Embedding(4, 2)
    torch.nn.utils.prune.random_unstructured(layer, "weight", 0.5)
    model = nn.Sequential(layer)
    with pytest.warns(UserWarning, match=r"Embedding \(weight_orig\)"):
        st.masked(model)
    assert not masked_weights(model)
    assert (
        st.masking_report(model)
        .left[0]
        .reason.startswith(
            "pruned with torch.nn.utils.prune: import it with Masks.from_torch_prune(model, "
            "remove=True)"
        )
    )


@pytest.mark.parametrize("copy_with", ["deepcopy", "pickle"])
def test_a_copy_masks_its_gradients_before_any_forward(copy_with):
    # A gradient that reaches the weight without the module's forward (which could register
    # hooks late, but not from inside a compiled graph): the copy must be masked already.
    register_maskable(Gated, weights=("weight", "gate"))
    model = st.masked(nn.Sequential(nn.Embedding(7, 3), Gated()))
    masks = Masks(
        {
            name: torch.rand(source.mask.shape) < 0.5
            for name, source in masked_weights(model).items()
        }
    )
    masks.apply_to(model)
    copied = copy.deepcopy(model) if copy_with == "deepcopy" else pickle.loads(pickle.dumps(model))
    weights = {name: source.weight for name, source in masked_weights(copied).items()}
    sum((weight * 3.0).sum() for weight in weights.values()).backward()
    for name, weight in weights.items():
        assert torch.equal(weight.grad, 3.0 * masks[name]), name
    # The original's masks are its own: a change to the copy's does not reach it.
    masked_weights(copied)["0.weight"].set_mask(torch.zeros(7, 3, dtype=torch.bool))
    model[0].weight.sum().backward()
    assert torch.equal(model[0].weight.grad, masks["0.weight"].float())
