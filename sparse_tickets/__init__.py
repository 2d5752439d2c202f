"""sparse_tickets: lottery tickets by iterative magnitude pruning, on masked layers whose cost
falls with their density.

Two wings. The library, the public API: the masked layers and model conversion (``nn``), the
functional ops, the backends (``ops``, their kernels in ``kernels``), the compact mode
(``compact``, ``set_default_mode``), the subpackages ``optim``, ``pruning``, ``models`` and
``data``, and the helpers ``files`` (atomic, checksummed writes) and ``progress``. The
experiment: the subpackage ``lottery`` (hyperparameters, presets, training, IMP, the
instability analysis, run directories, reports, export), which the ``sparse-tickets`` command
line (``cli``) runs. The library never imports the experiment, nor does ``import
sparse_tickets``; import its modules by name, e.g. ``sparse_tickets.lottery.imp``.
"""

from . import compact, data, functional, models, ops, optim, pruning
from .compact.choice import set_default_mode
from .nn import (MaskedConv2d, MaskedLayer, MaskedLinear, masked, masked_layers, masked_weights,
                 masking_report, plain_state_dict, register_maskable, unmasked)
from .ops import backends

# auto's thresholds are measured by training masked layers (nn.calibration), which are built on
# the compact mode that asks for them: the measurement is handed down here, from above both.
from .compact import thresholds as _thresholds
from .nn import calibration as _calibration

from .compact import layer_thresholds as _layer_thresholds

_thresholds.measure_with(_calibration.measure_thresholds)
_layer_thresholds.measure_with(_calibration.measure_layer_threshold)

__version__ = "0.1.0"

__all__ = ["MaskedConv2d", "MaskedLayer", "MaskedLinear", "backends", "compact", "data",
           "functional", "masked", "masked_layers", "masked_weights", "masking_report",
           "models", "ops", "optim", "plain_state_dict", "pruning", "register_maskable",
           "set_default_mode", "unmasked", "__version__"]
