"""Masked optimizers: torch.optim.SGD, Adam and AdamW whose step keeps pruned weights and their
optimizer state at exactly zero, and equals torch's step on the weights the masks keep.

Each optimizer finds the masks of the parameters it is given (drop-in for torch.optim), or takes
``masks=``: the model (its masked layers' ``mask`` buffers, read live at every step) or a
mapping ``{Parameter: bool tensor}``. Plain torch.optim optimizers on a masked model are looked
after too (:mod:`.plain`): they follow mode switches and cannot revive pruned weights silently.
The step itself is a multi-tensor call chosen by :func:`sparse_tickets.ops.select`
(``masked_sgd_step`` / ``masked_adam_step``), so a fused backend can take a whole param group
in one launch.
"""

from . import plain  # noqa: F401  (installs the plain-optimizer step hooks)
from .masked_adam import MaskedAdam, MaskedAdamW
from .masked_optimizer import MaskedOptimizer
from .masked_sgd import MaskedSGD
from .param_masks import MaskSource

__all__ = ["MaskedAdam", "MaskedAdamW", "MaskedOptimizer", "MaskedSGD", "MaskSource"]
