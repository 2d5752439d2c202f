"""The compact sparse mode: a masked weight held as its nonzeros plus an index of the mask.

:class:`CompactIndex` is the index (built once per mask change); :mod:`.choice` decides, at
each mask change, whether a layer runs compact or dense-masked, by density thresholds that
:mod:`.thresholds` obtains from this machine (measured by :mod:`.calibration`, cached).
"""

from .index import CompactIndex

__all__ = ["CompactIndex"]
