"""The criteria the library ships, registered in the order the command line lists them.

A criterion is one class (:class:`~.criteria.Criterion`) plus its entry here;
register one of your own with :func:`~.criteria.register_criterion` from anywhere.
"""

from .at_init import SNIP, GraSP, SynFlow
from .criteria import register_criterion
from .magnitude import Magnitude
from .random import Random

BUILT_IN = (Magnitude, Random, SNIP, GraSP, SynFlow)

for _criterion in BUILT_IN:
    register_criterion(_criterion)
