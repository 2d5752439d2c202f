"""Backends for the masked ops, and the single point that chooses one for a call.

Backends register here in priority order: ``semi_structured`` (the masked linear's forward on
2:4 sparse tensor cores through torch's semi-structured sparse tensors: 2:4 masks, half
precision, sm80+ GPUs; opt-in), ``triton`` (dense-masked kernels, only when forced or opted in
until measured on a GPU), the compiled ``cuda`` and ``cpu`` backends (the compact linear and the
fused optimizer steps), and ``reference`` (plain torch) last: it serves every op, device and
float dtype, so auto-selection always has a fallback.

Every backend subclasses :class:`Backend` (:mod:`.base`: one typed signature per op method).
``SPARSE_TICKETS_BACKEND=<name>`` forces one backend for every call;
``SPARSE_TICKETS_OPT_IN=semi_structured[,triton]`` lets backends that serve only when asked take
part in auto-selection, where the calls they cannot serve fall through to the next backend.
"""

from .base import OP_METHODS, signature_problems
from .dispatch import (
    BACKEND_ENV_VAR,
    OPS,
    OPT_IN_ENV_VAR,
    Backend,
    BackendError,
    BackendStatus,
    backends,
    get,
    opted_in_names,
    register,
    registered_names,
    select,
)
from .native import cpu_backend, cuda_backend
from .reference import ReferenceBackend
from .semi_structured import SemiStructuredBackend
from .triton_backend import TritonBackend

register(ReferenceBackend())
register(TritonBackend(), before="reference")
register(cuda_backend, before="reference")
register(cpu_backend, before="reference")
# First: it serves only 2:4 half-precision layers on sm80+; everything else falls through.
register(SemiStructuredBackend(), before="triton")

__all__ = [
    "BACKEND_ENV_VAR",
    "OPS",
    "OPT_IN_ENV_VAR",
    "OP_METHODS",
    "Backend",
    "BackendError",
    "BackendStatus",
    "backends",
    "get",
    "opted_in_names",
    "register",
    "registered_names",
    "select",
    "signature_problems",
]
