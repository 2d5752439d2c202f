"""Pruning criteria: what ranks the weights, one class each, and the registry of their names.

A criterion gives every weight a score; pruning removes the LOWEST scores (:mod:`.select`).
What the scores need decides where a criterion runs:

- From the weights alone (``at_initialisation = False``: magnitude, random): ``prune`` and
  ``prune_to_density`` take its name as ``strategy=``, and IMP prunes each level's trained
  weights by it. :meth:`Criterion.scores` is called once per pruning group (one layer
  layerwise, the pooled layers global), given those layers' weights, masks and the step's
  random generator.
- From the model (``at_initialisation = True``: a forward pass, gradients, data, as SNIP, GraSP
  and SynFlow need): ``prune_at_init`` takes its name as ``method=``, and an IMP run with
  ``--one-shot-density`` scores the weights its pruned level starts from, once. With
  ``needs_batches`` the run hands it its first ``--score-batches`` training batches.

The registry is what the library, the hyperparameters' validation and the command line read:
a criterion registered with :func:`register_criterion` is a valid ``--strategy`` at once.
``STRATEGIES`` and ``AT_INIT_METHODS`` are live views of it, by kind.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .masks import Masks

Scores = dict[str, torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]
# The one-shot prune a criterion's prune_once calls: (weights, masks, density, *,
# layer_densities, scores) -> new masks, the caller's scope, exclude, nm and allow_empty set.
PruneStep = Callable[..., Masks]

_NAME = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)


@dataclass(frozen=True)
class ScoringContext:
    """What a criterion may score with. A criterion of the weights gets ``weights``, ``masks``
    and ``generator``; one that prunes at initialisation gets the rest too."""

    # Layer name -> weight to score (detached), and its current bool mask of the same shape.
    weights: Mapping[str, torch.Tensor]
    masks: Mapping[str, torch.Tensor]
    # A CPU generator for criteria that draw random numbers (None: torch's global one).
    generator: torch.Generator | None = None
    # The masked model (never to be modified: score a copy), at the weights being pruned.
    model: nn.Module | None = None
    # (inputs, class targets) training batches, for a criterion with needs_batches.
    batches: Iterable[Batch] = ()
    # One input's shape without the batch dimension, e.g. (1, 28, 28): for a data-free
    # forward pass (SynFlow's).
    input_shape: int | Iterable[int] | None = None
    # Rounds of an iterative criterion's schedule (SynFlow's); one-shot criteria ignore it.
    iterations: int = 1


class Criterion(abc.ABC):
    """One way of scoring weights for pruning. Subclass, set ``name`` (and the flags), write
    :meth:`scores`, and register the class with :func:`register_criterion`."""

    # The name the command line and ``prune(strategy=...)`` know it by: lower case, digits,
    # underscores. It is stored in a run's hyperparameters: never rename a released one.
    name: ClassVar[str] = ""
    # Scores the weights a pruned level starts from, with the model at hand (see the module);
    # False: scores trained weights, level after level, from the weights alone.
    at_initialisation: ClassVar[bool] = False
    # Scores on (inputs, targets) training batches (context.batches).
    needs_batches: ClassVar[bool] = False

    @abc.abstractmethod
    def scores(self, context: ScoringContext) -> Scores:
        """Layer name -> a score tensor of that layer's weight shape, for every layer in
        ``context.weights``; any device and float dtype (the caller casts). Finite where the
        mask keeps a weight."""

    def prune_once(
        self,
        context: ScoringContext,
        density: float,
        layer_densities: Mapping[str, float] | None,
        prune: PruneStep,
    ) -> Masks:
        """Masks keeping ``density`` of ``context.weights`` (``layer_densities`` per layer), the
        lowest scores removed: one step of ``prune``. Override for a schedule of several."""
        return prune(
            context.weights,
            context.masks,
            density,
            layer_densities=layer_densities,
            scores=self.scores(context),
        )

    def __repr__(self) -> str:
        return f"<criterion {self.name}>"


_REGISTRY: dict[str, Criterion] = {}


def register_criterion(criterion_class: type) -> type:
    """Register an instance of ``criterion_class`` (a :class:`Criterion` subclass made with no
    arguments) under its ``name``, after those registered before; returns the class, so it
    also serves as a class decorator."""
    if not (isinstance(criterion_class, type) and issubclass(criterion_class, Criterion)):
        raise TypeError(f"expected a Criterion subclass; got {criterion_class!r}")
    name = criterion_class.name
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{criterion_class.__name__}.name is {name!r}; expected lower-case "
            f"letters, digits and underscores, starting with a letter"
        )
    if name in _REGISTRY:
        raise ValueError(
            f"criterion {name!r} is already registered ({type(_REGISTRY[name]).__name__})"
        )
    _REGISTRY[name] = criterion_class()
    return criterion_class


def unregister_criterion(name: str) -> None:
    """Remove the criterion registered under ``name``."""
    if name not in _REGISTRY:
        raise KeyError(f"no criterion {name!r} is registered")
    del _REGISTRY[name]


def get_criterion(name: str) -> Criterion | None:
    """The criterion registered under ``name``, or None."""
    return _REGISTRY.get(name) if isinstance(name, str) else None


class CriteriaView(Mapping):
    """The registered criteria of one kind, name -> criterion, in registration order: a live
    view, so a criterion registered later is in it."""

    def __init__(self, at_initialisation: bool | None = None) -> None:
        self._at_initialisation = at_initialisation

    def _selected(self) -> dict[str, Criterion]:
        return {
            name: criterion
            for name, criterion in _REGISTRY.items()
            if self._at_initialisation in (None, criterion.at_initialisation)
        }

    def __getitem__(self, name: str) -> Criterion:
        return self._selected()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._selected())

    def __len__(self) -> int:
        return len(self._selected())

    def __repr__(self) -> str:
        return f"CriteriaView({list(self)})"


CRITERIA = CriteriaView()
STRATEGIES = CriteriaView(at_initialisation=False)
AT_INIT_METHODS = CriteriaView(at_initialisation=True)
