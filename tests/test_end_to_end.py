"""The foundation's pieces together: one pruning level of LeNet-300-100 on the real digits."""

import torch
import torch.nn.functional as F

from sparse_tickets import data, masked_layers, models
from sparse_tickets.optim import MaskedAdam
from sparse_tickets.pruning import Masks, prune, weights_of


def _train(model, splits, iterations, seed):
    optimizer = MaskedAdam(model.parameters(), lr=1.2e-3, masks=model)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(iterations):
        x, y = splits.train.batch(torch.randint(len(splits.train), (60,), generator=order))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


@torch.no_grad()
def _accuracy(model, split):
    model.eval()
    x, y = split.batch(torch.arange(len(split)))
    return (model(x).argmax(1) == y).float().mean().item()


def test_one_imp_level_on_mnist5k_keeps_every_invariant():
    splits = data.load("mnist5k")
    model = models.create("lenet_300_100")
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    _train(model, splits, iterations=150, seed=0)
    dense_accuracy = _accuracy(model, splits.val)
    assert dense_accuracy > 0.85  # chance is 0.1; a broken gradient or step stays far below

    fractions = {models.output_layer(model) + ".weight": 0.1}
    masks = prune(weights_of(model), Masks.from_model(model), 0.2, layer_fractions=fractions)
    assert masks.is_subset_of(Masks.from_model(model))
    model.load_state_dict(initial)  # rewind to iteration 0 (this also restores full masks)
    masks.apply_to(model)
    for name, layer in masked_layers(model):
        assert torch.equal(layer.mask, masks[f"{name}.weight"])
        assert (layer.weight[~layer.mask] == 0).all()
        kept = layer.mask
        assert torch.equal(layer.weight[kept], initial[f"{name}.weight"][kept])  # rewound

    _train(model, splits, iterations=150, seed=0)
    for _, layer in masked_layers(model):
        assert (layer.weight[~layer.mask] == 0).all()
    assert Masks.from_model(model) == masks
    assert _accuracy(model, splits.val) > 0.85
