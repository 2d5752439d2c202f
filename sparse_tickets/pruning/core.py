"""``prune`` and ``prune_to_density``: masks in, masks out.

Both score the weights (``weights_of(model)``) with a criterion from ``STRATEGIES`` (those that
score from the weights alone, :mod:`.criteria`), or with given scores, remove the
lowest-scoring weights that the current masks keep, and return new masks, each a subset of its
old one; neither touches a model (``Masks.apply_to`` does). Counts and ties follow the one rule
in :mod:`.select`.

Scopes: ``"layerwise"`` prunes every layer on its own; ``"global"`` ranks the included layers
together against one threshold, except the layers given their own value in ``layer_fractions``
/ ``layer_densities``, which are pruned on their own at that value. Layers in ``exclude`` keep
their masks and take no part.

N:M structure (``nm=``, see :mod:`.nm`): for each pruning group (one layer layerwise, or the
global pool) let ``d`` be the density the group has after the step, ``(remaining - removed) /
total``. Every layer of the group is first constrained to keep at most ``relaxed_n(nm, d)`` of
every ``m`` consecutive weights along its rows (forced removals: the lowest-scoring kept weights
of each over-full group), then the rest of the step's count is removed as usual from the
constrained masks. So the structure tightens level by level as the density falls (2:4 at 20% a
level: no constraint at 80%, 3:4 at 64% and 51%, 2:4 from 41% on), and a one-shot prune to 0.5
with 2:4 keeps exactly 2 of every full group of 4. When the forced removals outnumber the step's
count, the step removes more than asked: the forced ones all go, nothing else.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction

import torch
from torch import nn

from .criteria import STRATEGIES, ScoringContext
from .masks import Masks
from .names import check_known, format_names
from .nm import NMPattern, PatternLike, as_pattern, forced_removals, relaxed_n, satisfies
from .random import seeded_generator
from .select import kept_count, pruned_count, remove_lowest

SCOPES = ("layerwise", "global")

# A group of layers pruned together (one layer, or the global pool) and its fraction or density.
Group = tuple[tuple[str, ...], float]
# (fraction or density, weights remaining in the group, weights in total) -> how many to remove.
Count = Callable[[float, int, int], int]
# (a group's layer names, all weights, the group's masks, generator) -> the group's scores.
ScoreFunction = Callable[[tuple, Mapping, list, torch.Generator | None], Mapping[str, torch.Tensor]]


def prune(
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    fraction: float,
    *,
    strategy: str = "magnitude",
    scope: str = "layerwise",
    layer_fractions: Mapping[str, float] | None = None,
    exclude: Iterable[str] = (),
    allow_empty: bool = False,
    seed: int | None = None,
    scores: Mapping[str, torch.Tensor] | None = None,
    nm: PatternLike | None = None,
) -> Masks:
    """Remove ``fraction`` of the weights the masks still keep: one level of iterative pruning.

    Args:
        weights: layer name -> weight tensor, the same names and shapes as ``masks``
            (``weights_of(model)``).
        masks: the current masks (a ``Masks`` or a mapping that validates as one).
        fraction: in [0, 1); of each layer's remaining weights (layerwise), or of all included
            layers' remaining weights together (global).
        strategy: a name in ``STRATEGIES``: ``"magnitude"``, ``"random"`` or a criterion
            registered since (:mod:`.criteria`).
        scope: ``"layerwise"`` or ``"global"``.
        layer_fractions: per-layer fractions that replace ``fraction`` for those layers, e.g.
            the output layer at half the rate of the others.
        exclude: layers whose masks stay as they are.
        allow_empty: allow a layer to lose its last weight; otherwise that is an error.
        seed: seeds the random numbers of the ``"random"`` strategy.
        scores: layer name -> score tensor of the weight's shape, ranked instead of the
            strategy's scores (e.g. from :mod:`.at_init`); every pruned layer needs one.
        nm: an N:M pattern (``NMPattern`` or ``(n, m)`` tuple, e.g. ``(2, 4)``) that the new
            masks follow, relaxed to the density reached (module docstring); it may remove
            more than ``fraction`` when the old masks crowd some groups. None: unstructured.
    """
    masks = _checked_masks(weights, masks)
    score = _score_function(strategy, scores)
    pattern = None if nm is None else as_pattern(nm)
    _check_fraction("fraction", fraction)
    overrides = _checked_overrides("layer_fractions", layer_fractions, masks, _check_fraction)
    excluded = _checked_exclude(exclude, masks, overrides, "layer_fractions")
    groups = _groups(masks, scope, fraction, overrides, excluded)
    return _remove(
        weights,
        masks,
        groups,
        _count_for_fraction,
        _source(strategy, scores),
        score,
        allow_empty,
        seed,
        pattern,
    )


def prune_to_density(
    weights: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    density: float,
    *,
    strategy: str = "magnitude",
    scope: str = "layerwise",
    layer_densities: Mapping[str, float] | None = None,
    exclude: Iterable[str] = (),
    allow_empty: bool = False,
    seed: int | None = None,
    scores: Mapping[str, torch.Tensor] | None = None,
    nm: PatternLike | None = None,
) -> Masks:
    """Prune in one shot to ``density`` of the weights, counted against the TOTAL size.

    Layerwise, each included layer keeps ``density`` of its weights; global, the included
    layers together keep ``density`` of theirs. Pruning only removes: a layer (or pool) already
    at or below its target stays as it is. ``density`` is in (0, 1]; ``layer_densities``
    overrides it per layer; the other arguments are those of :func:`prune`. With ``nm`` and
    masks that are all ones, the result meets the density exactly: e.g. 0.5 with 2:4 keeps 2 of
    every full group of 4.
    """
    masks = _checked_masks(weights, masks)
    score = _score_function(strategy, scores)
    pattern = None if nm is None else as_pattern(nm)
    _check_density("density", density)
    overrides = _checked_overrides("layer_densities", layer_densities, masks, _check_density)
    excluded = _checked_exclude(exclude, masks, overrides, "layer_densities")
    groups = _groups(masks, scope, density, overrides, excluded)
    return _remove(
        weights,
        masks,
        groups,
        _count_for_density,
        _source(strategy, scores),
        score,
        allow_empty,
        seed,
        pattern,
    )


def _source(strategy: str, scores) -> str:
    """Where the scores come from, as error messages name it."""
    return "the given scores" if scores is not None else f"strategy {strategy!r}"


def _count_for_fraction(fraction: float, remaining: int, total: int) -> int:
    return pruned_count(fraction, remaining)


def _count_for_density(density: float, remaining: int, total: int) -> int:
    return max(0, remaining - kept_count(density, total))


def _remove(
    weights: Mapping[str, torch.Tensor],
    masks: Masks,
    groups: list[Group],
    count: Count,
    strategy: str,
    score: ScoreFunction,
    allow_empty: bool,
    seed: int | None,
    pattern: NMPattern | None = None,
) -> Masks:
    generator = seeded_generator(seed)
    # One score dtype for all layers, so a global ranking compares like with like, and wide
    # enough that bf16/fp16 magnitudes rank exactly.
    dtype = (
        torch.float64
        if any(weights[name].dtype == torch.float64 for names, _ in groups for name in names)
        else torch.float32
    )
    new = {name: mask.clone() for name, mask in masks.items()}
    for names, value in groups:
        device = weights[names[0]].device
        old = [masks[name].to(device) for name in names]
        remaining = sum(int(mask.sum().item()) for mask in old)
        total = sum(mask.numel() for mask in old)
        removed = count(value, remaining, total)
        n_keep = _n_keep(pattern, old, remaining - removed, total)
        if removed == 0 and n_keep is None:
            continue
        scored = score(names, weights, old, generator)
        ranked = [
            _scores(scored, strategy, name, weights[name], mask, dtype)
            for name, mask in zip(names, old)
        ]
        candidates, rest = old, removed
        if n_keep is not None:
            forced = [
                forced_removals(scores, mask, n_keep, pattern.m)
                for scores, mask in zip(ranked, old)
            ]
            candidates = [mask & ~gone for mask, gone in zip(old, forced)]
            # Forced removals count towards the step; beyond it, they go all the same.
            rest = max(0, removed - sum(int(gone.sum().item()) for gone in forced))
        for name, before, after in zip(names, old, remove_lowest(ranked, candidates, rest)):
            if not allow_empty and bool(before.any()) and not bool(after.any()):
                raise ValueError(
                    f"pruning would leave {name!r} with no weights (all "
                    f"{int(before.sum().item())} remaining removed); pass "
                    f"allow_empty=True to allow an empty layer"
                )
            new[name] = after.to(masks[name].device)
    return Masks(new)


def _n_keep(
    pattern: NMPattern | None, masks: list[torch.Tensor], kept_after: int, total: int
) -> int | None:
    """How many of every ``m`` weights the group's masks may keep after the step, or None when
    that constrains nothing the masks do not already meet."""
    if pattern is None or total == 0:
        return None
    n_keep = relaxed_n(pattern, Fraction(kept_after, total))
    if n_keep == pattern.m or all(satisfies(mask, (n_keep, pattern.m)) for mask in masks):
        return None
    return n_keep


def _scores(
    scored: Mapping[str, torch.Tensor],
    strategy: str,
    name: str,
    weight: torch.Tensor,
    mask: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    scores = scored.get(name)
    if not isinstance(scores, torch.Tensor):
        raise ValueError(
            f"{strategy} gave no score tensor for {name!r}; expected one for "
            f"every layer it is given"
        )
    if tuple(scores.shape) != tuple(weight.shape):
        raise ValueError(
            f"{strategy} gave scores of shape {tuple(scores.shape)} "
            f"for {name!r}; expected the weight's shape {tuple(weight.shape)}"
        )
    scores = scores.to(device=mask.device, dtype=dtype)
    # NaN sorts last, so a diverged weight would silently survive every level.
    if bool((scores.isnan() & mask).any()):
        raise ValueError(
            f"{strategy}: scores of {name!r} hold NaN; expected finite "
            f"weights (did training diverge?)"
        )
    return scores


def _checked_masks(weights, masks) -> Masks:
    """``masks`` as Masks, after checking that ``weights`` names the same layers, same shapes."""
    masks = masks if isinstance(masks, Masks) else Masks(masks)
    if isinstance(weights, nn.Module):
        raise TypeError(
            "weights must be a mapping of layer name -> weight tensor; got a model "
            "(pass weights_of(model))"
        )
    if not isinstance(weights, Mapping):
        raise TypeError(
            f"weights must be a mapping of layer name -> weight tensor; got "
            f"{type(weights).__name__}"
        )
    missing = [name for name in masks if name not in weights]
    unexpected = [name for name in weights if name not in masks]
    if missing or unexpected:
        raise ValueError(
            f"weights and masks name different layers: missing from weights "
            f"{format_names(missing)}; not in masks {format_names(unexpected)}"
        )
    masks.check_materialised("pruning")
    for name, mask in masks.items():
        weight = weights[name]
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"weights[{name!r}] is a {type(weight).__name__}; expected a tensor")
        if weight.is_meta:
            raise ValueError(
                f"weights[{name!r}] is on the meta device, which holds no values to "
                f"score; expected the weights of a materialised model"
            )
        if weight.shape != mask.shape:
            raise ValueError(
                f"weights[{name!r}] has shape {tuple(weight.shape)}; expected its "
                f"mask's shape {tuple(mask.shape)}"
            )
    return masks


def _score_function(strategy: str, scores: Mapping[str, torch.Tensor] | None) -> ScoreFunction:
    """A pruning group's scores: the strategy's criterion's, or a lookup in ``scores``."""
    if scores is not None:
        if not isinstance(scores, Mapping):
            raise TypeError(
                f"scores must be a mapping of layer name -> score tensor; got "
                f"{type(scores).__name__}"
            )

        def given(names: tuple, weights: Mapping, masks: list, generator) -> dict:
            return {name: given_layer(name, weights[name]) for name in names}

        def given_layer(name: str, weight: torch.Tensor) -> torch.Tensor:
            if name not in scores:
                raise ValueError(
                    f"scores has no entry for {name!r}; expected a score tensor "
                    f"for every layer that is pruned"
                )
            given_scores = scores[name]
            if not isinstance(given_scores, torch.Tensor):
                raise TypeError(
                    f"scores[{name!r}] is a {type(given_scores).__name__}; expected "
                    f"a tensor of the weight's shape {tuple(weight.shape)}"
                )
            if given_scores.shape != weight.shape:
                raise ValueError(
                    f"scores[{name!r}] has shape {tuple(given_scores.shape)}; "
                    f"expected the weight's shape {tuple(weight.shape)}"
                )
            return given_scores.detach()

        return given
    criterion = STRATEGIES.get(strategy) if isinstance(strategy, str) else None
    if criterion is None:
        raise ValueError(
            f"unknown strategy {strategy!r}; expected one of "
            f"{format_names(STRATEGIES, limit=len(STRATEGIES))}"
        )

    def by_criterion(names: tuple, weights: Mapping, masks: list, generator) -> Mapping:
        scored = criterion.scores(
            ScoringContext(
                weights={name: weights[name] for name in names},
                masks=dict(zip(names, masks)),
                generator=generator,
            )
        )
        if not isinstance(scored, Mapping):
            raise TypeError(
                f"criterion {strategy!r} gave a {type(scored).__name__}; expected "
                f"a mapping of layer name -> score tensor"
            )
        return scored

    return by_criterion


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


def _checked_overrides(
    argument: str,
    overrides: Mapping[str, float] | None,
    masks: Masks,
    check: Callable[[str, float], None],
) -> dict[str, float]:
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise TypeError(
            f"{argument} must be a mapping of layer name -> value; got {type(overrides).__name__}"
        )
    check_known(argument, overrides, masks)
    for name, value in overrides.items():
        check(f"{argument}[{name!r}]", value)
    return dict(overrides)


def _checked_exclude(
    exclude: Iterable[str], masks: Masks, overrides: Mapping[str, float], overrides_argument: str
) -> set[str]:
    if exclude is None:
        return set()
    # A lone string is one name, not an iterable of one-letter names.
    names = [exclude] if isinstance(exclude, str) else exclude
    if not isinstance(names, Iterable):
        raise TypeError(
            f"exclude must be a collection of layer names; got {type(exclude).__name__}"
        )
    names = list(names)
    check_known("exclude", names, masks)
    both = [name for name in names if name in overrides]
    if both:
        raise ValueError(
            f"{format_names(both)} both excluded and given a value in "
            f"{overrides_argument}; expected one or the other"
        )
    return set(names)


def _groups(
    masks: Masks, scope: str, value: float, overrides: Mapping[str, float], excluded: set[str]
) -> list[Group]:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {format_names(SCOPES)}; got {scope!r}")
    included = [name for name in masks if name not in excluded]
    if scope == "layerwise":
        return [((name,), overrides.get(name, value)) for name in included]
    pooled = tuple(name for name in included if name not in overrides)
    return ([(pooled, value)] if pooled else []) + [
        ((name,), overrides[name]) for name in included if name in overrides
    ]
