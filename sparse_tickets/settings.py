"""The environment variables sparse_tickets reads, each in one place.

Every variable is read when its value is needed, never cached at import: a test or a user may
set it while the process runs, and the next call sees it. A value that is not one of those
listed raises ValueError in one line naming the variable, the value and what is expected.
An unset or empty variable takes its default.

====================================  ==========================  =========================
variable                              values                      default
====================================  ==========================  =========================
``SPARSE_TICKETS_BACKEND``            a backend's name            unset: auto-selection
``SPARSE_TICKETS_OPT_IN``             backend names, ``,``-sep.   none
``SPARSE_TICKETS_MODE``               auto, dense, compact        dense
``SPARSE_TICKETS_COMPACT_BELOW``      a density in [0, 1]         unset: measured
``SPARSE_TICKETS_CALIBRATION``        auto (on, 1), off (0, skip) auto
``SPARSE_TICKETS_CPU_EXTENSION``      auto, skip (0, off),        auto
                                      force (1, on)
``SPARSE_TICKETS_CUDA_EXTENSION``     as the CPU one              auto
``SPARSE_TICKETS_CACHE``              a directory                 ``~/.cache/sparse_tickets``
``SPARSE_TICKETS_DEBUG``              any non-empty text          unset
``TRITON_INTERPRET``                  1, true, yes, on / other    0
====================================  ==========================  =========================

- ``SPARSE_TICKETS_BACKEND`` forces one backend (``reference``, ``cpu``, ``cuda``, ``triton``,
  ``semi_structured``) for every op; a call it cannot serve fails naming every reason
  (:mod:`sparse_tickets.ops.dispatch`).
- ``SPARSE_TICKETS_OPT_IN`` lets backends that serve only when asked (``semi_structured``,
  ``triton``) take part in auto-selection; the backends check the names.
- ``SPARSE_TICKETS_MODE`` is the execution mode of the masked layers whose own mode and the
  global default (``set_default_mode``) are unset (:mod:`sparse_tickets.compact.choice`).
- ``SPARSE_TICKETS_COMPACT_BELOW`` sets by hand the density at or below which ``auto`` runs a
  layer compact, for every kind of layer, instead of the threshold measured on this machine.
- ``SPARSE_TICKETS_CALIBRATION``: ``off`` measures nothing; ``auto`` uses the instruction-set
  rule then (:mod:`sparse_tickets.compact.thresholds`).
- ``SPARSE_TICKETS_CPU_EXTENSION`` / ``SPARSE_TICKETS_CUDA_EXTENSION``: ``auto`` builds the
  compiled kernels when it can and falls back to plain torch otherwise, ``skip`` never builds
  them, ``force`` fails when they cannot be built (:mod:`sparse_tickets.ops.native.extension`).
- ``SPARSE_TICKETS_CACHE`` is where parsed datasets are cached (:mod:`sparse_tickets.data`).
- ``SPARSE_TICKETS_DEBUG`` makes the command line show a traceback instead of its one-line
  error.
- ``TRITON_INTERPRET`` is triton's own: set before triton is imported, it runs the Triton
  kernels on the CPU, which the ``triton`` backend then serves, with smaller tiles.
"""

from __future__ import annotations

import os
from pathlib import Path

BACKEND = "SPARSE_TICKETS_BACKEND"
OPT_IN = "SPARSE_TICKETS_OPT_IN"
MODE = "SPARSE_TICKETS_MODE"
COMPACT_BELOW = "SPARSE_TICKETS_COMPACT_BELOW"
CALIBRATION = "SPARSE_TICKETS_CALIBRATION"
CPU_EXTENSION = "SPARSE_TICKETS_CPU_EXTENSION"
CUDA_EXTENSION = "SPARSE_TICKETS_CUDA_EXTENSION"
CACHE = "SPARSE_TICKETS_CACHE"
DEBUG = "SPARSE_TICKETS_DEBUG"
TRITON_INTERPRET = "TRITON_INTERPRET"

MODES = ("auto", "dense", "compact")
_CALIBRATION_MODES = {
    "": "auto",
    "auto": "auto",
    "on": "auto",
    "1": "auto",
    "off": "off",
    "0": "off",
    "skip": "off",
}
_EXTENSION_MODES = {
    "": "auto",
    "auto": "auto",
    "skip": "skip",
    "0": "skip",
    "off": "skip",
    "force": "force",
    "1": "force",
    "on": "force",
}
_TRUE = ("1", "true", "yes", "on")


def _text(name: str) -> str:
    return os.environ.get(name, "").strip()


def backend() -> str | None:
    """The backend ``SPARSE_TICKETS_BACKEND`` forces, or None when it is unset or empty."""
    return _text(BACKEND) or None


def opt_in() -> str:
    """The text of ``SPARSE_TICKETS_OPT_IN``: comma-separated backend names ("" when unset)."""
    return _text(OPT_IN)


def mode() -> str:
    """``SPARSE_TICKETS_MODE``: ``auto``, ``dense`` or ``compact`` (``dense`` when unset)."""
    raw = _text(MODE).lower() or "dense"
    if raw not in MODES:
        raise ValueError(f"{MODE}={raw!r}; expected one of {', '.join(MODES)}")
    return raw


def compact_below() -> float | None:
    """``SPARSE_TICKETS_COMPACT_BELOW``: a density in [0, 1], or None when it is unset."""
    raw = _text(COMPACT_BELOW)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:  # NaN included
        raise ValueError(f"{COMPACT_BELOW}={raw!r}; expected a density in [0, 1]")
    return value


def calibration() -> str:
    """``SPARSE_TICKETS_CALIBRATION``: ``auto`` (measure once, cache) or ``off``."""
    raw = _text(CALIBRATION).lower()
    if raw not in _CALIBRATION_MODES:
        raise ValueError(f"{CALIBRATION}={raw!r}; expected auto or off")
    return _CALIBRATION_MODES[raw]


def extension(name: str) -> str:
    """``auto``, ``skip`` or ``force``, from the extension variable ``name``
    (:data:`CPU_EXTENSION` or :data:`CUDA_EXTENSION`)."""
    raw = _text(name).lower()
    if raw not in _EXTENSION_MODES:
        raise ValueError(f"{name}={raw!r}; expected one of auto, skip (0), force (1)")
    return _EXTENSION_MODES[raw]


def cache_directory() -> Path | None:
    """The directory ``SPARSE_TICKETS_CACHE`` names (``~`` expanded), None when it is unset."""
    raw = os.environ.get(CACHE)
    return Path(raw).expanduser() if raw else None


def debug() -> bool:
    """Whether ``SPARSE_TICKETS_DEBUG`` asks for tracebacks (any non-empty value)."""
    return bool(os.environ.get(DEBUG))


def triton_interpret() -> bool:
    """Whether ``TRITON_INTERPRET`` asks triton to run kernels on the CPU."""
    return _text(TRITON_INTERPRET).lower() in _TRUE
