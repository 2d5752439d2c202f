"""K replicates as one block-diagonal network: the same outputs, gradients and steps as K
separate networks; states moved between the forms; networks that do not stack refused."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparse_tickets import models
from sparse_tickets.nn import MaskedConv2d, MaskedLinear, masked_layers
from sparse_tickets.nn.stacking import (
    NotStackable,
    dense_optimizer_state,
    load_dense_optimizer_state,
    stack,
    stack_optimizer_states,
    stack_states,
    unstack_optimizer_state,
    unstack_state,
)
from sparse_tickets.optim import MaskedAdam, MaskedSGD
from sparse_tickets.pruning import Masks, prune_to_density, weights_of


def odd_mlp() -> nn.Module:
    """Prime widths, nothing a multiple of a block."""
    return nn.Sequential(
        nn.Flatten(), MaskedLinear(7, 13), nn.ReLU(), MaskedLinear(13, 5, bias=False)
    )


def small_cnn() -> nn.Module:
    return nn.Sequential(
        MaskedConv2d(3, 5, 3, padding=1),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        MaskedConv2d(5, 7, 3, stride=2, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        MaskedLinear(7, 3),
    )


def replicates(make, count: int, density: float) -> list:
    made = []
    for seed in range(count):
        torch.manual_seed(seed)
        model = make()
        masks = prune_to_density(weights_of(model), Masks.ones_like(model), density)
        masks.apply_to(model)
        made.append(model)
    return made


CASES = [(odd_mlp, (1, 7)), (small_cnn, (3, 9, 9))]


@pytest.mark.parametrize("make, input_shape", CASES, ids=["odd-mlp", "cnn-batchnorm"])
@pytest.mark.parametrize("count", [1, 3])
def test_the_stacked_network_computes_each_replicate(make, input_shape, count):
    nets = replicates(make, count, density=0.6)
    stacked = stack(nets, input_shape)
    assert all(layer.mode == "compact" for _, layer in masked_layers(stacked))
    inputs = [torch.randn(4, *input_shape) for _ in nets]
    got = stacked(torch.cat(inputs, dim=1))  # training mode: batch norm's batch statistics
    want = torch.cat([net(x) for net, x in zip(nets, inputs)], dim=1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # Batch norm's running statistics moved per replicate, as each network's own did.
    for r in range(count):
        state = unstack_state(nets[0], stacked.state_dict(), count, r)
        for name, tensor in nets[r].state_dict().items():
            torch.testing.assert_close(state[name], tensor, rtol=1e-5, atol=1e-6)


def test_states_move_between_the_forms_exactly():
    nets = replicates(small_cnn, 3, density=0.3)
    states = [net.state_dict() for net in nets]
    stacked = stack_states(nets[0], states)
    assert stacked["0.weight"].shape == (15, 9, 3, 3)
    assert not stacked["0.mask"][0:5, 3:9].any()  # off the diagonal: pruned
    for r in range(3):
        back = unstack_state(nets[0], stacked, 3, r)
        assert back.keys() == states[r].keys()
        for name in back:
            assert torch.equal(back[name], states[r][name]), name


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda model: MaskedAdam(model.parameters(), lr=1e-2, weight_decay=1e-3, masks=model),
        lambda model: MaskedSGD(model.parameters(), lr=0.1, momentum=0.9, masks=model),
    ],
    ids=["adam", "sgd-momentum"],
)
def test_stacked_steps_equal_separate_compact_networks(optimizer):
    # In float64: the conv bias before batch norm has a gradient that is zero but for rounding,
    # and Adam divides it by its own size, so in float32 that bias drifts by the rounding's
    # whim (1e-5 in 5 steps) while the algebra is the same; float64 shows it is (to 1e-14).
    count, input_shape = 3, (3, 9, 9)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        nets = replicates(small_cnn, count, density=0.5)
    finally:
        torch.set_default_dtype(default)
    for net in nets:  # the stacked layers are compact; compare like with like
        for _, layer in masked_layers(net):
            layer.set_mode("compact")
    stacked = stack(nets, input_shape)
    optimizers = [optimizer(net) for net in nets]
    stacked_optimizer = optimizer(stacked)
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        xs = [torch.randn(6, *input_shape, generator=generator, dtype=torch.float64) for _ in nets]
        ys = [torch.randint(0, 3, (6,), generator=generator) for _ in nets]
        for net, opt, x, y in zip(nets, optimizers, xs, ys):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        stacked_optimizer.zero_grad()
        logits = stacked(torch.cat(xs, dim=1)).view(6, count, -1)
        losses = F.cross_entropy(logits.permute(0, 2, 1), torch.stack(ys, 1), reduction="none")
        losses.mean(0).sum().backward()
        stacked_optimizer.step()
    state = stacked.state_dict()
    moments = dense_optimizer_state(stacked, stacked_optimizer)
    for r, (net, opt) in enumerate(zip(nets, optimizers)):
        for name, tensor in unstack_state(nets[0], state, count, r).items():
            torch.testing.assert_close(tensor, net.state_dict()[name], rtol=1e-10, atol=1e-12)
        mine = dense_optimizer_state(net, opt)
        theirs = unstack_optimizer_state(nets[0], moments, count, r)
        assert theirs.keys() == mine.keys()
        for name in mine:
            for key in mine[name]:
                torch.testing.assert_close(
                    theirs[name][key], mine[name][key], rtol=1e-10, atol=1e-12
                )


def test_a_replicate_gone_non_finite_does_not_reach_the_others():
    nets = replicates(odd_mlp, 3, density=1.0)
    stacked = stack(nets, (1, 7))
    x = torch.randn(4, 3, 7)
    x[:, 1] = float("nan")
    out = stacked(x).view(4, 3, -1)
    assert out[:, 1].isnan().all()
    assert torch.isfinite(out[:, [0, 2]]).all()


def test_optimizer_state_moves_between_modes():
    """A dense-mode network's Adam state loaded into a compact-mode copy steps alike."""
    torch.manual_seed(0)
    dense = replicates(odd_mlp, 1, density=0.4)[0]
    compact = copy.deepcopy(dense)
    for _, layer in masked_layers(compact):
        layer.set_mode("compact")
    adam = MaskedAdam(dense.parameters(), lr=1e-2, masks=dense)
    x, y = torch.randn(5, 7), torch.randint(0, 5, (5,))
    for _ in range(2):
        adam.zero_grad()
        F.cross_entropy(dense(x), y).backward()
        adam.step()
    compact.load_state_dict(dense.state_dict())
    other = MaskedAdam(compact.parameters(), lr=1e-2, masks=compact)
    load_dense_optimizer_state(compact, other, dense_optimizer_state(dense, adam))
    for model, opt in ((dense, adam), (compact, other)):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    for name, tensor in dense.state_dict().items():
        torch.testing.assert_close(compact.state_dict()[name], tensor, rtol=1e-5, atol=1e-6)
    both = stack_optimizer_states(dense, [dense_optimizer_state(dense, adam)] * 2)
    assert both["1.weight"]["exp_avg"].shape == (26, 14)


class Reshaping(nn.Module):
    """A forward that mixes features: it centres the outputs on their mean."""

    def __init__(self):
        super().__init__()
        self.layer = MaskedLinear(4, 6)

    def forward(self, x):
        out = self.layer(x)
        return out - out.mean(dim=1, keepdim=True)


@pytest.mark.parametrize(
    "make, input_shape, reason",
    [
        (lambda: nn.Sequential(MaskedLinear(4, 4), nn.Dropout(0.5)), (4,), "dropout"),
        (lambda: nn.Sequential(nn.Linear(4, 4)), (4,), "state of its own"),
        (lambda: nn.Sequential(MaskedConv2d(2, 4, 3, groups=2)), (2, 5, 5), "groups=2"),
        (Reshaping, (4,), "mixes the replicates"),
        (lambda: models.create("lenet_300_100"), (1, 28, 28), None),
        (lambda: models.create("conv2", dropout=0.5), (3, 32, 32), "dropout"),
    ],
    ids=["dropout", "plain-linear", "grouped-conv", "reshaping-forward", "lenet", "conv2-dropout"],
)
def test_what_does_not_stack_is_refused_with_the_reason(make, input_shape, reason):
    nets = [make(), make()]
    if reason is None:
        stack(nets, input_shape)
        return
    with pytest.raises(NotStackable, match=reason):
        stack(nets, input_shape)


def test_different_architectures_are_refused():
    with pytest.raises(NotStackable, match="not the same architecture"):
        stack([odd_mlp(), small_cnn()], (1, 7))
