"""The one place that picks an implementation for a call.

Every op (the masked linear and conv2d Functions, the masked optimizer steps) asks
:func:`select` once per call for a backend and keeps it: the backward of a call runs on the
backend its forward ran on. A backend states why it cannot serve an input
(:meth:`Backend.not_supported_reasons`); auto-selection takes the first backend in priority
order that has no reason, and ``SPARSE_TICKETS_BACKEND=<name>`` forces one, failing with every
reason it gave when it cannot serve.

A backend with ``auto_select = False`` (one not yet measured faster everywhere it could serve,
or one that serves only some layers) takes part in auto-selection only when opted in:
``SPARSE_TICKETS_OPT_IN=semi_structured`` or ``=triton,semi_structured`` (a comma-separated list
of names; the priority order stays the registry's). Unlike forcing, opting in lets the layers
such a backend cannot serve fall through to the next backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from .. import settings
from .base import OPS, Backend, signature_problems
from .base import dtype_name as _dtype_name
from .base import sorted_names as _names

BACKEND_ENV_VAR = settings.BACKEND
OPT_IN_ENV_VAR = settings.OPT_IN


class BackendError(RuntimeError):
    """No backend can serve a call, or a forced backend cannot."""


@dataclass(frozen=True)
class BackendStatus:
    """One row of :func:`backends`: whether a backend can run here, and why not."""

    name: str
    available: bool
    reason: str | None
    ops: tuple
    device_types: tuple
    dtypes: tuple
    auto_select: bool = True
    # Named by SPARSE_TICKETS_OPT_IN: auto-selected although auto_select is False.
    opted_in: bool = False

    def __str__(self) -> str:
        state = "available" if self.available else f"unavailable: {self.reason}"
        if not self.auto_select:
            state += (
                f" (auto-selected: opted in with {OPT_IN_ENV_VAR})"
                if self.opted_in
                else f" (only when forced with {BACKEND_ENV_VAR}={self.name} or opted in "
                f"with {OPT_IN_ENV_VAR}={self.name})"
            )
        return (
            f"{self.name:<15} {state}; devices {', '.join(self.device_types)}; "
            f"dtypes {', '.join(self.dtypes)}"
        )


# Priority order: the first backend with no reason serves an auto-selected call.
_REGISTRY: list[Backend] = []


def register(backend: Backend, *, before: str | None = None) -> Backend:
    """Add ``backend`` to the priority list (at the end, or just before backend ``before``)."""
    if not backend.name:
        raise ValueError("a backend needs a non-empty name")
    if not backend.ops:
        raise ValueError(
            f"backend {backend.name!r} defines no op; expected the methods of at "
            f"least one of {_names(OPS)}"
        )
    problems = signature_problems(backend)
    if problems:
        raise TypeError(
            f"backend {backend.name!r} does not follow the Backend contract: {'; '.join(problems)}"
        )
    if any(b.name == backend.name for b in _REGISTRY):
        raise ValueError(f"backend {backend.name!r} is already registered")
    index = len(_REGISTRY)
    if before is not None:
        index = [b.name for b in _REGISTRY].index(get(before).name)
    _REGISTRY.insert(index, backend)
    return backend


def get(name: str) -> Backend:
    """The registered backend called ``name``."""
    for backend in _REGISTRY:
        if backend.name == name:
            return backend
    raise BackendError(f"unknown backend {name!r}; expected one of {_names(registered_names())}")


def registered_names() -> list[str]:
    return [b.name for b in _REGISTRY]


def forced_backend_name() -> str | None:
    """The backend named by ``SPARSE_TICKETS_BACKEND``, or None when it is unset or empty."""
    return settings.backend()


def opted_in_names() -> frozenset:
    """The backends named by ``SPARSE_TICKETS_OPT_IN`` (empty when it is unset or empty).

    Raises BackendError naming the backends one can opt in to when a name is not registered.
    """
    names = _parse_names(settings.opt_in())
    if not names:
        return names
    unknown = sorted(names - set(registered_names()))
    if unknown:
        opt_in = [b.name for b in _REGISTRY if not b.auto_select]
        raise BackendError(
            f"{OPT_IN_ENV_VAR} names unknown backend "
            f"{', '.join(map(repr, unknown))}; expected a comma-separated list "
            f"of backend names (those that serve only when opted in: "
            f"{_names(opt_in) or 'none registered'})"
        )
    return names


# text of SPARSE_TICKETS_OPT_IN -> its names. A plain dict, not functools.lru_cache: a masked
# layer traced by torch.compile reads it too, and dynamo traces a dict lookup as it is, where it
# would warn that it ignores an lru_cache wrapper and traces the function inside.
_PARSED_NAMES: dict = {}


def _parse_names(text: str) -> frozenset:
    # Cached: auto-selection reads the variable at every call of every layer.
    names = _PARSED_NAMES.get(text)
    if names is None:
        if len(_PARSED_NAMES) >= 16:  # the variable is rewritten by hand, rarely: keep it small
            _PARSED_NAMES.clear()
        names = _PARSED_NAMES[text] = frozenset(
            name.strip() for name in text.split(",") if name.strip()
        )
    return names


def select(op: str, tensors: Iterable[torch.Tensor | None]) -> Backend:
    """The backend that serves ``op`` on ``tensors`` (None entries, e.g. a missing bias, skipped).

    Auto-selection skips a backend with ``auto_select = False`` unless
    ``SPARSE_TICKETS_OPT_IN`` names it. Raises BackendError naming every reason when a forced
    backend cannot serve the call, or when no registered backend can, and when
    ``SPARSE_TICKETS_OPT_IN`` names an unknown backend.
    """
    if op not in OPS:
        raise BackendError(f"unknown op {op!r}; expected one of {_names(OPS)}")
    tensors = [t for t in tensors if t is not None]
    forced = forced_backend_name()
    if forced is not None:
        backend = get(forced)
        reasons = backend.not_supported_reasons(op, tensors)
        if reasons:
            raise BackendError(
                f"backend {forced!r} (forced by {BACKEND_ENV_VAR}) cannot run {op} "
                f"on {_describe(tensors)}: {'; '.join(reasons)}"
            )
        return backend
    opted_in = opted_in_names()
    for backend in _REGISTRY:
        if (backend.auto_select or backend.name in opted_in) and not (
            backend.not_supported_reasons(op, tensors)
        ):
            return backend
    # Nothing serves: ask again, this time for the words of the error.
    rejected = []
    for backend in _REGISTRY:
        if not backend.auto_select and backend.name not in opted_in:
            rejected.append(
                f"{backend.name}: serves only when forced with {BACKEND_ENV_VAR}"
                f"={backend.name} or opted in with {OPT_IN_ENV_VAR}={backend.name}"
            )
            continue
        rejected.append(f"{backend.name}: {'; '.join(backend.not_supported_reasons(op, tensors))}")
    raise BackendError(
        f"no backend can run {op} on {_describe(tensors)} "
        f"({' | '.join(rejected) or 'no backend registered'})"
    )


def backends() -> list[BackendStatus]:
    """Each registered backend, in priority order, with whether it can run here and why not."""
    rows = []
    # Not opted_in_names(): a report of the backends must not fail on a misspelt name.
    opted_in = _parse_names(settings.opt_in())
    for backend in _REGISTRY:
        reason = backend.unavailable_reason()
        rows.append(
            BackendStatus(
                name=backend.name,
                available=reason is None,
                reason=reason,
                ops=tuple(op for op in OPS if op in backend.ops),
                device_types=tuple(sorted(backend.device_types)),
                dtypes=tuple(sorted(_dtype_name(d) for d in backend.dtypes)),
                auto_select=backend.auto_select,
                opted_in=not backend.auto_select and backend.name in opted_in,
            )
        )
    return rows


def _describe(tensors: Sequence[torch.Tensor]) -> str:
    if not tensors:
        return "no tensors"
    devices = sorted({str(t.device) for t in tensors})
    # Masks are bool by contract; the data dtypes are what tell a user why a call was refused.
    dtypes = sorted({_dtype_name(t.dtype) for t in tensors if t.dtype != torch.bool}) or ["bool"]
    return f"{'/'.join(dtypes)} tensors on {', '.join(devices)}"
