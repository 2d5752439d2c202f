"""Backends for the masked ops, and the single point that chooses one for a call.

Backends register here in priority order. ``reference`` (plain torch) comes last: it serves
every device and float dtype, so auto-selection always has a fallback.
"""

from .dispatch import (
    BACKEND_ENV_VAR,
    OPS,
    Backend,
    BackendError,
    BackendStatus,
    backends,
    get,
    register,
    registered_names,
    select,
)
from .reference import ReferenceBackend
from .triton_backend import TritonBackend

register(ReferenceBackend())
register(TritonBackend(), before="reference")

__all__ = [
    "BACKEND_ENV_VAR", "OPS", "Backend", "BackendError", "BackendStatus", "backends", "get",
    "register", "registered_names", "select",
]
