"""Pruning masks, and the functions that make new ones from old ones: masks in, masks out.

A typical level of iterative magnitude pruning::

    masks = Masks.from_model(model)
    masks = prune(weights_of(model), masks, 0.2)      # a new Masks; the model is untouched
    masks.apply_to(model)                              # zeroes the newly pruned weights
    masks.save(run_dir / "level_1_masks.safetensors")

Pruning only removes: every mask it returns is a subset of the one it was given.
"""

from .core import SCOPES, prune, prune_to_density
from .density import LayerDensity
from .magnitude import magnitude_scores
from .masks import Masks, weights_of
from .random import random_like, random_scores
from .select import kept_count, pruned_count
from .strategies import STRATEGIES

__all__ = ["LayerDensity", "Masks", "SCOPES", "STRATEGIES", "kept_count", "magnitude_scores",
           "prune", "prune_to_density", "pruned_count", "random_like", "random_scores",
           "weights_of"]
