"""Pruning masks, and the functions that make new ones from old ones: masks in, masks out.

A typical level of iterative magnitude pruning::

    masks = Masks.from_model(model)
    masks = prune(weights_of(model), masks, 0.2)      # a new Masks; the model is untouched
    masks.apply_to(model)                              # zeroes the newly pruned weights
    masks.save(run_dir / "level_1_masks.safetensors")

Pruning only removes: every mask it returns is a subset of the one it was given.

Beyond magnitude and random scores: :mod:`.at_init` scores the weights at initialisation with
SNIP, GraSP or SynFlow (``prune_at_init``), and :mod:`.nm` keeps masks N:M structured
(``nm=(2, 4)`` on ``prune`` and ``prune_to_density``). Each way of scoring is a
:class:`Criterion` in a registry (:mod:`.criteria`); :func:`register_criterion` adds one.
"""

from .at_init import grasp_scores, prune_at_init, snip_scores, synflow_scores
from .core import SCOPES, prune, prune_to_density
from .criteria import (
    AT_INIT_METHODS,
    CRITERIA,
    STRATEGIES,
    Criterion,
    ScoringContext,
    get_criterion,
    register_criterion,
    unregister_criterion,
)
from .density import LayerDensity
from .magnitude import magnitude_scores
from .masks import Masks, weights_of
from .nm import NMPattern, parse_nm, satisfies
from .random import random_like, random_scores
from .select import kept_count, pruned_count
from .strategies import BUILT_IN

__all__ = [
    "AT_INIT_METHODS",
    "BUILT_IN",
    "CRITERIA",
    "Criterion",
    "LayerDensity",
    "Masks",
    "NMPattern",
    "SCOPES",
    "STRATEGIES",
    "ScoringContext",
    "get_criterion",
    "grasp_scores",
    "kept_count",
    "magnitude_scores",
    "parse_nm",
    "prune",
    "prune_at_init",
    "prune_to_density",
    "pruned_count",
    "random_like",
    "random_scores",
    "register_criterion",
    "satisfies",
    "snip_scores",
    "synflow_scores",
    "unregister_criterion",
    "weights_of",
]
