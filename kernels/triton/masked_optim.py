"""Masked SGD and Adam steps as Triton kernels: one launch updates a whole list of parameters.

The numbers to match are sparse_tickets/ops/reference/optim.py, same signatures, same
semantics: each update is torch's ``_single_tensor_sgd`` / ``_single_tensor_adam``, then every
pruned entry of the weight and of its state ends the step as +0.0, whatever it held (a gradient
of inf or NaN, state left by a mask that shrank). The zeroing is a select, never a multiply,
which would leave -0.0 and NaN.

One launch per step (per parameter dtype, since the kernel's element type is compiled in):
the host writes, once per call, a table of each entry's base addresses (``data_ptr()``, cast
back to pointers in the kernel), its size and flags, and a chunk table mapping every program to
(entry, first element). Program ``c`` updates ``BLOCK`` elements of one entry, so a 300-element
bias and a million-element weight share the launch without idle programs. Every offset is
int64 (the first element and the size come from the int64 tables), so an entry past 2^31
elements is addressed without wrapping.

All arithmetic is fp32 whatever the storage dtype; state keeps the parameter's dtype (as torch
creates it). The results are close to the reference, not bitwise: the reference rounds to the
storage dtype after every torch op and may fuse differently (FMA), the kernel rounds once at the
store. Each entry is updated as a flat run of elements, so a parameter, its gradient, mask and
state must share one dense layout; a gradient or mask of another layout is copied into the
parameter's (they are only read), state of another layout is refused.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from .interpreter import interpreting

# Elements per program. Small under the interpreter: every program is numpy work in Python, and
# tests can cross chunk boundaries with tensors of a few hundred elements.
_INTERPRETER_BLOCK = 128
_GPU_BLOCK = 1024

_TRITON_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}

# Bits of an entry's flags (the kernels test the literals: a jitted function reads no globals).
_HAS_MASK = 1
_NEW_MOMENTUM_BUFFER = 2


def chunk_size() -> int:
    """Elements of one parameter that one program updates."""
    return _INTERPRETER_BLOCK if interpreting() else _GPU_BLOCK


@triton.jit
def _chunk(chunk_entry, chunk_start, numel_table, BLOCK: tl.constexpr):
    """This program's entry, its element offsets, and which of those lie inside the entry."""
    chunk = tl.program_id(0)
    entry = tl.load(chunk_entry + chunk)
    offsets = tl.load(chunk_start + chunk) + tl.arange(0, BLOCK)
    return entry, offsets, offsets < tl.load(numel_table + entry)


@triton.jit
def _entry_pointer(address_table, entry, DTYPE: tl.constexpr):
    return tl.load(address_table + entry).to(tl.pointer_type(DTYPE))


@triton.jit
def _kept(mask_table, entry, offsets, in_bounds, has_mask):
    """Where the entry's weight is kept: its mask, or everywhere in bounds when unmasked."""
    if has_mask:
        mask_ptr = _entry_pointer(mask_table, entry, tl.int8)
        kept = tl.load(mask_ptr + offsets, mask=in_bounds, other=0) != 0
    else:
        kept = in_bounds
    return kept


@triton.jit
def _masked_sgd_step_kernel(
    param_table,
    grad_table,
    mask_table,
    buffer_table,
    numel_table,
    flag_table,
    chunk_entry,
    chunk_start,
    weight_decay,
    momentum,
    grad_weight,
    lr,
    DTYPE: tl.constexpr,
    USES_MOMENTUM: tl.constexpr,
    NESTEROV: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # g = ±grad + wd * p;  b = new ? g : momentum * b + (1 - dampening) * g
    # p = p - lr * (nesterov ? g + momentum * b : b);  pruned p, b = +0.0
    entry, offsets, in_bounds = _chunk(chunk_entry, chunk_start, numel_table, BLOCK)
    flags = tl.load(flag_table + entry)
    kept = _kept(mask_table, entry, offsets, in_bounds, (flags & 1) != 0)
    param_ptr = _entry_pointer(param_table, entry, DTYPE) + offsets
    grad_ptr = _entry_pointer(grad_table, entry, DTYPE) + offsets
    param = tl.load(param_ptr, mask=in_bounds, other=0.0).to(tl.float32)
    grad = tl.load(grad_ptr, mask=in_bounds, other=0.0).to(tl.float32)
    if MAXIMIZE:
        grad = -grad
    if HAS_WEIGHT_DECAY:
        grad = grad + weight_decay * param
    if USES_MOMENTUM:
        buffer_ptr = _entry_pointer(buffer_table, entry, DTYPE) + offsets
        if (flags & 2) != 0:
            # A new buffer is the (decayed) gradient itself, undamped, as torch creates it.
            buffer = grad
        else:
            buffer = tl.load(buffer_ptr, mask=in_bounds, other=0.0).to(tl.float32)
            buffer = buffer * momentum + grad_weight * grad
        if NESTEROV:
            grad = grad + momentum * buffer
        else:
            grad = buffer
        tl.store(buffer_ptr, tl.where(kept, buffer, 0.0).to(DTYPE), mask=in_bounds)
    param = param + (-lr) * grad
    tl.store(param_ptr, tl.where(kept, param, 0.0).to(DTYPE), mask=in_bounds)


@triton.jit
def _masked_adam_step_kernel(
    param_table,
    grad_table,
    mask_table,
    exp_avg_table,
    exp_avg_sq_table,
    max_exp_avg_sq_table,
    numel_table,
    flag_table,
    chunk_entry,
    chunk_start,
    step_size_table,
    bias_correction2_sqrt_table,
    lerp_weight,
    beta2,
    one_minus_beta2,
    weight_decay,
    decoupled_decay_factor,
    eps,
    DTYPE: tl.constexpr,
    AMSGRAD: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    HAS_WEIGHT_DECAY: tl.constexpr,
    DECOUPLED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # g = ±grad (+ wd * p, coupled);  p = p * (1 - lr * wd) (decoupled)
    # m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g^2;  vmax = max(vmax, v)
    # p = p - step_size * m / (sqrt(amsgrad ? vmax : v) / sqrt(bias_correction2) + eps)
    # pruned p, m, v, vmax = +0.0
    entry, offsets, in_bounds = _chunk(chunk_entry, chunk_start, numel_table, BLOCK)
    kept = _kept(mask_table, entry, offsets, in_bounds, (tl.load(flag_table + entry) & 1) != 0)
    param_ptr = _entry_pointer(param_table, entry, DTYPE) + offsets
    exp_avg_ptr = _entry_pointer(exp_avg_table, entry, DTYPE) + offsets
    exp_avg_sq_ptr = _entry_pointer(exp_avg_sq_table, entry, DTYPE) + offsets
    param = tl.load(param_ptr, mask=in_bounds, other=0.0).to(tl.float32)
    grad = tl.load(
        _entry_pointer(grad_table, entry, DTYPE) + offsets, mask=in_bounds, other=0.0
    ).to(tl.float32)
    exp_avg = tl.load(exp_avg_ptr, mask=in_bounds, other=0.0).to(tl.float32)
    exp_avg_sq = tl.load(exp_avg_sq_ptr, mask=in_bounds, other=0.0).to(tl.float32)
    if MAXIMIZE:
        grad = -grad
    if HAS_WEIGHT_DECAY:
        if DECOUPLED:
            param = param * decoupled_decay_factor
        else:
            grad = grad + weight_decay * param
    # torch's lerp, both of its branches: the one taken depends on the weight.
    difference = grad - exp_avg
    if lerp_weight < 0.5:
        exp_avg = exp_avg + lerp_weight * difference
    else:
        exp_avg = grad - difference * (1.0 - lerp_weight)
    exp_avg_sq = exp_avg_sq * beta2 + one_minus_beta2 * grad * grad
    second_moment = exp_avg_sq
    if AMSGRAD:
        max_exp_avg_sq_ptr = _entry_pointer(max_exp_avg_sq_table, entry, DTYPE) + offsets
        max_exp_avg_sq = tl.load(max_exp_avg_sq_ptr, mask=in_bounds, other=0.0).to(tl.float32)
        # NaN propagates, as in torch.maximum.
        max_exp_avg_sq = tl.maximum(max_exp_avg_sq, exp_avg_sq, propagate_nan=tl.PropagateNan.ALL)
        tl.store(max_exp_avg_sq_ptr, tl.where(kept, max_exp_avg_sq, 0.0).to(DTYPE), mask=in_bounds)
        second_moment = max_exp_avg_sq
    step_size = tl.load(step_size_table + entry)
    bias_correction2_sqrt = tl.load(bias_correction2_sqrt_table + entry)
    denominator = tl.div_rn(tl.sqrt_rn(second_moment), bias_correction2_sqrt) + eps
    param = param + (-step_size) * tl.div_rn(exp_avg, denominator)
    tl.store(exp_avg_ptr, tl.where(kept, exp_avg, 0.0).to(DTYPE), mask=in_bounds)
    tl.store(exp_avg_sq_ptr, tl.where(kept, exp_avg_sq, 0.0).to(DTYPE), mask=in_bounds)
    tl.store(param_ptr, tl.where(kept, param, 0.0).to(DTYPE), mask=in_bounds)


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
    """One SGD step over every parameter in ``params``, in place, as the reference's.

    ``momentum_buffer_list[i]`` is None before a parameter's first step with momentum; the step
    then creates the buffer and stores it in the list.
    """
    _check_list_lengths(
        len(params), grads=grads, masks=masks, momentum_buffer_list=momentum_buffer_list
    )
    uses_momentum = momentum != 0
    new_buffers = [uses_momentum and buffer is None for buffer in momentum_buffer_list]
    _check_entries(
        params,
        grads,
        masks,
        {"momentum_buffer_list": momentum_buffer_list} if uses_momentum else {},
    )
    if uses_momentum:
        for i, is_new in enumerate(new_buffers):
            if is_new:
                # Filled by the kernel, which never reads it: no zeros to write first.
                momentum_buffer_list[i] = torch.empty_like(params[i])
    grads, masks = _read_only_in_param_layout(params, grads, masks)
    for indices in _indices_by_dtype(params):
        table = _EntryTable(
            params,
            indices,
            grads,
            masks,
            [momentum_buffer_list] if uses_momentum else [],
            [_NEW_MOMENTUM_BUFFER if new_buffers[i] else 0 for i in indices],
        )
        if table.num_chunks == 0:
            continue
        param_t, grad_t, mask_t, *state_t = table.addresses
        _masked_sgd_step_kernel[(table.num_chunks,)](
            param_t,
            grad_t,
            mask_t,
            state_t[0] if state_t else param_t,
            table.numels,
            table.flags,
            table.chunk_entry,
            table.chunk_start,
            *_as_floats(weight_decay, momentum, 1 - dampening, lr),
            DTYPE=table.dtype,
            USES_MOMENTUM=uses_momentum,
            NESTEROV=bool(nesterov),
            MAXIMIZE=bool(maximize),
            HAS_WEIGHT_DECAY=weight_decay != 0,
            BLOCK=table.block,
        )


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

    ``state_steps`` are the per-parameter step counters (scalar tensors), incremented here and
    read on the host: each parameter's bias corrections are scalars of the launch.
    ``max_exp_avg_sqs`` is used, and must be as long as ``params``, only with ``amsgrad``.
    """
    states = {"exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs}
    if amsgrad:
        states["max_exp_avg_sqs"] = max_exp_avg_sqs
    _check_list_lengths(len(params), grads=grads, masks=masks, state_steps=state_steps, **states)
    _check_entries(params, grads, masks, states)
    step_sizes, bias_correction2_sqrts = [], []
    for step_t in state_steps:
        step_t += 1
        step = step_t.item()
        # In double on the host, as the reference computes them, then one fp32 rounding.
        step_sizes.append(lr / (1 - beta1**step))
        bias_correction2_sqrts.append((1 - beta2**step) ** 0.5)
    grads, masks = _read_only_in_param_layout(params, grads, masks)
    for indices in _indices_by_dtype(params):
        table = _EntryTable(
            params, indices, grads, masks, list(states.values()), [0] * len(indices)
        )
        if table.num_chunks == 0:
            continue
        scalars = torch.tensor(
            [[step_sizes[i] for i in indices], [bias_correction2_sqrts[i] for i in indices]],
            dtype=torch.float32,
        ).to(params[indices[0]].device)
        param_t, grad_t, mask_t, exp_avg_t, exp_avg_sq_t, *max_t = table.addresses
        _masked_adam_step_kernel[(table.num_chunks,)](
            param_t,
            grad_t,
            mask_t,
            exp_avg_t,
            exp_avg_sq_t,
            max_t[0] if max_t else param_t,
            table.numels,
            table.flags,
            table.chunk_entry,
            table.chunk_start,
            scalars[0],
            scalars[1],
            *_as_floats(1 - beta1, beta2, 1 - beta2, weight_decay, 1 - lr * weight_decay, eps),
            DTYPE=table.dtype,
            AMSGRAD=bool(amsgrad),
            MAXIMIZE=bool(maximize),
            HAS_WEIGHT_DECAY=weight_decay != 0,
            DECOUPLED=bool(decoupled_weight_decay),
            BLOCK=table.block,
        )


class _EntryTable:
    """The host-built tables of one launch, moved to the device in one copy.

    Rows of one int64 tensor: the base address of every entry's param, grad, mask (0 when
    unmasked) and each state tensor, then the sizes, the flags, and the chunk table.
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        indices: list[int],
        grads: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor | None],
        state_lists: list[Sequence[torch.Tensor]],
        extra_flags: list[int],
    ) -> None:
        self.dtype = _TRITON_DTYPES[params[indices[0]].dtype]
        self.block = chunk_size()
        numels = tuple(params[i].numel() for i in indices)
        chunk_entry, chunk_start = _chunk_table(numels, self.block)
        self.num_chunks = len(chunk_entry)
        address_rows = [
            [params[i].data_ptr() for i in indices],
            [grads[i].data_ptr() for i in indices],
            [0 if masks[i] is None else masks[i].data_ptr() for i in indices],
        ]
        address_rows += [[states[i].data_ptr() for i in indices] for states in state_lists]
        flags = [
            (_HAS_MASK if masks[i] is not None else 0) | extra
            for i, extra in zip(indices, extra_flags)
        ]
        rows = [torch.tensor(row, dtype=torch.int64) for row in (*address_rows, numels, flags)]
        packed = torch.cat([*rows, chunk_entry, chunk_start]).to(params[indices[0]].device)
        # Views into the one packed tensor: a kernel argument's address includes its offset.
        views = packed.split([len(indices)] * len(rows) + [self.num_chunks] * 2)
        self.addresses = views[: len(address_rows)]
        self.numels, self.flags, self.chunk_entry, self.chunk_start = views[len(address_rows) :]


@functools.lru_cache(maxsize=64)
def _chunk_table(numels: tuple, block: int) -> tuple:
    """(entry, first element) of every chunk of ``block`` elements, as int64 CPU tensors.

    Cached: a training run steps the same list of parameter sizes every time.
    """
    counts = torch.tensor([triton.cdiv(n, block) for n in numels], dtype=torch.int64)
    entry = torch.repeat_interleave(torch.arange(len(numels)), counts)
    first_chunk_of_entry = torch.cumsum(counts, 0) - counts
    start = (torch.arange(len(entry)) - first_chunk_of_entry[entry]) * block
    return entry, start


def _as_floats(*scalars) -> list[float]:
    # An int argument would compile an integer variant (and 1 a constant one) of the kernel.
    return [float(scalar) for scalar in scalars]


def _indices_by_dtype(params: Sequence[torch.Tensor]) -> list[list[int]]:
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, param in enumerate(params):
        by_dtype.setdefault(param.dtype, []).append(i)
    return list(by_dtype.values())


def _check_list_lengths(expected: int, **lists: Sequence) -> None:
    for name, items in lists.items():
        if not isinstance(items, (list, tuple)) or len(items) != expected:
            got = len(items) if isinstance(items, (list, tuple)) else type(items).__name__
            raise ValueError(
                f"{name} must be a list of {expected} entries, one per param; got {got}"
            )


def _check_entries(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor | None],
    states: dict[str, Sequence[torch.Tensor | None]],
) -> None:
    """Every tensor of entry ``i`` of ``params[i]``'s shape, dtype and device; state in its
    dense layout (the kernel writes state as a flat run of elements)."""
    for i, param in enumerate(params):
        if not isinstance(param, torch.Tensor) or param.dtype not in _TRITON_DTYPES:
            got = param.dtype if isinstance(param, torch.Tensor) else type(param).__name__
            raise TypeError(f"params[{i}] must be a float32, float16 or bfloat16 tensor; got {got}")
        if param.device != params[0].device:
            raise ValueError(
                f"params[{i}] is on {param.device}; expected every param on {params[0].device}"
            )
        if not _is_dense(param):
            raise ValueError(
                f"params[{i}] of strides {param.stride()} overlaps itself or has "
                f"gaps; expected a dense tensor"
            )
        _check_like(f"grads[{i}]", grads[i], param)
        mask = masks[i]
        if mask is not None and (
            not isinstance(mask, torch.Tensor) or mask.dtype not in (torch.bool, torch.uint8)
        ):
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"masks[{i}] must be a bool or uint8 tensor or None; got {got}")
        if mask is not None and (mask.shape != param.shape or mask.device != param.device):
            raise ValueError(
                f"masks[{i}] has shape {tuple(mask.shape)} on {mask.device}; "
                f"expected {tuple(param.shape)} on {param.device}"
            )
        for name, state_list in states.items():
            state = state_list[i]
            if state is None:
                continue
            _check_like(f"{name}[{i}]", state, param)
            if state.stride() != param.stride():
                raise ValueError(
                    f"{name}[{i}] has strides {state.stride()}; expected the "
                    f"param's {param.stride()}"
                )


def _check_like(name: str, tensor: torch.Tensor, param: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a tensor; got {type(tensor).__name__}")
    if (tensor.shape, tensor.dtype, tensor.device) != (param.shape, param.dtype, param.device):
        raise ValueError(
            f"{name} is {tensor.dtype} {tuple(tensor.shape)} on {tensor.device}; "
            f"expected the param's {param.dtype} {tuple(param.shape)} on "
            f"{param.device}"
        )


def _is_dense(tensor: torch.Tensor) -> bool:
    """Whether the elements fill one block of memory exactly (any order of dimensions)."""
    expected_stride = 1
    for size, stride in sorted(zip(tensor.shape, tensor.stride()), key=lambda d: d[1]):
        if size == 1:
            continue
        if stride != expected_stride:
            return False
        expected_stride *= size
    return True


def _read_only_in_param_layout(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor | None],
) -> tuple[list, list]:
    """Grads and masks whose strides are not their param's, copied into the param's layout.

    Only read by the kernels, so a copy is as good as the original; the masks, as int8 views.
    """

    def in_layout(tensor: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        if tensor.stride() == param.stride():
            return tensor
        return torch.empty_like(param, dtype=tensor.dtype).copy_(tensor)

    grads = [in_layout(grad, param) for grad, param in zip(grads, params)]
    masks = [
        None if mask is None else in_layout(mask, param).view(torch.int8)
        for mask, param in zip(masks, params)
    ]
    return grads, masks
