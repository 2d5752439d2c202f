"""What a run's stored files must mean before they are used.

A checksum proves a file is the bytes that were written, not that those bytes are right for
the run: a file edited by hand with its digest recomputed, copied from another run or level,
or written by older code, passes it. So every tensor file is checked against the model
(names, shapes, dtypes, finite values), against its level's masks (mask buffers equal to them,
pruned weights exactly zero) and every metrics.json for the numbers the run reads from it.

Each check returns None when the content makes sense, else one line saying what is wrong;
the caller decides what follows: a file it can make again (a checkpoint, the masks of a level
not yet trained) is discarded and redone, one of a finished level is refused with the file
named (:class:`~.runs.BadArtifact`), for the user to delete once they know why it changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from .. import files
from ..nn.layers import MaskedLayer
from ..nn.weight_mask import MASK_SUFFIX, masked_weight_names
from ..pruning import Masks
from ..pruning.names import format_names
from .runs import BadArtifact, Level

T = TypeVar("T")

# The numbers every finished level's metrics.json holds, and what each must be.
_COUNTS = ("start_iteration", "iterations")
_FRACTIONS = ("density", "final_test_accuracy")
_EVALUATION_NUMBERS = ("val_loss", "val_accuracy", "test_loss", "test_accuracy")


class Reference:
    """What a state_dict of the run's model holds: each tensor's shape and dtype, and which
    weight each mask buffer belongs to. Taken once from the model."""

    def __init__(self, model: nn.Module):
        state = model.state_dict()
        self.layout = {name: (tuple(tensor.shape), tensor.dtype) for name, tensor in state.items()}
        self.mask_buffers = _mask_buffers(model)

    def state_problem(
        self, state: Any, masks: Mapping[str, torch.Tensor] | None = None
    ) -> str | None:
        """What is wrong with ``state`` as a state_dict of the model (with ``masks`` set, when
        given), or None."""
        if not isinstance(state, Mapping):
            return f"holds a {type(state).__name__}; expected a dict of tensors"
        missing = [name for name in self.layout if name not in state]
        unexpected = [name for name in state if name not in self.layout]
        if missing or unexpected:
            return (
                f"holds other tensors than the model's (missing {format_names(missing)}; "
                f"unexpected {format_names(unexpected)})"
            )
        for name, (shape, dtype) in self.layout.items():
            problem = _tensor_problem(name, state[name], shape, dtype)
            if problem:
                return problem
        if masks is not None:
            return self._masked_problem(state, masks)
        return None

    def _masked_problem(self, state: Mapping, masks: Mapping[str, torch.Tensor]) -> str | None:
        for buffer, weight in self.mask_buffers.items():
            mask = masks.get(weight)
            if mask is None:
                continue
            if not torch.equal(state[buffer], mask):
                return (
                    f"its mask {buffer!r} is not the level's ({_kept(state[buffer])} where "
                    f"the level's masks keep {_kept(mask)}): it belongs to another level"
                )
            if bool(state[weight][~mask].any()):
                return f"{weight!r} is nonzero where the level's masks prune it"
        return None

    def masks_problem(self, masks: Any) -> str | None:
        """What is wrong with ``masks`` as the masks of the model, or None."""
        if not isinstance(masks, Mapping):
            return f"holds a {type(masks).__name__}; expected a dict of bool tensors"
        expected = {weight: self.layout[weight][0] for weight in self.mask_buffers.values()}
        missing = [name for name in expected if name not in masks]
        unexpected = [name for name in masks if name not in expected]
        if missing or unexpected:
            return (
                f"holds masks of other layers than the model's (missing "
                f"{format_names(missing)}; unexpected {format_names(unexpected)})"
            )
        for name, shape in expected.items():
            problem = _tensor_problem(name, masks[name], shape, torch.bool)
            if problem:
                return problem
        return None


def _mask_buffers(model: nn.Module) -> dict[str, str]:
    """state_dict key of each mask buffer -> the key of the weight it masks."""
    buffers = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, MaskedLayer):
            buffers[prefix + "mask"] = prefix + "weight"
        for attribute in masked_weight_names(module):
            buffers[prefix + attribute + MASK_SUFFIX] = prefix + attribute
    return buffers


def _tensor_problem(name: str, tensor: Any, shape: tuple, dtype: torch.dtype) -> str | None:
    if not isinstance(tensor, torch.Tensor):
        return f"{name!r} is a {type(tensor).__name__}; expected a tensor"
    if tuple(tensor.shape) != shape:
        return f"{name!r} has shape {tuple(tensor.shape)}; expected {shape}"
    if tensor.dtype != dtype:
        return f"{name!r} is {tensor.dtype}; expected {dtype}"
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        return f"{name!r} holds NaN or infinite values"
    return None


def _kept(mask: torch.Tensor) -> str:
    return f"{100 * float(mask.float().mean()):.1f}%" if mask.numel() else "0 weights"


def masks_relation_problem(masks: Masks, previous: Masks) -> str | None:
    """What is wrong with ``masks`` as a pruning of ``previous`` (the level before), or None."""
    if not masks.is_subset_of(previous):
        return (
            f"keeps weights that the level before pruned ({100 * masks.density:.1f}% kept, "
            f"{100 * previous.density:.1f}% before): pruning only removes"
        )
    return None


def metrics_problem(
    metrics: Any, level: Level | None = None, masks: Masks | None = None
) -> str | None:
    """What is wrong with ``metrics`` as a finished level's metrics.json (of ``level``, with
    ``masks`` when given), or None. A diverged level may hold non-finite losses; nothing else
    may."""
    if not isinstance(metrics, dict):
        return f"holds a {type(metrics).__name__}; expected an object"
    evaluations = metrics.get("evaluations")
    if not isinstance(evaluations, list) or not evaluations:
        return "has no evaluations; expected a list of them"
    for row in evaluations:
        problem = _evaluation_problem(row)
        if problem:
            return problem
    for name in _COUNTS:
        if not _is_count(metrics.get(name)):
            return f"has {name} {metrics.get(name)!r}; expected a count"
    diverged = metrics.get("diverged", _diverged_by_old_code(evaluations))
    if not isinstance(diverged, bool):
        return f"has diverged {diverged!r}; expected true or false"
    early_stop = metrics.get("early_stop_iteration")
    if not (_is_count(early_stop) or (early_stop is None and diverged)):
        return f"has early_stop_iteration {early_stop!r}; expected an iteration"
    for name in ("early_stop_test_accuracy", *_FRACTIONS):
        value = metrics.get(name)
        if not (
            _is_fraction(value)
            or (value is None and name.startswith("early") and early_stop is None)
        ):
            return f"has {name} {value!r}; expected a number from 0 to 1"
    if not _is_number(metrics.get("wall_time_seconds")) or metrics["wall_time_seconds"] < 0:
        return f"has wall_time_seconds {metrics.get('wall_time_seconds')!r}; expected seconds"
    if not metrics["density"] > 0:
        return f"has density {metrics['density']!r}; expected a positive fraction"
    percent = metrics.get("percent_remaining")
    if not _is_number(percent) or not math.isclose(percent, 100 * metrics["density"]):
        return (
            f"has percent_remaining {percent!r}; expected 100 times its density "
            f"{metrics['density']!r}"
        )
    layers = metrics.get("layers")
    if (
        isinstance(layers, list)
        and layers
        and all(
            isinstance(row, dict) and _is_count(row.get("kept")) and _is_count(row.get("total"))
            for row in layers
        )
    ):
        kept, total = (sum(row[name] for row in layers) for name in ("kept", "total"))
        # Within one weight: the figure is kept / total, which the counts give exactly.
        if total and not math.isclose(kept / total, metrics["density"], abs_tol=1 / total):
            return (
                f"has density {metrics['density']!r} but its layers keep "
                f"{kept} of {total} weights ({kept / total!r})"
            )
    if not diverged and not all(_finite_losses(row) for row in evaluations):
        return "holds NaN or infinite losses but does not say it diverged"
    if level is not None:
        problem = _level_problem(metrics, level)
        if problem:
            return problem
    if masks is not None and not math.isclose(
        masks.density, metrics["density"], rel_tol=1e-9, abs_tol=1e-12
    ):
        return (
            f"records density {metrics['density']:.6f} but the level's masks keep "
            f"{masks.density:.6f}: the masks are not the ones it trained with"
        )
    return None


def _evaluation_problem(row: Any) -> str | None:
    if not isinstance(row, dict) or not _is_count(row.get("iteration")):
        return f"has an evaluation {_short(row)}; expected one with an iteration"
    for name in _EVALUATION_NUMBERS:
        if not _is_number(row.get(name)):
            return (
                f"has {name} {row.get(name)!r} at iteration {row['iteration']}; expected a number"
            )
    if row.get("train_loss") is not None and not _is_number(row["train_loss"]):
        return f"has train_loss {row['train_loss']!r} at iteration {row['iteration']}"
    return None


def _level_problem(metrics: dict, level: Level) -> str | None:
    """The level and branch a metrics.json names must be where it lies (when it names them)."""
    branch, name = level.directory.parent.name, level.directory.name
    if not name.startswith("level_"):
        return None  # an instability analysis's spawn or copy: named by its analysis
    if "level" in metrics and f"level_{metrics['level']}" != name:
        return f"is the metrics of level {metrics['level']!r}, found in {name}"
    if "branch" in metrics and metrics["branch"] != branch:
        return f"is the metrics of branch {metrics['branch']!r}, found in {branch}"
    return None


def _diverged_by_old_code(evaluations: list) -> bool:
    """Metrics written before divergence was recorded: diverged when a loss is not finite."""
    return not all(_finite_losses(row) for row in evaluations if isinstance(row, dict))


def _finite_losses(row: dict) -> bool:
    values = [row.get("val_loss"), row.get("test_loss"), row.get("train_loss")]
    return all(value is None or (_is_number(value) and math.isfinite(value)) for value in values)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_fraction(value: Any) -> bool:
    return _is_number(value) and 0 <= value <= 1


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def divergence_of(metrics: dict) -> dict | None:
    """``{"iteration": ..., "cause": ...}`` of a diverged level's metrics (a level recorded by
    code that did not record divergence: its first non-finite evaluation), else None."""
    if not metrics.get("diverged", _diverged_by_old_code(metrics["evaluations"])):
        return None
    recorded = metrics.get("divergence")
    if isinstance(recorded, dict) and "iteration" in recorded and "cause" in recorded:
        return recorded
    first = next(
        (row for row in metrics["evaluations"] if not _finite_losses(row)),
        metrics["evaluations"][-1],
    )
    return {"iteration": first["iteration"], "cause": "a loss became NaN or infinite"}


def read_checked(
    path: Path, read: Callable[[Path], T | None], check: Callable[[T], str | None], remedy: str
) -> T | None:
    """``read(path)`` (None when absent), raising :class:`~.runs.BadArtifact` with ``remedy``
    when it cannot be parsed or ``check`` finds something wrong with it."""
    try:
        value = read(path)
    except files.DamagedArtifact as error:
        raise BadArtifact(path, error.reason, remedy) from None
    if value is None:
        return None
    problem = check(value)
    if problem:
        raise BadArtifact(path, problem, remedy)
    return value
