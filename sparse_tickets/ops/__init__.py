"""Backends for the masked ops, and the single point that chooses one for a call.

Backends register here in priority order. After the foundation only ``reference`` exists;
the Triton, C++ and CUDA backends register ahead of it as they are built.
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

register(ReferenceBackend())

__all__ = [
    "BACKEND_ENV_VAR", "OPS", "Backend", "BackendError", "BackendStatus", "backends", "get",
    "register", "registered_names", "select",
]
