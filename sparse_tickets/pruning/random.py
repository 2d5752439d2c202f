"""Random pruning, and the random-sparsity control of the lottery-ticket experiments.

Random numbers are drawn on the CPU from a ``torch.Generator`` seeded with ``seed``, so a seed
gives the same masks whatever device the weights are on. With ``seed=None`` they come from
torch's global generator (reproducible under ``torch.manual_seed``).
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

from .masks import Masks


def seeded_generator(seed: Optional[int]) -> Optional[torch.Generator]:
    """A CPU generator seeded with ``seed``, or None (torch's global one) when ``seed`` is None."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None; got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def random_scores(weight: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Uniform random scores of the weight's shape, on its device: pruning by them removes a
    uniformly random subset of the remaining weights."""
    return torch.rand(weight.shape, generator=generator).to(weight.device)


def random_like(masks: Mapping[str, torch.Tensor], seed: Optional[int] = None) -> Masks:
    """For each layer a uniformly random mask keeping exactly as many weights as ``masks``
    does: the control that tells a ticket's structure from its mere sparsity.

    The new masks are independent of the old ones (not subsets), on the same devices, and the
    same for the same ``seed``.
    """
    masks = masks if isinstance(masks, Masks) else Masks(masks)
    generator = seeded_generator(seed)
    shuffled = {}
    for name, mask in masks.items():
        kept = torch.randperm(mask.numel(), generator=generator)[:int(mask.sum().item())]
        new = torch.zeros(mask.numel(), dtype=torch.bool)
        new[kept] = True
        shuffled[name] = new.view(mask.shape).to(mask.device)
    return Masks(shuffled)
