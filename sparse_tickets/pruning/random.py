"""Random pruning, and the random-sparsity control of the lottery-ticket experiments.

Random numbers are drawn on the CPU from a ``torch.Generator`` seeded with ``seed``, so a seed
gives the same masks whatever device the weights are on. With ``seed=None`` they come from
torch's global generator (reproducible under ``torch.manual_seed``).
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

import torch

from .criteria import Criterion, Scores, ScoringContext
from .masks import Masks
from .nm import NMPattern, PatternLike, as_pattern, forced_removals, relaxed_n
from .select import remove_lowest


def seeded_generator(seed: int | None) -> torch.Generator | None:
    """A CPU generator seeded with ``seed``, or None (torch's global one) when ``seed`` is None."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or None; got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def random_scores(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform random scores of the weight's shape, on its device: pruning by them removes a
    uniformly random subset of the remaining weights."""
    return torch.rand(weight.shape, generator=generator).to(weight.device)


class Random(Criterion):
    """Uniform random scores: the random-pruning control, from the step's generator (the
    layers drawn in the order given)."""

    name = "random"

    def scores(self, context: ScoringContext) -> Scores:
        return {
            name: random_scores(weight, context.generator)
            for name, weight in context.weights.items()
        }


def random_like(
    masks: Mapping[str, torch.Tensor], seed: int | None = None, nm: PatternLike | None = None
) -> Masks:
    """For each layer a uniformly random mask keeping exactly as many weights as ``masks``
    does: the control that tells a ticket's structure from its mere sparsity.

    The new masks are independent of the old ones (not subsets), on the same devices, and the
    same for the same ``seed``.

    With ``nm`` (an ``NMPattern`` or ``(n, m)`` tuple, see :mod:`.nm`) each layer's mask also
    keeps at most ``relaxed_n(nm, density)`` of every ``m`` weights along its rows, at the
    layer's own density: the control for an N:M ticket. That mask is what random pruning with
    ``nm`` makes of a dense layer in one shot: every weight draws an independent uniform score,
    each group keeps at most its ``relaxed_n`` highest, and of those the highest-scoring
    survive up to the layer's count. The distribution is the same under any permutation of the
    positions within a group, or of groups of equal length, but it is not uniform over all
    masks that meet the pattern.
    """
    masks = masks if isinstance(masks, Masks) else Masks(masks)
    pattern = None if nm is None else as_pattern(nm)
    generator = seeded_generator(seed)
    shuffled = {}
    for name, mask in masks.items():
        kept = int(mask.sum().item())
        if pattern is None:
            chosen = torch.randperm(mask.numel(), generator=generator)[:kept]
            new = torch.zeros(mask.numel(), dtype=torch.bool)
            new[chosen] = True
            new = new.view(mask.shape)
        else:
            new = _random_nm_mask(tuple(mask.shape), kept, pattern, generator)
        shuffled[name] = new.to(mask.device)
    return Masks(shuffled)


def _random_nm_mask(
    shape: tuple[int, ...], kept: int, pattern: NMPattern, generator: torch.Generator | None
) -> torch.Tensor:
    """A random CPU mask of ``shape`` keeping ``kept`` weights, at most ``relaxed_n`` per group.

    The forced removals never exceed the weights to remove, since ``relaxed_n`` is at least
    ``density * m``: so the count is always met exactly.
    """
    full = torch.ones(shape, dtype=torch.bool)
    if full.numel() == 0:
        return full
    scores = torch.rand(shape, generator=generator)
    n_keep = relaxed_n(pattern, Fraction(kept, full.numel()))
    constrained = full & ~forced_removals(scores, full, n_keep, pattern.m)
    surplus = int(constrained.sum().item()) - kept
    return remove_lowest([scores], [constrained], surplus)[0]
