"""Checks of the arguments every model takes, made at construction so that a model which cannot
take an input fails when it is built, not at its first forward."""

from __future__ import annotations

import operator

InputShape = tuple[int, int, int]


def as_input_shape(model_name: str, input_shape) -> InputShape:
    """``input_shape`` as a ``(channels, height, width)`` tuple of positive ints.

    Raises ValueError naming the model and the shape when it is anything else.
    """
    try:
        dims = tuple(_as_int(dim) for dim in input_shape)
    except TypeError:
        dims = None
    if dims is None or len(dims) != 3 or min(dims) < 1:
        raise ValueError(
            f"{model_name} cannot take input_shape {input_shape!r}; expected "
            f"(channels, height, width) as three positive ints"
        )
    return dims


def check_num_classes(model_name: str, num_classes) -> int:
    """``num_classes`` as a positive int; ValueError naming the model otherwise."""
    try:
        count = _as_int(num_classes)
    except TypeError:
        count = 0
    if count < 1:
        raise ValueError(
            f"{model_name} cannot take num_classes={num_classes!r}; expected a positive int"
        )
    return count


def check_dropout(model_name: str, dropout) -> float:
    """``dropout`` as a float probability in [0, 1); ValueError naming the model otherwise."""
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, (int, float))
        or not 0.0 <= dropout < 1.0
    ):
        raise ValueError(
            f"{model_name} cannot take dropout={dropout!r}; expected a probability in [0, 1)"
        )
    return float(dropout)


def pooled_side(side: int, halvings: int) -> int:
    """The height (or width) left after ``halvings`` 2x2 poolings of stride 2 (each floors)."""
    for _ in range(halvings):
        side //= 2
    return side


def check_poolable(model_name: str, input_shape: InputShape, halvings: int) -> tuple[int, int]:
    """The ``(height, width)`` left after ``halvings`` 2x2 poolings of ``input_shape``.

    Raises ValueError naming the model, the shape and the smallest side it needs when a pooling
    would leave nothing.
    """
    _, height, width = input_shape
    left = pooled_side(height, halvings), pooled_side(width, halvings)
    if min(left) < 1:
        raise ValueError(
            f"{model_name} cannot take input_shape {input_shape}: its {halvings} "
            f"2x2 poolings leave {left[0]}x{left[1]}; it needs height and width of "
            f"at least {2**halvings}"
        )
    return left


def _as_int(value) -> int:
    # operator.index takes ints and integer NumPy scalars or tensors but refuses floats, so a
    # size computed by true division (28 / 2 == 14.0) fails here rather than deep in a layer.
    # bool is an int subclass and would pass it, so it is refused first.
    if isinstance(value, bool):
        raise TypeError("bool is not a size")
    return operator.index(value)
