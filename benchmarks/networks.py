"""The pruned networks the optimizer and end-to-end suites time, ours and prune-style.

Ours: the masked layers of sparse_tickets with random masks at a density. Prune-style: the same
weights in plain torch layers, masked by ``torch.nn.utils.prune.custom_from_mask`` with the same
masks, which recomputes ``weight_orig * weight_mask`` at every forward, as the existing tools do.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import sparse_tickets
from sparse_tickets.pruning import Masks, prune_to_density, weights_of

from .profiles import TrainedModel


def masked_network(model: TrainedModel, device: str) -> nn.Module:
    """``model`` built from masked layers: a registered model, or an MLP of the widths."""
    if not model.widths:
        return sparse_tickets.models.create(model.name, input_shape=model.input_shape).to(device)
    layers = [nn.Flatten()]
    for index, (width_in, width_out) in enumerate(zip(model.widths, model.widths[1:])):
        if index:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(width_in, width_out))
    return sparse_tickets.masked(nn.Sequential(*layers)).to(device)


def prune_randomly(network: nn.Module, density: float) -> Masks:
    """Set random masks keeping ``density`` of every masked layer's weights; return them."""
    masks = Masks.from_model(network)
    if density < 1.0:
        masks = prune_to_density(weights_of(network), masks, density, strategy="random", seed=0)
        masks.apply_to(network)
    return masks


def prune_style_copy(network: nn.Module) -> nn.Module:
    """``network`` in plain torch layers (the same weights), each pruned with torch's prune
    utility where its mask prunes anything. Converts ``network`` in place and returns it."""
    masks = {name: layer.mask.clone() for name, layer in sparse_tickets.masked_layers(network)}
    plain = sparse_tickets.unmasked(network)
    for name, mask in masks.items():
        if not bool(mask.all()):
            torch_prune.custom_from_mask(plain.get_submodule(name), "weight", mask)
    return plain


def masked_parameters(network: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(weight, mask)`` of every masked layer."""
    return [(layer.weight, layer.mask) for _, layer in sparse_tickets.masked_layers(network)]
