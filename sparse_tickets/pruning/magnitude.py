"""Magnitude pruning, the lottery-ticket rule: a weight's score is its absolute value, and the
smallest magnitudes go first."""

from __future__ import annotations

from typing import Optional

import torch


def magnitude_scores(weight: torch.Tensor,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``|weight|``, detached, in the weight's dtype (exact in every float format). The
    ``generator`` is unused: magnitude needs no randomness."""
    return weight.detach().abs()
