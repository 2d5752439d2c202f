"""Which execution mode a masked layer runs in, chosen at each mask change.

A layer's ``requested_mode`` (``layer.set_mode``) wins; None follows the global default,
:func:`set_default_mode`, else the environment variable ``SPARSE_TICKETS_MODE``, else
``"dense"``. The library's default is dense because a switch replaces the layer's trainable
Parameter (``weight`` <-> ``values``): the masked optimizers follow it, but a plain
torch.optim optimizer built before the switch would silently stop training the layer. The
command line, which builds its optimizer after each level's masks, runs ``"auto"``.
``"dense"`` and ``"compact"`` are obeyed where a layer can run compact; where it cannot (a
grouped convolution off the CPU, a weight shared with other modules) a layer's own
``set_mode("compact")`` is refused in one line, and the global default leaves that layer
dense. ``"auto"`` picks compact when

- a compiled backend (``cpu`` / ``cuda``) serves the compact linear (or conv2d) for the
  layer's device and dtype (the reference would rebuild the dense weight at every call: never
  faster), and
- the layer's density is at most its own threshold, once its forward has seen a training
  batch: measured on a layer of its class, geometry and input shape, once per shape
  (:mod:`.layer_thresholds`); before that, the threshold for its device type, dtype and kind
  (linear or conv2d): the density at and below which a compact training step (forward, both
  gradients, optimizer step) beats the dense-masked one by a margin, measured on the machine
  the run is on, with the threads the process uses, the first time it is needed, in a few
  seconds, and cached beside the compiled extension (:mod:`.thresholds`,
  :mod:`.calibration`); where it is not measured (``SPARSE_TICKETS_CALIBRATION=off``), a
  conservative rule of the CPU's instruction set. ``SPARSE_TICKETS_COMPACT_BELOW`` overrides
  it for every kind.
  ``python -m benchmarks.threshold`` is the full measurement, over more shapes and densities.

Auto must never make a level slower than dense mode: a tie, a doubt or a failed measurement
leaves the layer dense.

The choice is made once per mask change, never per call, so a level trains in one mode from
its first step to its last.
"""

from __future__ import annotations

import contextlib

import torch

from .. import ops, settings
from . import layer_thresholds, thresholds
from .calibration import LayerSpec

MODES = settings.MODES
MODE_ENV_VAR = settings.MODE
THRESHOLD_ENV_VAR = settings.COMPACT_BELOW

_default_mode: str | None = None


def check_mode(mode, allow_none: bool = False) -> str | None:
    if mode is None and allow_none:
        return None
    if mode not in MODES:
        expected = ", ".join(MODES) + (" or None" if allow_none else "")
        raise ValueError(f"mode {mode!r} is not one of {expected}")
    return mode


def set_default_mode(mode: str | None) -> None:
    """The mode of every layer whose own ``requested_mode`` is None, from its next mask change
    (None: back to ``SPARSE_TICKETS_MODE`` or ``"dense"``)."""
    global _default_mode
    _default_mode = check_mode(mode, allow_none=True)


@contextlib.contextmanager
def default_mode_set_to(mode: str | None):
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
    return settings.mode()


def threshold(
    device_type: str,
    kind: str = "linear",
    dtype: torch.dtype = torch.float32,
    layer_spec: LayerSpec | None = None,
) -> float:
    """The density at or below which "auto" picks compact for a ``kind`` layer ("linear" or
    "conv2d") of ``dtype`` on ``device_type``: ``SPARSE_TICKETS_COMPACT_BELOW`` when set, else
    the layer's own (:func:`.layer_thresholds.layer_threshold`) when ``layer_spec`` describes
    it and one is measured, else this machine's (:func:`.thresholds.machine_thresholds`)."""
    by_hand = settings.compact_below()
    if by_hand is not None:
        return by_hand
    if layer_spec is not None:
        own = layer_thresholds.layer_threshold(layer_spec, device_type, dtype)
        if own is not None:
            return own
    return thresholds.machine_thresholds(device_type, dtype).get(kind, 0.0)


def compact_unsupported_reason(layer) -> str | None:
    """Why ``layer`` cannot run compact at all (None when it can)."""
    shared = getattr(layer, "weight_shared_with", ())
    if shared:
        return (
            f"its weight is shared with {', '.join(shared)} (tied weights), which could not "
            f"read a compact weight"
        )
    if layer.mask.is_meta:
        return "the layer is on the meta device"
    if getattr(layer, "groups", 1) != 1 and layer.mask.device.type != "cpu":
        # Only the CPU's direct sparse convolution (and the reference) index channels by group.
        return (
            f"a grouped convolution (groups={layer.groups}) has a compact form on the CPU "
            f"only, not on {layer.mask.device.type}"
        )
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
    input_shape = getattr(layer, "training_input_shape", None)
    spec = None if input_shape is None else layer.calibration_spec(input_shape)
    below = threshold(layer.mask.device.type, kind, layer.trainable_weight.dtype, spec)
    return "compact" if layer.density <= below else "dense"


def _compiled_backend_serves(layer) -> bool:
    weight = layer.trainable_weight
    op = "compact_conv2d" if layer.mask.dim() == 4 else "compact_linear"
    try:
        backend = ops.select(op, [weight])
    except ops.BackendError:
        return False
    return backend.name != "reference"
