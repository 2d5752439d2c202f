"""Which execution mode a masked layer runs in, chosen at each mask change.

A layer's ``requested_mode`` (``layer.set_mode``) wins; None follows the global default,
:func:`set_default_mode`, else the environment variable ``SPARSE_TICKETS_MODE``, else
``"dense"``. The library's default is dense because a switch replaces the layer's trainable
Parameter (``weight`` <-> ``values``): the masked optimizers follow it, but a plain
torch.optim optimizer built before the switch would silently stop training the layer. The
command line, which builds its optimizer after each level's masks, runs ``"auto"``.
``"dense"`` and ``"compact"`` are obeyed where a layer can run compact; where it cannot (a
grouped convolution, a weight shared with other modules) a layer's own ``set_mode("compact")``
is refused in one line, and the global default leaves that layer dense. ``"auto"`` picks
compact when

- a compiled backend (``cpu`` / ``cuda``) serves the compact linear for the layer's device and
  dtype (the reference would rebuild the dense weight at every call: never faster), and
- the layer's density is at most the threshold for its device type and kind (linear or conv2d):
  ``COMPACT_BELOW``, measured by ``python -m benchmarks.threshold`` as the density at and below
  which a compact training step (forward, both gradients, optimizer) beats the dense-masked
  one on real layer shapes; ``SPARSE_TICKETS_COMPACT_BELOW`` overrides it for every kind.

The choice is made once per mask change, never per call, so a level trains in one mode from
its first step to its last.
"""

from __future__ import annotations

import contextlib
import os
from typing import Optional

import torch

MODES = ("auto", "dense", "compact")
MODE_ENV_VAR = "SPARSE_TICKETS_MODE"
THRESHOLD_ENV_VAR = "SPARSE_TICKETS_COMPACT_BELOW"

# Density at or below which "auto" runs a layer compact, by device type and layer kind, from
# `python -m benchmarks.threshold` (benchmarks/results/<device>/threshold.json).
# CPU (AMD EPYC, 2 threads): a compact linear training step beat the dense-masked one at every
# density measured, 1.0 included (the dense-masked CPU path is the plain-torch reference, which
# materialises W * M), so linear layers run compact whenever the C++ extension is there; a
# compact conv2d step (im2col around the same kernels) lost at every density on 2 of 3 shapes
# (0.07-0.17x at 2-100%; the unfold and fold copies dominate), so conv layers stay dense.
# CUDA: not measured yet; conservative guesses, to be replaced by a measurement.
COMPACT_BELOW = {"cpu": {"linear": 1.0, "conv2d": 0.0},
                 "cuda": {"linear": 0.05, "conv2d": 0.0}}

_default_mode: Optional[str] = None


def check_mode(mode, allow_none: bool = False) -> Optional[str]:
    if mode is None and allow_none:
        return None
    if mode not in MODES:
        expected = ", ".join(MODES) + (" or None" if allow_none else "")
        raise ValueError(f"mode {mode!r} is not one of {expected}")
    return mode


def set_default_mode(mode: Optional[str]) -> None:
    """The mode of every layer whose own ``requested_mode`` is None, from its next mask change
    (None: back to ``SPARSE_TICKETS_MODE`` or ``"dense"``)."""
    global _default_mode
    _default_mode = check_mode(mode, allow_none=True)


@contextlib.contextmanager
def default_mode_set_to(mode: Optional[str]):
    """:func:`set_default_mode` for the duration of a ``with`` block, then back."""
    global _default_mode
    previous = _default_mode
    set_default_mode(mode)
    try:
        yield
    finally:
        _default_mode = previous


def default_mode() -> str:
    if _default_mode is not None:
        return _default_mode
    raw = os.environ.get(MODE_ENV_VAR, "").strip().lower() or "dense"
    if raw not in MODES:
        raise ValueError(f"{MODE_ENV_VAR}={raw!r}; expected one of {', '.join(MODES)}")
    return raw


def threshold(device_type: str, kind: str = "linear") -> float:
    """The density at or below which "auto" picks compact for a ``kind`` layer ("linear" or
    "conv2d") on ``device_type``."""
    raw = os.environ.get(THRESHOLD_ENV_VAR, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{THRESHOLD_ENV_VAR}={raw!r}; expected a density in [0, 1]")
        return value
    return COMPACT_BELOW.get(device_type, {}).get(kind, 0.0)


def compact_unsupported_reason(layer) -> Optional[str]:
    """Why ``layer`` cannot run compact at all (None when it can)."""
    if getattr(layer, "groups", 1) != 1:
        return f"a grouped convolution (groups={layer.groups}) has no compact form"
    shared = getattr(layer, "weight_shared_with", ())
    if shared:
        return (f"its weight is shared with {', '.join(shared)} (tied weights), which could not "
                f"read a compact weight")
    if layer.mask.is_meta:
        return "the layer is on the meta device"
    return None


def choose(layer) -> str:
    """``"dense"`` or ``"compact"`` for ``layer`` with its current mask (see the module)."""
    mode = layer.requested_mode or default_mode()
    if mode == "dense":
        return "dense"
    unsupported = compact_unsupported_reason(layer)
    if mode == "compact":
        if unsupported is None:
            return "compact"
        if layer.requested_mode == "compact":
            raise ValueError(f"{type(layer).__name__} cannot run in compact mode: {unsupported}")
        # A model-wide default asks for compact where a layer can run it; the others stay
        # dense (masking_report says why) rather than leave a model half converted.
        return "dense"
    if unsupported is not None or not _compiled_backend_serves(layer):
        return "dense"
    kind = "conv2d" if layer.mask.dim() == 4 else "linear"
    return "compact" if layer.density <= threshold(layer.mask.device.type, kind) else "dense"


def _compiled_backend_serves(layer) -> bool:
    from .. import ops  # late: ops imports the functional layer, which imports this package

    weight = layer.trainable_weight
    try:
        backend = ops.select("compact_linear", [weight])
    except ops.BackendError:
        return False
    return backend.name != "reference"
