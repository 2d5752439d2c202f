"""Checks of optimizer hyperparameters, each failing with one line that names the value."""

from __future__ import annotations

import numbers


def check_non_negative(name: str, value) -> None:
    """``value`` is a real number >= 0 (a Python or NumPy scalar, not a tensor or a bool)."""
    check_real(name, value)
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0; got {value}")


def check_fraction(name: str, value) -> None:
    """``value`` is a real number in [0, 1), as a decay rate such as Adam's betas must be."""
    check_real(name, value)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1); got {value}")


def check_flag(name: str, value) -> None:
    """``value`` is a bool (a truthy string or int in a flag is almost always a mistake)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}")


def check_real(name: str, value) -> None:
    """``value`` is a real number: a Python or NumPy scalar, not a bool or a tensor (the step
    backends take hyperparameters as plain numbers)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
