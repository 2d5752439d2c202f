"""What one whole training step is, for each network and provider: the network, its optimizer,
the batches, and the step itself (zero_grad, forward, cross-entropy, backward, optimizer step).

Providers:

- ``torch``: the plain-PyTorch twin (``plain_torch``) with torch.optim, no mask (100% only);
- ``torch mask-multiply``: the twin whose layers multiply the weight by the 0/1 mask before
  every forward, with torch.optim: what open_lth-style tools pay;
- ``ours dense`` / ``ours compact`` / ``ours auto``: ``sparse_tickets.models.create`` with the
  masks set by ``sparse_tickets.pruning`` and every masked layer ``set_mode(...)``, trained by
  MaskedAdam / MaskedSGD.

Masks: every masked layer pruned to the density by magnitude at the random initialisation
(layerwise), the twin given the same masks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

import sparse_tickets
from sparse_tickets.optim import MaskedAdam, MaskedSGD
from sparse_tickets.pruning import Masks, prune_to_density, weights_of

from . import plain_torch

TORCH = "torch"
TORCH_MASK_MULTIPLY = "torch mask-multiply"
OURS_MODES = ("dense", "compact", "auto")
OURS = tuple(f"ours {mode}" for mode in OURS_MODES)
PROVIDERS = (TORCH, TORCH_MASK_MULTIPLY) + OURS

IMP_DENSITIES = (1.0, 0.512, 0.21, 0.108, 0.035)  # LeNet: IMP's levels at 20% per level
CONV_DENSITIES = (1.0, 0.51, 0.21, 0.035, 0.02)


@dataclass(frozen=True)
class Network:
    """A network as its paper preset trains it (sparse_tickets.lottery.presets)."""

    model: str
    input_shape: tuple
    batch_size: int
    optimizer: str  # "adam" or "sgd"
    lr: float
    densities: tuple
    steps_per_round: int  # a full run's; --quick runs 1
    momentum: float = 0.0
    weight_decay: float = 0.0


# Steps per round keep a full run of all four near 15 minutes on 2 AVX2 cores, where a step
# takes about 1 ms (LeNet), 0.5-1 s (Conv-2) and 1-4 s (Conv-6, ResNet-20).
NETWORKS = {
    "lenet": Network("lenet_300_100", (1, 28, 28), 60, "adam", 1.2e-3, IMP_DENSITIES, 200),
    "conv2": Network("conv2", (3, 32, 32), 60, "adam", 2e-4, CONV_DENSITIES, 3),
    "conv6": Network("conv6", (3, 32, 32), 60, "adam", 3e-4, CONV_DENSITIES, 1),
    "resnet20": Network(
        "resnet20", (3, 32, 32), 128, "sgd", 0.1, CONV_DENSITIES, 1, momentum=0.9, weight_decay=1e-4
    ),
}


def quick(network: Network) -> Network:
    """``network`` shrunk for --quick: batch 4, 100% and the lowest density, 1 step a round."""
    return dataclasses.replace(
        network, batch_size=4, steps_per_round=1, densities=(1.0, network.densities[-1])
    )


@dataclass
class Setup:
    """One configuration ready to step: ``step(batch)`` runs one training step."""

    model_name: str
    provider: str
    density: float
    model: nn.Module
    optimizer: torch.optim.Optimizer
    layer_modes: dict = field(default_factory=dict)  # ours: layer name -> "dense"/"compact"

    def record_modes(self) -> None:
        """Read each masked layer's mode again: ``auto`` may decide at the first batch."""
        if self.layer_modes:
            self.layer_modes = {
                name: layer.mode for name, layer in sparse_tickets.masked_layers(self.model)
            }

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        self.optimizer.step()


def batches(network: Network, count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` synthetic batches of the network's input shape, made before any timing."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(network.batch_size, *network.input_shape, generator=generator),
            torch.randint(0, 10, (network.batch_size,), generator=generator),
        )
        for _ in range(count)
    ]


def masks_at(network: Network, density: float) -> Masks:
    """Layerwise magnitude masks of the network's seed-0 initialisation at ``density``."""
    torch.manual_seed(0)
    model = sparse_tickets.models.create(network.model, input_shape=network.input_shape)
    masks = Masks.from_model(model)
    if density < 1.0:
        masks = prune_to_density(weights_of(model), masks, density)
    return masks


def _torch_optimizer(network: Network, parameters) -> torch.optim.Optimizer:
    if network.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=network.lr, weight_decay=network.weight_decay)
    return torch.optim.SGD(
        parameters, lr=network.lr, momentum=network.momentum, weight_decay=network.weight_decay
    )


def _masked_optimizer(network: Network, model: nn.Module) -> torch.optim.Optimizer:
    if network.optimizer == "adam":
        return MaskedAdam(
            model.parameters(), lr=network.lr, weight_decay=network.weight_decay, masks=model
        )
    return MaskedSGD(
        model.parameters(),
        lr=network.lr,
        momentum=network.momentum,
        weight_decay=network.weight_decay,
        masks=model,
    )


def build(network: Network, provider: str, density: float, masks: Masks) -> Setup:
    """The configuration ``provider`` at ``density`` (``masks`` from :func:`masks_at`)."""
    torch.manual_seed(1)
    if provider in (TORCH, TORCH_MASK_MULTIPLY):
        kind = plain_torch.PLAIN if provider == TORCH else plain_torch.MASK_MULTIPLY
        model = plain_torch.build(network.model, kind, network.input_shape)
        if provider == TORCH_MASK_MULTIPLY:
            plain_torch.set_masks(model, dict(masks))
        model.train()
        return Setup(
            network.model, provider, density, model, _torch_optimizer(network, model.parameters())
        )
    mode = provider.removeprefix("ours ")
    model = sparse_tickets.models.create(network.model, input_shape=network.input_shape)
    # As in an IMP run, where level 0 trains before the first pruning: the layers have seen a
    # training batch, so auto decides each by its own measured threshold.
    model.train()
    with torch.no_grad():
        model(torch.zeros(network.batch_size, *network.input_shape))
    masks.apply_to(model)
    layer_modes = {}
    for name, layer in sparse_tickets.masked_layers(model):
        layer.set_mode(mode)
        layer_modes[name] = layer.mode
    model.train()
    return Setup(
        network.model, provider, density, model, _masked_optimizer(network, model), layer_modes
    )


def setups(network: Network) -> list[Setup]:
    """Every configuration of one network: the plain dense baseline at 100%; at each density
    the mask-multiply baseline (below 100%) and ours in each mode."""
    built = []
    for density in network.densities:
        masks = masks_at(network, density)
        providers = ((TORCH,) if density == 1.0 else (TORCH_MASK_MULTIPLY,)) + OURS
        built += [build(network, provider, density, masks) for provider in providers]
    return built


def baseline_of(density: float) -> str:
    """The plain-PyTorch row a configuration is compared with at its density."""
    return TORCH if density == 1.0 else TORCH_MASK_MULTIPLY
