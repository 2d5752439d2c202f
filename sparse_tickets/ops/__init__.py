"""Backends for the masked ops, and the single point that chooses one for a call.

Backends register here in priority order: ``triton`` (dense-masked kernels, only when forced
until measured on a GPU), the compiled ``cuda`` and ``cpu`` backends (the compact linear and the
fused optimizer steps), and ``reference`` (plain torch) last: it serves every op, device and
float dtype, so auto-selection always has a fallback.
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
from .native import cpu_backend, cuda_backend
from .reference import ReferenceBackend
from .triton_backend import TritonBackend

register(ReferenceBackend())
register(TritonBackend(), before="reference")
register(cuda_backend, before="reference")
register(cpu_backend, before="reference")

__all__ = [
    "BACKEND_ENV_VAR", "OPS", "Backend", "BackendError", "BackendStatus", "backends", "get",
    "register", "registered_names", "select",
]
