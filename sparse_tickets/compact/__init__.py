"""The compact sparse mode: a masked weight held as its nonzeros plus an index of the mask.

:class:`CompactIndex` is the index (built once per mask change); :mod:`.choice` decides, at
each mask change, whether a layer runs compact or dense-masked, by density thresholds that
:mod:`.thresholds` obtains from this machine (measured by :mod:`.calibration`, cached);
:mod:`.conv_plan` which vectorisation a compact convolution uses.
"""

from .conv_plan import ConvPlan
from .index import CompactIndex

__all__ = ["CompactIndex", "ConvPlan"]
