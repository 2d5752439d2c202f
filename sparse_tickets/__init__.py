"""sparse_tickets: lottery tickets by iterative magnitude pruning, on masked layers whose cost
falls with their density.

Public API: the masked layers and model conversion, the functional ops, the backends report,
the compact mode (``compact``, ``set_default_mode``),
and the subpackages ``optim``, ``pruning``, ``models`` and ``data``. The experiment side
(``hparams``, ``presets``, ``train``, ``lottery``, ``runs``, ``report``, ``export``) is what the
``sparse-tickets`` command line (``cli``) runs; import those modules by name.
"""

from . import compact, data, functional, models, ops, optim, pruning
from .compact.choice import set_default_mode
from .nn import (MaskedConv2d, MaskedLayer, MaskedLinear, masked, masked_layers, masked_weights,
                 masking_report, plain_state_dict, register_maskable, unmasked)
from .ops import backends

__version__ = "0.1.0"

__all__ = ["MaskedConv2d", "MaskedLayer", "MaskedLinear", "backends", "compact", "data",
           "functional", "masked", "masked_layers", "masked_weights", "masking_report",
           "models", "ops", "optim", "plain_state_dict", "pruning", "register_maskable",
           "set_default_mode", "unmasked", "__version__"]
