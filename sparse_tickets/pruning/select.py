"""How many weights a pruning step removes, and which: the rule every strategy shares.

Counts round to the nearest integer, halves up, everywhere:

- pruning a fraction ``f`` of ``n`` remaining weights removes ``floor(f * n + 1/2)`` of them;
- pruning to a density ``d`` of ``n`` weights in total keeps ``floor(d * n + 1/2)`` of them.

The product is taken exactly on the decimal value of ``f`` (its shortest repr), so 0.7 of 15 is
10.5 and rounds to 11 whichever way 0.7 happens to be stored in binary.

Which weights: the lowest-scoring remaining ones. Among equal scores the weight that comes
first (order of the layers, then row-major position within a layer) is removed first, so a
result never depends on the sort's whims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import torch

_HALF = Fraction(1, 2)


def _nearest_count(share: float, count: int) -> int:
    return math.floor(Fraction(repr(float(share))) * count + _HALF)


def pruned_count(fraction: float, remaining: int) -> int:
    """How many of ``remaining`` weights pruning ``fraction`` of them removes."""
    return _nearest_count(fraction, remaining)


def kept_count(density: float, total: int) -> int:
    """How many of ``total`` weights pruning to ``density`` keeps."""
    return _nearest_count(density, total)


def remove_lowest(
    scores: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], count: int
) -> list[torch.Tensor]:
    """New masks with the ``count`` lowest-scoring weights that ``masks`` keep removed, chosen
    across all the given layers together (one layer: layerwise; several: a global threshold).

    ``scores[i]`` has the shape of ``masks[i]``; all tensors share one device. Weights the masks
    already prune are never candidates, so each new mask is a subset of its old one.
    """
    if not masks:
        return []
    flat_masks = [mask.reshape(-1) for mask in masks]
    positions = [flat.nonzero().squeeze(1) for flat in flat_masks]
    candidates = torch.cat([score.reshape(-1)[where] for score, where in zip(scores, positions)])
    if not 0 <= count <= candidates.numel():
        raise ValueError(f"cannot remove {count} of {candidates.numel()} remaining weights")
    # The candidates lie in layer order, then position order, and a stable sort keeps that
    # order among equal scores: ties go to the first weight.
    lowest = torch.sort(candidates, stable=True).indices[:count]
    removed = torch.zeros(candidates.numel(), dtype=torch.bool, device=candidates.device)
    removed[lowest] = True
    new_masks = []
    for mask, flat, where, removed_here in zip(
        masks, flat_masks, positions, removed.split([len(where) for where in positions])
    ):
        new = flat.clone()
        new[where[removed_here]] = False
        new_masks.append(new.view(mask.shape))
    return new_masks
