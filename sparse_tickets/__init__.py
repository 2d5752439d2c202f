"""sparse_tickets: lottery tickets by iterative magnitude pruning, on masked layers whose cost
falls with their density.

Two wings. The library, the public API: the masked layers and model conversion (``nn``), the
functional ops, the backends (``ops``, their kernels in ``kernels``), the compact mode
(``compact``, ``set_default_mode``; the index it keeps in ``formats``), the subpackages
``optim``, ``pruning``, ``models`` and ``data``, and the helpers ``settings`` (the environment
variables), ``files`` (atomic, checksummed writes) and ``progress``. The experiment: the
subpackage ``lottery`` (hyperparameters, presets, training, IMP, the instability analysis, run
directories, reports, export), which the ``sparse-tickets`` command line (``cli``) runs. The
library never imports the experiment, nor does ``import sparse_tickets``; import its modules by
name, e.g. ``sparse_tickets.lottery.imp``.

The packages import one way, each only from those of an earlier level (tests/test_layout.py
checks it, imports inside functions included):

1. ``settings``, ``files``, ``progress``, ``conv_geometry``, ``tensor_cache``: helpers that
   import nothing of the package;
2. ``kernels``: the Triton kernels;
3. ``formats``: the compact index and the conv plan, the data the backends take;
4. ``ops``: the backends and the one place that picks one for a call;
5. ``functional``: the autograd Functions over the backends;
6. ``compact``: when a layer runs compact (thresholds, their calibration on the functional ops);
7. ``nn``: the masked layers;
8. ``optim``, ``pruning``, ``models``, ``data``: built on the layers, not on each other;
9. this module, the public API (re-exports only), and ``lottery``, the experiment;
10. ``cli``, the command line, and 11. ``__main__``, which runs it.
"""

from . import compact, data, functional, models, ops, optim, pruning
from .compact.choice import set_default_mode
from .nn import (
    MaskedConv2d,
    MaskedLayer,
    MaskedLinear,
    masked,
    masked_layers,
    masked_weights,
    masking_report,
    plain_state_dict,
    register_maskable,
    unmasked,
)
from .ops import backends

__version__ = "0.1.0"

__all__ = [
    "MaskedConv2d",
    "MaskedLayer",
    "MaskedLinear",
    "backends",
    "compact",
    "data",
    "functional",
    "masked",
    "masked_layers",
    "masked_weights",
    "masking_report",
    "models",
    "ops",
    "optim",
    "plain_state_dict",
    "pruning",
    "register_maskable",
    "set_default_mode",
    "unmasked",
    "__version__",
]
