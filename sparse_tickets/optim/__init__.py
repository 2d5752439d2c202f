"""Masked optimizers: torch.optim.SGD, Adam and AdamW whose step keeps pruned weights and their
optimizer state at exactly zero, and equals torch's step on the weights the masks keep.

Each optimizer takes ``masks=``: the model (its masked layers' ``mask`` buffers, read live at
every step) or a mapping ``{Parameter: bool tensor}``. The step itself is a multi-tensor call
chosen by :func:`sparse_tickets.ops.select` (``masked_sgd_step`` / ``masked_adam_step``), so a
fused backend can take a whole param group in one launch.
"""

from .masked_adam import MaskedAdam, MaskedAdamW
from .masked_optimizer import MaskedOptimizer
from .masked_sgd import MaskedSGD
from .param_masks import MaskSource

__all__ = ["MaskedAdam", "MaskedAdamW", "MaskedOptimizer", "MaskedSGD", "MaskSource"]
