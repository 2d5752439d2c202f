"""Pruning at initialisation: SNIP, GraSP and SynFlow scores, their criteria, and
``prune_at_init``, which runs any criterion that prunes at initialisation (:mod:`.criteria`).

Each method scores every weight of the masked layers before any training; ``prune_at_init``
then keeps the highest-scoring ones through :func:`~.core.prune_to_density`, which removes the
LOWEST scores. Every score returned here follows that convention.

The model is never touched, not its weights, masks, mode, train/eval flag nor gradients:
scores are computed on ``unmasked(copy.deepcopy(model))`` with the given masks applied
(weights zeroed where a mask is False). Plain layers, not masked ones, because the masked
layers' autograd Functions are first-order only and GraSP differentiates twice; and because a
compact-mode layer then scores exactly as a dense one.

Data-driven scores (SNIP, GraSP) run the copy with BatchNorm in train mode (batch statistics, as
training sees them) and every dropout module off, so the scores are deterministic; dropout
called as a function inside a model's ``forward`` cannot be switched off from outside. The loss
is cross-entropy, and gradients are accumulated over all batches: the objective is the SUM of
the per-batch mean losses, so each batch weighs the same whatever its size.
"""

from __future__ import annotations

import copy
import functools
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import masked_layers, unmasked
from .core import SCOPES, _check_density, _checked_masks, _checked_overrides, prune_to_density
from .criteria import AT_INIT_METHODS, Batch, Criterion, PruneStep, Scores, ScoringContext
from .masks import Masks, weights_of
from .names import format_names, mask_key
from .nm import PatternLike

_DROPOUT = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


def snip_scores(
    model: nn.Module, masks: Mapping[str, torch.Tensor], batches: Iterable[Batch]
) -> Scores:
    """SNIP's connection sensitivity ``|w ⊙ ∂L/∂w|`` of every masked layer's weight.

    Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection Sensitivity",
    ICLR 2019. The paper divides by the sum of all sensitivities; a positive factor common to
    all weights does not change the ranking, so it is left out. ``batches``: (inputs, class
    targets) pairs, at least one; ``L`` is the sum of their mean cross-entropy losses.
    """
    scorer = _ScoringCopy(model, masks)
    scorer.data_mode()
    gradients = scorer.gradient(_checked_batches(batches, "snip", scorer.device, scorer.dtype))
    return scorer.scores(
        {name: (weight.detach() * gradients[name]).abs() for name, weight in scorer.weights.items()}
    )


def grasp_scores(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    batches: Iterable[Batch],
    *,
    temperature: float = 200.0,
) -> Scores:
    """GraSP's scores under the remove-lowest convention: ``θ ⊙ Hg``.

    Wang, Zhang & Grosse, "Picking Winning Tickets Before Training by Preserving Gradient Flow",
    ICLR 2020. The paper scores ``S(-θ) = -θ ⊙ Hg`` (``g = ∂L/∂θ``, ``H`` the Hessian of ``L``,
    ``θ`` the masked layers' weights) and removes the weights with the HIGHEST ``S`` (the
    authors' code keeps the scores at or below a threshold). Removing the highest ``S`` is
    removing the lowest ``-S = θ ⊙ Hg``, which is what is returned: rank these, not ``S``.
    The logits are divided by ``temperature`` before the loss, as in the authors' code
    (``T = 200``); their further division by ``|sum of scores|`` is a positive factor and does
    not change the ranking.

    ``Hg`` by double backprop: a first pass sums ``g`` over the batches (detached), a second
    differentiates ``z = Σ (g ⊙ m) · ∂L/∂θ`` (built with ``create_graph=True``) once more:
    ``∂z/∂θ = H (g ⊙ m)``. With ``g ⊙ m``, weights that ``masks`` already prune contribute no
    gradient to the product. The batches are held in memory for the two passes.
    """
    _check_temperature(temperature)
    scorer = _ScoringCopy(model, masks)
    scorer.data_mode()
    held = list(_checked_batches(batches, "grasp", scorer.device, scorer.dtype))
    gradient = scorer.gradient(held, temperature)
    direction = {name: gradient[name] * scorer.masks[name] for name in scorer.weights}
    hessian_gradient = scorer.hessian_vector_product(held, direction, temperature)
    return scorer.scores(
        {name: weight.detach() * hessian_gradient[name] for name, weight in scorer.weights.items()}
    )


def synflow_scores(
    model: nn.Module, masks: Mapping[str, torch.Tensor], input_shape: int | Iterable[int]
) -> Scores:
    """SynFlow's synaptic saliency ``|θ ⊙ ∂R/∂θ|`` of every masked layer's weight (float64).

    Tanaka, Kunin, Yamins & Ganguli, "Pruning neural networks without any data by iteratively
    conserving synaptic flow", NeurIPS 2020. Data-free: on a float64 copy in eval mode, every
    floating tensor of the state_dict (weights, biases, BatchNorm affine parameters and running
    statistics, as in the authors' code) is replaced by its absolute value, an input of ones of
    shape ``(1, *input_shape)`` goes through, and ``R`` is the sum of the output. Float64
    because ``R`` is a product over the layers and overflows float32 in deep networks; the
    scores stay float64 for the same reason. One call is one round; ``prune_at_init`` iterates.
    """
    return _SynFlow(model, masks, _checked_input_shape(input_shape)).scores()


class SNIP(Criterion):
    """:func:`snip_scores` on the run's first training batches."""

    name = "snip"
    at_initialisation = True
    needs_batches = True

    def scores(self, context: ScoringContext) -> Scores:
        return snip_scores(context.model, context.masks, context.batches)


class GraSP(Criterion):
    """:func:`grasp_scores` on the run's first training batches (temperature 200)."""

    name = "grasp"
    at_initialisation = True
    needs_batches = True

    def scores(self, context: ScoringContext) -> Scores:
        return grasp_scores(context.model, context.masks, context.batches)


class SynFlow(Criterion):
    """:func:`synflow_scores`, data-free, iterated ``context.iterations`` times on the paper's
    exponential schedule (see :func:`prune_at_init`)."""

    name = "synflow"
    at_initialisation = True

    def scores(self, context: ScoringContext) -> Scores:
        return synflow_scores(context.model, context.masks, context.input_shape)

    def prune_once(
        self,
        context: ScoringContext,
        density: float,
        layer_densities: Mapping[str, float] | None,
        prune: PruneStep,
    ) -> Masks:
        input_shape = _checked_input_shape(context.input_shape)
        iterations = _checked_iterations(context.iterations)
        flow = _SynFlow(context.model, context.masks, input_shape)
        current = flow.masks
        # Float64 weights make the pruning rank in float64 too, where the scores live.
        weights = {name: weight.to(torch.float64) for name, weight in context.weights.items()}
        for k in range(1, iterations + 1):
            exponent = k / iterations
            overrides = (
                None
                if layer_densities is None
                else {name: value**exponent for name, value in layer_densities.items()}
            )
            current = prune(
                weights,
                current,
                density**exponent,
                layer_densities=overrides,
                scores=flow.scores(current),
            )
        return current


def prune_at_init(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    density: float,
    *,
    method: str,
    batches: Iterable[Batch] = (),
    input_shape: int | Iterable[int] | None = None,
    scope: str = "global",
    layer_densities: Mapping[str, float] | None = None,
    exclude: Iterable[str] = (),
    iterations: int = 100,
    nm: PatternLike | None = None,
    allow_empty: bool = False,
) -> Masks:
    """New masks, subsets of ``masks``, that keep ``density`` of the weights by ``method``'s
    scores (a name in ``AT_INIT_METHODS``: a registered criterion that prunes at
    initialisation).

    ``"snip"`` and ``"grasp"`` score once on ``batches`` and prune to ``density`` in one shot.
    ``"synflow"`` needs ``input_shape`` and prunes in ``iterations`` rounds, rescoring with the
    masks of the previous round, to ``density ** (k / iterations)`` at round ``k`` (the paper's
    exponential schedule; each value of ``layer_densities`` is raised to the same power). Scope
    is global by default, as in all three papers. ``scope``, ``layer_densities``, ``exclude``,
    ``nm`` and ``allow_empty`` are those of :func:`~.core.prune_to_density`. The model is left
    as it was: apply the result with ``Masks.apply_to``.
    """
    criterion = AT_INIT_METHODS.get(method) if isinstance(method, str) else None
    if criterion is None:
        raise ValueError(
            f"unknown method {method!r}; expected one of "
            f"{format_names(AT_INIT_METHODS, limit=len(AT_INIT_METHODS))}"
        )
    _check_density("density", density)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {format_names(SCOPES)}; got {scope!r}")
    # Checked before any scoring, which may be long, and before synflow raises the values to
    # powers.
    layer_densities = (
        None
        if layer_densities is None
        else _checked_overrides("layer_densities", layer_densities, Masks(masks), _check_density)
    )
    _masked_layer_names(model)  # a model that cannot be scored, said before anything else
    context = ScoringContext(
        weights=weights_of(model),
        masks=masks,
        model=model,
        batches=batches,
        input_shape=input_shape,
        iterations=iterations,
    )
    prune = functools.partial(
        prune_to_density, scope=scope, exclude=exclude, allow_empty=allow_empty, nm=nm
    )
    return criterion.prune_once(context, density, layer_densities, prune)


class _ScoringCopy:
    """``unmasked(copy.deepcopy(model))`` with ``masks`` applied, and the gradients the scores
    need; ``weights`` are its plain layers' weights under the masks' keys."""

    def __init__(
        self, model: nn.Module, masks: Mapping[str, torch.Tensor], dtype: torch.dtype | None = None
    ) -> None:
        names = _masked_layer_names(model)
        self.masks = _checked_masks(weights_of(model), masks)
        self.network = unmasked(copy.deepcopy(model))
        if dtype is not None:
            self.network.to(dtype)
        for parameter in self.network.parameters():
            parameter.grad = None
            parameter.requires_grad_(False)
        self.weights: dict[str, torch.Tensor] = {}
        for key, module_name in names.items():
            weight = self.network.get_submodule(module_name).weight
            self.weights[key] = weight.requires_grad_(True)
        self.masks = Masks(
            {name: self.masks[name].to(weight.device) for name, weight in self.weights.items()}
        )
        self.apply(self.masks)
        first = next(iter(self.weights.values()))
        self.device, self.dtype = first.device, first.dtype

    @torch.no_grad()
    def apply(self, masks: Mapping[str, torch.Tensor]) -> None:
        for name, weight in self.weights.items():
            weight.masked_fill_(~masks[name].to(weight.device), 0.0)

    def data_mode(self) -> None:
        """BatchNorm on batch statistics, as training sees them; dropout off, for determinism."""
        self.network.train()
        for module in self.network.modules():
            if isinstance(module, _DROPOUT):
                module.eval()

    def loss(self, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
        inputs, targets = batch
        return F.cross_entropy(self.network(inputs) / temperature, targets)

    def gradient(self, batches: Iterable[Batch], temperature: float = 1.0) -> Scores:
        """``∂L/∂θ`` of the sum ``L`` of the batches' mean losses, detached."""
        total = _zeros_like(self.weights)
        for batch in batches:
            _add(total, self.grad(self.loss(batch, temperature)))
        return total

    def hessian_vector_product(
        self, batches: list[Batch], vector: Scores, temperature: float
    ) -> Scores:
        """``H v`` of the same ``L``, by double backprop one batch at a time (``H`` is the sum of
        the batches' Hessians, so the graphs need not all be held at once)."""
        total = _zeros_like(self.weights)
        for batch in batches:
            gradient = self.grad(self.loss(batch, temperature), create_graph=True)
            z = sum((vector[name] * gradient[name]).sum() for name in self.weights)
            if isinstance(z, torch.Tensor) and z.requires_grad:
                _add(total, self.grad(z))
        return total

    def grad(self, output: torch.Tensor, create_graph: bool = False) -> Scores:
        names, weights = list(self.weights), list(self.weights.values())
        gradients = torch.autograd.grad(
            output, weights, allow_unused=True, create_graph=create_graph
        )
        return {
            name: (torch.zeros_like(weight) if gradient is None else gradient)
            for name, weight, gradient in zip(names, weights, gradients)
        }

    def scores(self, scores: Scores) -> Scores:
        """Detached, in the masks' order, on each weight's device."""
        return {name: scores[name].detach() for name in self.weights}


class _SynFlow:
    """The float64, all-positive copy SynFlow scores on; :meth:`scores` rescores it under new
    masks, so iterating needs one copy, not one per round."""

    def __init__(
        self, model: nn.Module, masks: Mapping[str, torch.Tensor], input_shape: tuple[int, ...]
    ) -> None:
        self.scorer = _ScoringCopy(model, masks, dtype=torch.float64)
        self.scorer.network.eval()
        with torch.no_grad():
            for tensor in self.scorer.network.state_dict().values():
                if tensor.is_floating_point():
                    tensor.abs_()
        self.magnitudes = {
            name: weight.detach().clone() for name, weight in self.scorer.weights.items()
        }
        self.masks = self.scorer.masks
        self.input_shape = input_shape

    def scores(self, masks: Mapping[str, torch.Tensor] | None = None) -> Scores:
        scorer = self.scorer
        with torch.no_grad():
            for name, weight in scorer.weights.items():
                weight.copy_(self.magnitudes[name])
        scorer.apply(self.masks if masks is None else masks)
        ones = torch.ones((1, *self.input_shape), dtype=torch.float64, device=scorer.device)
        gradient = scorer.grad(scorer.network(ones).sum())
        return scorer.scores(
            {
                name: (weight.detach() * gradient[name]).abs()
                for name, weight in scorer.weights.items()
            }
        )


def _masked_layer_names(model: nn.Module) -> dict[str, str]:
    """Mask key -> qualified module name, for every masked layer of ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    names = {mask_key(name): name for name, _ in masked_layers(model)}
    if not names:
        raise ValueError(
            f"{type(model).__name__} has no masked layers; expected a model "
            f"converted with sparse_tickets.masked(model)"
        )
    return names


def _checked_batches(
    batches: Iterable[Batch], method: str, device: torch.device, dtype: torch.dtype
) -> Iterator[Batch]:
    """The (inputs, targets) pairs on the model's device, floating inputs in its dtype; a
    one-line error for anything else, or for no batch at all."""
    if isinstance(batches, torch.Tensor) or not isinstance(batches, Iterable):
        raise TypeError(
            f"batches must be an iterable of (inputs, targets) tensor pairs; got "
            f"{type(batches).__name__}"
        )
    count = 0
    for count, batch in enumerate(batches, start=1):
        if (
            not isinstance(batch, (tuple, list))
            or len(batch) != 2
            or not all(isinstance(tensor, torch.Tensor) for tensor in batch)
        ):
            raise TypeError(
                f"batch {count - 1} is a {type(batch).__name__}; expected an "
                f"(inputs, targets) pair of tensors"
            )
        inputs, targets = batch
        yield (
            inputs.to(device=device, dtype=dtype if inputs.is_floating_point() else None),
            targets.to(device),
        )
    if count == 0:
        raise ValueError(f"{method} needs at least one (inputs, targets) batch; got none")


def _checked_input_shape(input_shape) -> tuple[int, ...]:
    shape = (input_shape,) if isinstance(input_shape, numbers.Integral) else input_shape
    if isinstance(shape, Iterable) and not isinstance(shape, (str, torch.Tensor)):
        shape = tuple(shape)
        if shape and all(
            isinstance(size, numbers.Integral) and not isinstance(size, bool) and size > 0
            for size in shape
        ):
            return tuple(int(size) for size in shape)
    raise ValueError(
        f"synflow needs input_shape, the shape of one input without the batch "
        f"dimension, e.g. (3, 32, 32) or 784; got {input_shape!r}"
    )


def _checked_iterations(iterations) -> int:
    if (
        isinstance(iterations, bool)
        or not isinstance(iterations, numbers.Integral)
        or iterations < 1
    ):
        raise ValueError(f"iterations must be an integer >= 1; got {iterations!r}")
    return int(iterations)


def _check_temperature(temperature) -> None:
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")


def _zeros_like(tensors: Mapping[str, torch.Tensor]) -> Scores:
    return {name: torch.zeros_like(tensor, requires_grad=False) for name, tensor in tensors.items()}


def _add(total: Scores, more: Scores) -> None:
    for name, tensor in more.items():
        total[name] += tensor.detach()
