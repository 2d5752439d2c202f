"""MaskedAdam and MaskedAdamW: torch.optim.Adam / AdamW whose step keeps pruned weights and
their moments at zero."""

from __future__ import annotations

import torch

from .. import ops
from .hyperparameters import check_flag, check_fraction, check_non_negative
from .masked_optimizer import MaskedOptimizer
from .param_masks import MaskSource


class MaskedAdam(MaskedOptimizer):
    """Adam (AdamW with ``decoupled_weight_decay=True``) that respects pruning masks.

    The arguments and the update are those of ``torch.optim.Adam``; on the weights a mask keeps,
    the numbers are bitwise those of ``torch.optim.Adam(foreach=False)`` given the same masked
    gradients. By default each parameter follows its own mask (the masked
    layers and maskable weights register their weights), so ``MaskedAdam(model.parameters())``
    is a drop-in for torch's; ``masks=`` may instead be the model or a mapping
    ``{Parameter: bool tensor}`` of masks the caller updates in place; see
    :mod:`sparse_tickets.optim.param_masks`.

    After every step, for each parameter that had a gradient: a pruned weight and its
    ``exp_avg``, ``exp_avg_sq`` and ``max_exp_avg_sq`` are exactly +0.0, whatever the gradient
    held there, the weight decay (coupled or decoupled), or a mask that shrank since the
    previous step. Unmasked parameters step as in torch. State layout and state_dicts are
    torch's: ``state[p]['step']`` is a float32 scalar tensor on the CPU, the moments have the
    parameter's dtype and device.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        masks: MaskSource = None,
        decoupled_weight_decay: bool = False,
        maximize: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults, masks)

    @staticmethod
    def check_hyperparameters(group: dict) -> None:
        """Raise one line naming the first invalid hyperparameter of ``group``."""
        check_non_negative("lr", group["lr"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2); got {betas!r}")
        check_fraction("betas[0]", betas[0])
        check_fraction("betas[1]", betas[1])
        check_non_negative("eps", group["eps"])
        check_non_negative("weight_decay", group["weight_decay"])
        check_flag("amsgrad", group["amsgrad"])
        check_flag("maximize", group["maximize"])
        check_flag("decoupled_weight_decay", group["decoupled_weight_decay"])

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        # state_dicts saved by older torch.optim.Adam lack these keys.
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("decoupled_weight_decay", False)

    def _step_params(self, group: dict, params: list[torch.Tensor]) -> None:
        amsgrad = group["amsgrad"]
        beta1, beta2 = group["betas"]
        states = [self._state_of(param, amsgrad) for param in params]
        grads = [param.grad for param in params]
        masks = [self._mask_of(param) for param in params]
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        max_exp_avg_sqs = [state["max_exp_avg_sq"] for state in states] if amsgrad else []
        state_steps = [state["step"] for state in states]
        # The step counters stay out of the choice: they live on the CPU whatever the device of
        # the parameters, and are read, not computed on, by every backend.
        backend = ops.select(
            "masked_adam_step", [*params, *grads, *masks, *exp_avgs, *exp_avg_sqs, *max_exp_avg_sqs]
        )
        backend.masked_adam_step(
            params,
            grads,
            masks,
            exp_avgs,
            exp_avg_sqs,
            max_exp_avg_sqs,
            state_steps,
            amsgrad=amsgrad,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
        )

    def _state_of(self, param: torch.Tensor, amsgrad: bool) -> dict:
        """``param``'s state, created at its first step as torch.optim.Adam creates it."""
        state = self.state[param]
        if len(state) == 0:
            # A CPU counter, as torch's non-fused Adam keeps it: reading it needs no device sync.
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if amsgrad and "max_exp_avg_sq" not in state:
            # Also when amsgrad is switched on mid-run (torch fails then): a zero maximum makes
            # the next step's maximum the current exp_avg_sq.
            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state


class MaskedAdamW(MaskedAdam):
    """:class:`MaskedAdam` with decoupled weight decay, defaulting to ``weight_decay=1e-2``, as
    ``torch.optim.AdamW`` is ``torch.optim.Adam``'s."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        masks: MaskSource = None,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            masks=masks,
            decoupled_weight_decay=True,
            maximize=maximize,
        )

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        # As torch.optim.AdamW: a loaded Adam state_dict still steps as AdamW.
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
