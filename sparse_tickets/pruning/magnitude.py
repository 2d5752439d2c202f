"""Magnitude pruning, the lottery-ticket rule: a weight's score is its absolute value, and the
smallest magnitudes go first."""

from __future__ import annotations

import torch

from .criteria import Criterion, Scores, ScoringContext


def magnitude_scores(
    weight: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``|weight|``, detached, in the weight's dtype (exact in every float format). The
    ``generator`` is unused: magnitude needs no randomness."""
    return weight.detach().abs()


class Magnitude(Criterion):
    """``|w|`` of the trained weights, level after level: iterative magnitude pruning."""

    name = "magnitude"

    def scores(self, context: ScoringContext) -> Scores:
        return {name: magnitude_scores(weight) for name, weight in context.weights.items()}
