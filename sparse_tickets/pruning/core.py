"""``prune`` and ``prune_to_density``: masks in, masks out.

Both score the weights (``weights_of(model)``) with a strategy from ``STRATEGIES``, remove the
lowest-scoring weights that the current masks keep, and return new masks, each a subset of its
old one; neither touches a model (``Masks.apply_to`` does). Counts and ties follow the one rule
in :mod:`.select`.

Scopes: ``"layerwise"`` prunes every layer on its own; ``"global"`` ranks the included layers
together against one threshold, except the layers given their own value in ``layer_fractions``
/ ``layer_densities``, which are pruned on their own at that value. Layers in ``exclude`` keep
their masks and take no part.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Callable, Optional

import torch
from torch import nn

from .masks import Masks
from .names import check_known, format_names
from .random import seeded_generator
from .select import kept_count, pruned_count, remove_lowest
from .strategies import STRATEGIES, ScoreFunction

SCOPES = ("layerwise", "global")

# A group of layers pruned together (one layer, or the global pool) and its fraction or density.
Group = tuple[tuple[str, ...], float]
# (fraction or density, weights remaining in the group, weights in total) -> how many to remove.
Count = Callable[[float, int, int], int]


def prune(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
          fraction: float, *, strategy: str = "magnitude", scope: str = "layerwise",
          layer_fractions: Optional[Mapping[str, float]] = None, exclude: Iterable[str] = (),
          allow_empty: bool = False, seed: Optional[int] = None,
          scores: Optional[Mapping[str, torch.Tensor]] = None) -> Masks:
    """Remove ``fraction`` of the weights the masks still keep: one level of iterative pruning.

    Args:
        weights: layer name -> weight tensor, the same names and shapes as ``masks``
            (``weights_of(model)``).
        masks: the current masks (a ``Masks`` or a mapping that validates as one).
        fraction: in [0, 1); of each layer's remaining weights (layerwise), or of all included
            layers' remaining weights together (global).
        strategy: a name in ``STRATEGIES``: ``"magnitude"`` or ``"random"``.
        scope: ``"layerwise"`` or ``"global"``.
        layer_fractions: per-layer fractions that replace ``fraction`` for those layers, e.g.
            the output layer at half the rate of the others.
        exclude: layers whose masks stay as they are.
        allow_empty: allow a layer to lose its last weight; otherwise that is an error.
        seed: seeds the random numbers of the ``"random"`` strategy.
        scores: layer name -> score tensor of the weight's shape, ranked instead of the
            strategy's scores (e.g. from :mod:`.at_init`); every pruned layer needs one.
    """
    masks = _checked_masks(weights, masks)
    score = _score_function(strategy, scores)
    _check_fraction("fraction", fraction)
    overrides = _checked_overrides("layer_fractions", layer_fractions, masks, _check_fraction)
    excluded = _checked_exclude(exclude, masks, overrides, "layer_fractions")
    groups = _groups(masks, scope, fraction, overrides, excluded)
    return _remove(weights, masks, groups, _count_for_fraction, _source(strategy, scores), score,
                   allow_empty, seed)


def prune_to_density(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
                     density: float, *, strategy: str = "magnitude", scope: str = "layerwise",
                     layer_densities: Optional[Mapping[str, float]] = None,
                     exclude: Iterable[str] = (), allow_empty: bool = False,
                     seed: Optional[int] = None,
                     scores: Optional[Mapping[str, torch.Tensor]] = None) -> Masks:
    """Prune in one shot to ``density`` of the weights, counted against the TOTAL size.

    Layerwise, each included layer keeps ``density`` of its weights; global, the included
    layers together keep ``density`` of theirs. Pruning only removes: a layer (or pool) already
    at or below its target stays as it is. ``density`` is in (0, 1]; ``layer_densities``
    overrides it per layer; the other arguments are those of :func:`prune`.
    """
    masks = _checked_masks(weights, masks)
    score = _score_function(strategy, scores)
    _check_density("density", density)
    overrides = _checked_overrides("layer_densities", layer_densities, masks, _check_density)
    excluded = _checked_exclude(exclude, masks, overrides, "layer_densities")
    groups = _groups(masks, scope, density, overrides, excluded)
    return _remove(weights, masks, groups, _count_for_density, _source(strategy, scores), score,
                   allow_empty, seed)


def _source(strategy: str, scores) -> str:
    """Where the scores come from, as error messages name it."""
    return "the given scores" if scores is not None else f"strategy {strategy!r}"


def _count_for_fraction(fraction: float, remaining: int, total: int) -> int:
    return pruned_count(fraction, remaining)


def _count_for_density(density: float, remaining: int, total: int) -> int:
    return max(0, remaining - kept_count(density, total))


def _remove(weights: Mapping[str, torch.Tensor], masks: Masks, groups: list[Group],
            count: Count, strategy: str, score: ScoreFunction, allow_empty: bool,
            seed: Optional[int]) -> Masks:
    generator = seeded_generator(seed)
    # One score dtype for all layers, so a global ranking compares like with like, and wide
    # enough that bf16/fp16 magnitudes rank exactly.
    dtype = (torch.float64 if any(weights[name].dtype == torch.float64
                                  for names, _ in groups for name in names) else torch.float32)
    new = {name: mask.clone() for name, mask in masks.items()}
    for names, value in groups:
        device = weights[names[0]].device
        old = [masks[name].to(device) for name in names]
        removed = count(value, sum(int(mask.sum().item()) for mask in old),
                        sum(mask.numel() for mask in old))
        if removed == 0:
            continue
        ranked = [_scores(score, strategy, name, weights[name], mask, generator, dtype)
                  for name, mask in zip(names, old)]
        for name, before, after in zip(names, old, remove_lowest(ranked, old, removed)):
            if not allow_empty and bool(before.any()) and not bool(after.any()):
                raise ValueError(f"pruning would leave {name!r} with no weights (all "
                                 f"{int(before.sum().item())} remaining removed); pass "
                                 f"allow_empty=True to allow an empty layer")
            new[name] = after.to(masks[name].device)
    return Masks(new)


def _scores(score: ScoreFunction, strategy: str, name: str, weight: torch.Tensor,
            mask: torch.Tensor, generator: Optional[torch.Generator],
            dtype: torch.dtype) -> torch.Tensor:
    scores = score(name, weight, generator)
    if tuple(scores.shape) != tuple(weight.shape):
        raise ValueError(f"{strategy} gave scores of shape {tuple(scores.shape)} "
                         f"for {name!r}; expected the weight's shape {tuple(weight.shape)}")
    scores = scores.to(device=mask.device, dtype=dtype)
    # NaN sorts last, so a diverged weight would silently survive every level.
    if bool((scores.isnan() & mask).any()):
        raise ValueError(f"{strategy}: scores of {name!r} hold NaN; expected finite "
                         f"weights (did training diverge?)")
    return scores


def _checked_masks(weights, masks) -> Masks:
    """``masks`` as Masks, after checking that ``weights`` names the same layers, same shapes."""
    masks = masks if isinstance(masks, Masks) else Masks(masks)
    if isinstance(weights, nn.Module):
        raise TypeError("weights must be a mapping of layer name -> weight tensor; got a model "
                        "(pass weights_of(model))")
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a mapping of layer name -> weight tensor; got "
                        f"{type(weights).__name__}")
    missing = [name for name in masks if name not in weights]
    unexpected = [name for name in weights if name not in masks]
    if missing or unexpected:
        raise ValueError(f"weights and masks name different layers: missing from weights "
                         f"{format_names(missing)}; not in masks {format_names(unexpected)}")
    for name, mask in masks.items():
        weight = weights[name]
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"weights[{name!r}] is a {type(weight).__name__}; expected a tensor")
        if weight.shape != mask.shape:
            raise ValueError(f"weights[{name!r}] has shape {tuple(weight.shape)}; expected its "
                             f"mask's shape {tuple(mask.shape)}")
    return masks


def _score_function(strategy: str, scores: Optional[Mapping[str, torch.Tensor]]):
    """(layer name, weight, generator) -> scores: the strategy's, or a lookup in ``scores``."""
    if scores is not None:
        if not isinstance(scores, Mapping):
            raise TypeError(f"scores must be a mapping of layer name -> score tensor; got "
                            f"{type(scores).__name__}")

        def given(name: str, weight: torch.Tensor, generator) -> torch.Tensor:
            if name not in scores:
                raise ValueError(f"scores has no entry for {name!r}; expected a score tensor "
                                 f"for every layer that is pruned")
            return scores[name].detach()
        return given
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of "
                         f"{format_names(STRATEGIES, limit=len(STRATEGIES))}")
    function = STRATEGIES[strategy]
    return lambda name, weight, generator: function(weight, generator)


def _check_number(argument: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argument} must be a number; got {type(value).__name__}")


def _check_fraction(argument: str, value) -> None:
    _check_number(argument, value)
    if not 0 <= value < 1:
        raise ValueError(f"{argument} must be in [0, 1); got {value!r}")


def _check_density(argument: str, value) -> None:
    _check_number(argument, value)
    if not 0 < value <= 1:
        raise ValueError(f"{argument} must be in (0, 1]; got {value!r}")


def _checked_overrides(argument: str, overrides: Optional[Mapping[str, float]], masks: Masks,
                       check: Callable[[str, float], None]) -> dict[str, float]:
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise TypeError(f"{argument} must be a mapping of layer name -> value; got "
                        f"{type(overrides).__name__}")
    check_known(argument, overrides, masks)
    for name, value in overrides.items():
        check(f"{argument}[{name!r}]", value)
    return dict(overrides)


def _checked_exclude(exclude: Iterable[str], masks: Masks, overrides: Mapping[str, float],
                     overrides_argument: str) -> set[str]:
    if exclude is None:
        return set()
    # A lone string is one name, not an iterable of one-letter names.
    names = [exclude] if isinstance(exclude, str) else exclude
    if not isinstance(names, Iterable):
        raise TypeError(f"exclude must be a collection of layer names; got "
                        f"{type(exclude).__name__}")
    names = list(names)
    check_known("exclude", names, masks)
    both = [name for name in names if name in overrides]
    if both:
        raise ValueError(f"{format_names(both)} both excluded and given a value in "
                         f"{overrides_argument}; expected one or the other")
    return set(names)


def _groups(masks: Masks, scope: str, value: float, overrides: Mapping[str, float],
            excluded: set[str]) -> list[Group]:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {format_names(SCOPES)}; got {scope!r}")
    included = [name for name in masks if name not in excluded]
    if scope == "layerwise":
        return [((name,), overrides.get(name, value)) for name in included]
    pooled = tuple(name for name in included if name not in overrides)
    return (([(pooled, value)] if pooled else [])
            + [((name,), overrides[name]) for name in included if name in overrides])
