"""The compact sparse mode: when a masked layer holds its weight as the nonzeros plus an index of
the mask.

:mod:`.choice` decides, at each mask change, whether a layer runs compact or dense-masked, by
density thresholds that :mod:`.thresholds` (per kind) and :mod:`.layer_thresholds` (per layer
shape) obtain from this machine: measured by :mod:`.calibration`, which times training steps of
the masked and compact ops, and cached. The index itself (:class:`CompactIndex`) and the plan of
a compact convolution (:class:`ConvPlan`) live below the backends, in
:mod:`sparse_tickets.formats`; they are re-exported here.
"""

from ..formats import CompactIndex, ConvPlan

__all__ = ["CompactIndex", "ConvPlan"]
