"""The registry of pruning strategies: name -> score function.

A score function maps a weight tensor (and a CPU ``torch.Generator``, or None, for strategies
that draw random numbers) to a score tensor of the weight's shape on its device; pruning removes
the lowest scores. The names are the ones the command line accepts; register a new strategy by
adding it here.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .magnitude import magnitude_scores
from .random import random_scores

ScoreFunction = Callable[[torch.Tensor, Optional[torch.Generator]], torch.Tensor]

STRATEGIES: dict[str, ScoreFunction] = {
    "magnitude": magnitude_scores,
    "random": random_scores,
}
