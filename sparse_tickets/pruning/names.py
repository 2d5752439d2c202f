"""Layer names: the key a masked layer's mask goes by, and how lists of names read in errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def mask_key(module_name: str) -> str:
    """The mask's key for the masked layer at ``module_name``: the name of its weight in the
    model's state_dict (``"fc1.weight"``), or ``"weight"`` when the model is itself the layer."""
    return f"{module_name}.weight" if module_name else "weight"


def format_names(names: Iterable[str], limit: int = 3) -> str:
    """``'a', 'b', 'c' and 4 more``: a few names for a one-line message, or ``none``."""
    names = list(names)
    if not names:
        return "none"
    shown = ", ".join(repr(name) for name in names[:limit])
    hidden = len(names) - limit
    return f"{shown} and {hidden} more" if hidden > 0 else shown


def check_known(argument: str, names: Iterable[str], masks: Mapping) -> None:
    """Raise ValueError when ``names`` (given as ``argument``) holds names that are not keys of
    ``masks``; the message lists the unknown names and a few known ones."""
    unknown = [name for name in names if name not in masks]
    if not unknown:
        return
    # The usual slip is a module name ("fc1") where the weight's name ("fc1.weight") is meant.
    hint = next(
        (f" (did you mean {mask_key(name)!r}?)" for name in unknown if mask_key(name) in masks), ""
    )
    raise ValueError(
        f"{argument} names layers not in the masks: {format_names(unknown)}{hint}; "
        f"expected names such as {format_names(masks)}"
    )
