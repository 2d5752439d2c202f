"""N:M structured masks: at most N kept weights in every group of M consecutive weights.

An N:M mask keeps at most ``n`` weights in every group of ``m`` consecutive weights along the
input dimension of the layer's GEMM, i.e. along each row of ``weight.reshape(out, -1)`` in
row-major order, where ``out`` is the first dimension (output features or channels). For a conv
weight ``[O, C, kh, kw]`` a row is the im2col order ``C * kh * kw``, the order of our compact
conv and of ``torch.nn.functional.unfold``. A trailing partial group (a row length that is not a
multiple of ``m``) also keeps at most ``n``. A 1-D mask has rows of one weight each, so it always
satisfies a pattern.

"At most" because pruning only removes: a 2:4 mask that keeps fewer than 2 in a group still
runs on 2:4 sparse tensor cores, which store the missing values as explicit zeros. ``n == m``
is allowed and constrains nothing, a useful no-op check. 2:4 is the pattern of NVIDIA's sparse
tensor cores (Mishra et al., "Accelerating Sparse Deep Neural Networks", arXiv:2104.08378,
2021); general N:M masks are those of Zhou et al., "Learning N:M Fine-grained Structured Sparse
Neural Networks From Scratch", ICLR 2021.

The schedule that :func:`~.core.prune` follows with ``nm=`` lets the pattern tighten as the
density falls, so iterative pruning never has to jump from dense to N:M in one level (in the
spirit of the decaying masks of Kao et al., "Training Recipe for N:M Structured Sparsity with
Decaying Pruning Mask", arXiv:2209.07617, 2022): at density ``d`` a group may keep
``relaxed_n(pattern, d) = min(m, max(n, ceil(d * m)))`` weights. For 2:4 at 20% per level that
is no constraint at 80%, 3:4 at 64% and 51%, 2:4 from 41% on (and below 2:4's own density of
50% the masks are unstructured within 2:4). Each step first applies :func:`forced_removals`
(the lowest-scoring kept weights of every over-full group) and then removes the rest of the
step's count as usual; see :mod:`.core`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from fractions import Fraction

import torch


@dataclass(frozen=True)
class NMPattern:
    """Keep at most ``n`` of every ``m`` consecutive weights along a row; ``1 <= n <= m``."""

    n: int
    m: int

    def __post_init__(self) -> None:
        for field, value in (("n", self.n), ("m", self.m)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"N:M pattern {field} must be an int; got {type(value).__name__}")
        if not 1 <= self.n <= self.m:
            raise ValueError(
                f"N:M pattern {self.n}:{self.m} is invalid; expected 1 <= n <= m, e.g. 2:4"
            )

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


PatternLike = NMPattern | tuple[int, int]


def parse_nm(text: str) -> NMPattern:
    """The pattern written as ``"n:m"`` (``"2:4"`` -> ``NMPattern(2, 4)``), as the command line
    takes it."""
    if not isinstance(text, str):
        raise TypeError(f"N:M pattern must be a string such as '2:4'; got {type(text).__name__}")
    parts = text.strip().split(":")
    if len(parts) != 2 or not all(
        part.strip().isascii() and part.strip().isdigit() for part in parts
    ):
        raise ValueError(
            f"N:M pattern {text!r} is not of the form 'n:m'; expected two "
            f"positive integers such as '2:4'"
        )
    return NMPattern(int(parts[0]), int(parts[1]))


def as_pattern(pattern: PatternLike, argument: str = "nm") -> NMPattern:
    """``pattern`` as an :class:`NMPattern`; it may be one already or an ``(n, m)`` tuple."""
    if isinstance(pattern, NMPattern):
        return pattern
    if isinstance(pattern, tuple) and len(pattern) == 2:
        try:
            return NMPattern(*pattern)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{argument}: {error}") from None
    raise TypeError(
        f"{argument} must be an NMPattern or an (n, m) tuple such as (2, 4); got "
        f"{type(pattern).__name__} (parse_nm reads text such as '2:4')"
    )


def group_counts(mask: torch.Tensor, pattern: PatternLike) -> torch.Tensor:
    """How many weights ``mask`` keeps in each group of ``m``: an int64 tensor
    ``[rows, groups]``, where the last group of a row may be partial."""
    pattern = as_pattern(pattern, "pattern")
    return _grouped(_as_bool(mask), pattern.m).sum(dim=-1)


def satisfies(mask: torch.Tensor, pattern: PatternLike) -> bool:
    """Whether ``mask`` keeps at most ``n`` of every ``m`` consecutive weights along its rows."""
    pattern = as_pattern(pattern, "pattern")
    return bool((group_counts(mask, pattern) <= pattern.n).all())


def relaxed_n(pattern: PatternLike, density: float | Fraction) -> int:
    """How many weights of each group of ``m`` a mask at ``density`` may keep under the
    tightening schedule: ``min(m, max(n, ceil(density * m)))``.

    The product is exact: a float density is read as its shortest repr (0.64 * 4 is 2.56, so
    3), as :mod:`.select` does for counts; a ``Fraction`` (or int) is used as it is.
    """
    pattern = as_pattern(pattern, "pattern")
    if isinstance(density, bool) or not isinstance(density, numbers.Real):
        raise TypeError(f"density must be a number; got {type(density).__name__}")
    exact = (
        Fraction(density)
        if isinstance(density, numbers.Rational)
        else Fraction(repr(float(density)))
        if math.isfinite(density)
        else None
    )
    if exact is None or not 0 <= exact <= 1:
        raise ValueError(f"density must be in [0, 1]; got {density!r}")
    return min(pattern.m, max(pattern.n, math.ceil(exact * pattern.m)))


def forced_removals(scores: torch.Tensor, mask: torch.Tensor, n_keep: int, m: int) -> torch.Tensor:
    """The kept weights beyond the ``n_keep`` highest-scoring in their group of ``m``: a bool
    tensor of the mask's shape, True where a weight must go for ``mask`` to keep at most
    ``n_keep`` per group.

    Ties follow :mod:`.select`: among equal scores the earlier position is removed first.
    ``scores`` has the mask's shape and device; weights the mask already prunes are never
    chosen.
    """
    for argument, value, least in (("n_keep", n_keep, 0), ("m", m, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{argument} must be an int; got {type(value).__name__}")
        if value < least:
            raise ValueError(f"{argument} must be at least {least}; got {value}")
    mask = _as_bool(mask)
    if not isinstance(scores, torch.Tensor) or scores.shape != mask.shape:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(
            f"scores must be a tensor of the mask's shape {tuple(mask.shape)}; got {shape}"
        )
    if bool((scores.isnan() & mask).any()):
        raise ValueError("scores hold NaN at kept weights; expected finite scores")
    kept = _grouped(mask, m)
    # Padding lies past the row's end and is never kept, so its score does not matter.
    grouped_scores = _grouped(scores, m)
    excess = (kept.sum(dim=-1, keepdim=True) - n_keep).clamp(min=0)
    # A stable ascending sort puts the earlier of equal scores first: it is removed first.
    order = torch.sort(grouped_scores, dim=-1, stable=True).indices
    kept_in_order = kept.gather(-1, order)
    removed_in_order = kept_in_order & (kept_in_order.cumsum(dim=-1) <= excess)
    removed = torch.zeros_like(kept).scatter(-1, order, removed_in_order)
    rows, columns = _row_shape(mask)
    return removed.reshape(rows, -1)[:, :columns].reshape(mask.shape)


def _as_bool(mask: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a tensor; got {type(mask).__name__}")
    return mask if mask.dtype == torch.bool else mask != 0


def _row_shape(tensor: torch.Tensor) -> tuple[int, int]:
    """(rows, row length) of ``tensor.reshape(tensor.shape[0], -1)``, also for 0-d and empty."""
    if tensor.dim() == 0:
        return 1, 1
    rows = tensor.shape[0]
    return rows, math.prod(tensor.shape[1:])


def _grouped(tensor: torch.Tensor, m: int) -> torch.Tensor:
    """``tensor`` as ``[rows, groups, m]``, each row padded with zeros (False) to a multiple of
    ``m``."""
    rows, columns = _row_shape(tensor)
    groups = -(-columns // m)
    flat = tensor.reshape(rows, columns)
    if columns % m:
        flat = torch.cat([flat, flat.new_zeros(rows, groups * m - columns)], dim=1)
    return flat.reshape(rows, groups, m)
