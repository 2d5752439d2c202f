"""The pruned networks the optimizer, training-step and end-to-end suites time, ours and the
baselines, with the optimizer each provider trains them with.

Ours: the masked layers of sparse_tickets with random masks at a density, in the dense-masked
mode (a backend's rows) or every layer switched to the compact mode (``compact``), trained by
MaskedAdam. Prune-style: the same weights in plain torch layers, masked by
``torch.nn.utils.prune.custom_from_mask`` with the same masks, which recomputes
``weight_orig * weight_mask`` at every forward, as the existing tools do, trained by
torch.optim.Adam. Dense: the plain layers, no pruning at all, trained by torch.optim.Adam.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import sparse_tickets
from sparse_tickets.optim import MaskedAdam
from sparse_tickets.pruning import Masks, prune_to_density, weights_of

from .profiles import TrainedModel
from .providers import COMPACT, DENSE, PRUNE_STYLE, backend_label, selected_backend


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


def set_compact(network: nn.Module) -> None:
    """Switch every masked layer of ``network`` to the compact mode (its masks applied)."""
    for _, layer in sparse_tickets.masked_layers(network):
        layer.set_mode("compact")


def trained_with_adam(
    network: nn.Module, provider: str, learning_rate: float
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """``(network, optimizer)`` as ``provider`` trains ``network`` (masked layers, masks
    applied): the plain layers (dense) or their prune-style copy with torch.optim.Adam; the
    masked layers, switched to the compact mode for ``compact``, with MaskedAdam. Converts
    ``network`` in place."""
    if provider in (DENSE, PRUNE_STYLE):
        plain = sparse_tickets.unmasked(network) if provider == DENSE else prune_style_copy(network)
        return plain, torch.optim.Adam(plain.parameters(), lr=learning_rate)
    if provider == COMPACT:
        set_compact(network)
    return network, MaskedAdam(network.parameters(), lr=learning_rate, masks=network)


def compact_training_info(provider: str, network: nn.Module, x: torch.Tensor) -> dict:
    """For the compact provider: the backends auto-selection gives its layers' compact linear
    and its Adam step, as ``extra_info``; ``{}`` for every other provider."""
    if provider != COMPACT:
        return {}
    values = [layer.trainable_weight for _, layer in sparse_tickets.masked_layers(network)]
    return {
        "backend": backend_label(
            selected_backend("compact_linear", [x] + values),
            selected_backend("masked_adam_step", values),
        )
    }
