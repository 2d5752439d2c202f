"""MaskedSGD: torch.optim.SGD whose step keeps pruned weights and their momentum at zero."""

from __future__ import annotations

import torch

from .. import ops
from .hyperparameters import check_flag, check_non_negative, check_real
from .masked_optimizer import MaskedOptimizer
from .param_masks import MaskSource


class MaskedSGD(MaskedOptimizer):
    """Stochastic gradient descent (optionally with momentum) that respects pruning masks.

    The arguments and the update are those of ``torch.optim.SGD``; on the weights a mask keeps,
    the numbers are bitwise those of ``torch.optim.SGD(foreach=False)`` given the same masked
    gradients. By default each parameter follows its own mask (the masked
    layers and maskable weights register their weights), so ``MaskedSGD(model.parameters())``
    is a drop-in for torch's; ``masks=`` may instead be the model or a mapping
    ``{Parameter: bool tensor}`` of masks the caller updates in place; see
    :mod:`sparse_tickets.optim.param_masks`.

    After every step, for each parameter that had a gradient: a pruned weight and its momentum
    buffer are exactly +0.0, whatever the gradient held there, the weight decay, or a mask that
    shrank since the previous step. Unmasked parameters (biases, norms) step as in torch.
    State layout (``state[p]['momentum_buffer']``) and state_dicts are torch's.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        masks: MaskSource = None,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        super().__init__(params, defaults, masks)

    @staticmethod
    def check_hyperparameters(group: dict) -> None:
        """Raise one line naming the first invalid hyperparameter of ``group``."""
        check_non_negative("lr", group["lr"])
        check_non_negative("momentum", group["momentum"])
        check_real("dampening", group["dampening"])
        check_non_negative("weight_decay", group["weight_decay"])
        check_flag("nesterov", group["nesterov"])
        check_flag("maximize", group["maximize"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"nesterov=True needs momentum > 0 and dampening == 0; got "
                f"momentum={group['momentum']}, dampening={group['dampening']}"
            )

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        # state_dicts saved by older torch.optim.SGD lack these keys.
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)

    def _step_params(self, group: dict, params: list[torch.Tensor]) -> None:
        uses_momentum = group["momentum"] != 0
        grads = [param.grad for param in params]
        masks = [self._mask_of(param) for param in params]
        momentum_buffers = [
            self.state[param].get("momentum_buffer") if uses_momentum else None for param in params
        ]
        backend = ops.select("masked_sgd_step", [*params, *grads, *masks, *momentum_buffers])
        backend.masked_sgd_step(
            params,
            grads,
            masks,
            momentum_buffers,
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            lr=group["lr"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
        )
        if uses_momentum:
            # The step created the buffers of first-time parameters in the list.
            for param, buffer in zip(params, momentum_buffers):
                self.state[param]["momentum_buffer"] = buffer
