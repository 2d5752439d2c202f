"""How a compact weight is stored for the kernels: the index of its mask
(:class:`CompactIndex`, CSR of the mask and of its transpose) and the plan of which
vectorisation a compact convolution uses (:class:`ConvPlan`, carried by the index).

Plain torch data, below the backends that take it (:mod:`sparse_tickets.ops`); the compact mode
that decides when a layer uses it (:mod:`sparse_tickets.compact`) re-exports both.
"""

from .compact_index import INDEX_FIELDS, CompactIndex
from .conv_plan import ConvPlan

__all__ = ["CompactIndex", "ConvPlan", "INDEX_FIELDS"]
