"""Masked SGD and Adam steps in plain torch: the numbers every other backend is tested against.

Each step is multi-tensor (lists of tensors, hyperparameters as keywords) so that a fused
backend can take the whole list in one launch. The arithmetic is torch 2.13's
``_single_tensor_sgd`` / ``_single_tensor_adam``, operation for operation, on every entry; then
each pruned entry of the weight and of every state tensor is overwritten with +0.0
(:mod:`.masking`). The update
is elementwise, so a kept entry never sees a pruned one: on the kept entries the result is
bitwise that of ``torch.optim.SGD`` / ``Adam`` (``foreach=False``) run on masked gradients,
and whatever a pruned entry held before (a gradient from an unmasked computation, inf or NaN,
state left by a mask that shrank since the last step, a weight written from outside) ends the
step as +0.0. A ``None`` mask means an unmasked parameter, updated exactly as torch.optim would.
"""

from __future__ import annotations

import torch

from .masking import zero_pruned_


def masked_sgd_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    masks: list[torch.Tensor | None],
    momentum_buffer_list: list[torch.Tensor | None],
    *,
    weight_decay: float,
    momentum: float,
    lr: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """One SGD step over every parameter in ``params``, in place.

    ``momentum_buffer_list[i]`` is None before a parameter's first step with momentum; the step
    then creates the buffer and stores it in the list, which the caller writes back to its state.
    """
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]

        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)

        if momentum != 0:
            buffer = momentum_buffer_list[i]
            if buffer is None:
                buffer = grad.detach().clone()
                momentum_buffer_list[i] = buffer
            else:
                buffer.mul_(momentum).add_(grad, alpha=1 - dampening)
            grad = grad.add(buffer, alpha=momentum) if nesterov else buffer

        param.add_(grad, alpha=-lr)

        mask = masks[i]
        if mask is not None:
            zero_pruned_(param, mask)
            if momentum != 0:
                zero_pruned_(momentum_buffer_list[i], mask)


def masked_adam_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    masks: list[torch.Tensor | None],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    max_exp_avg_sqs: list[torch.Tensor],
    state_steps: list[torch.Tensor],
    *,
    amsgrad: bool,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    """One Adam step (AdamW with ``decoupled_weight_decay``) over every parameter, in place.

    ``state_steps`` are the per-parameter step counters (scalar tensors), incremented here;
    ``max_exp_avg_sqs`` is used, and must be as long as ``params``, only with ``amsgrad``.
    """
    for i, param in enumerate(params):
        grad = grads[i] if not maximize else -grads[i]
        exp_avg = exp_avgs[i]
        exp_avg_sq = exp_avg_sqs[i]
        step_t = state_steps[i]

        step_t += 1

        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)

        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

        step = step_t.item()
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5

        if amsgrad:
            torch.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i])
            denom = (max_exp_avg_sqs[i].sqrt() / bias_correction2_sqrt).add_(eps)
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)

        param.addcdiv_(exp_avg, denom, value=-step_size)

        mask = masks[i]
        if mask is not None:
            for tensor in (param, exp_avg, exp_avg_sq, *((max_exp_avg_sqs[i],) if amsgrad else ())):
                zero_pruned_(tensor, mask)
