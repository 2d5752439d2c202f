"""The reference masked optimizer steps against torch.optim's single-tensor functional steps:
bitwise on the kept entries, +0.0 on the pruned ones, whatever those held before."""

import pytest
import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

from sparse_tickets.ops.reference.optim import masked_adam_step, masked_sgd_step

# Awkward on purpose: one element, a prime length, no mask, a conv weight, an empty tensor.
SHAPES = [(1,), (7,), (3, 5), (2, 3, 3, 3), (0, 4)]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
STEPS = 3


def make_masks(with_none=True):
    masks = [torch.rand(shape) < 0.5 for shape in SHAPES]
    if with_none:
        masks[2] = None  # an unmasked parameter among masked ones
    return masks


def noisy_at_pruned(tensor, mask, value):
    """``tensor`` holding ``value`` where ``mask`` prunes: what the step must wipe out."""
    return tensor if mask is None else tensor.masked_fill(~mask, value)


def kept(tensor, mask):
    return tensor if mask is None else tensor[mask]


def assert_pruned_are_positive_zero(tensors, masks):
    for tensor, mask in zip(tensors, masks):
        if mask is not None:
            pruned = tensor[~mask]
            assert bool((pruned == 0).all()) and not bool(pruned.signbit().any())


def assert_kept_equal(ours, theirs, masks):
    for mine, expected, mask in zip(ours, theirs, masks):
        assert torch.equal(kept(mine, mask), kept(expected, mask))


def gradients(dtype, masks):
    # inf and NaN at the pruned entries: they must not reach a kept entry nor survive the step.
    return [
        noisy_at_pruned(
            torch.randn(shape, dtype=dtype), mask, float("nan") if i % 2 else float("inf")
        )
        for i, (shape, mask) in enumerate(zip(SHAPES, masks))
    ]


def masked_gradients(grads, masks):
    return [
        grad if mask is None else torch.where(mask, grad, 0.0) for grad, mask in zip(grads, masks)
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "hyperparameters",
    [
        dict(momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False),
        dict(momentum=0.9, dampening=0.1, nesterov=False, weight_decay=0.1, maximize=False),
        dict(momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.1, maximize=True),
    ],
    ids=["plain", "momentum", "nesterov+maximize"],
)
def test_masked_sgd_step_matches_torch_on_kept_entries(dtype, hyperparameters):
    masks = make_masks()
    params = [
        noisy_at_pruned(torch.randn(shape, dtype=dtype), mask, 3.0)
        for shape, mask in zip(SHAPES, masks)
    ]
    theirs = [param.clone() for param in params]
    buffers = [None] * len(params)
    their_buffers = [None] * len(params)
    for _ in range(STEPS):
        grads = gradients(dtype, masks)
        masked_sgd_step(params, grads, masks, buffers, lr=0.05, **hyperparameters)
        sgd(
            theirs,
            masked_gradients(grads, masks),
            their_buffers,
            foreach=False,
            lr=0.05,
            **hyperparameters,
        )
        assert_kept_equal(params, theirs, masks)
        assert_pruned_are_positive_zero(params, masks)
        if hyperparameters["momentum"]:
            assert all(buffer is not None and buffer.dtype == dtype for buffer in buffers)
            assert_kept_equal(buffers, their_buffers, masks)
            assert_pruned_are_positive_zero(buffers, masks)
        else:
            assert buffers == [None] * len(params)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "hyperparameters",
    [
        dict(amsgrad=False, weight_decay=0.0, decoupled_weight_decay=False, maximize=False),
        dict(amsgrad=True, weight_decay=0.1, decoupled_weight_decay=False, maximize=False),
        dict(amsgrad=True, weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
    ],
    ids=["plain", "amsgrad+weight_decay", "decoupled+maximize"],
)
def test_masked_adam_step_matches_torch_on_kept_entries(dtype, hyperparameters):
    masks = make_masks()
    params = [
        noisy_at_pruned(torch.randn(shape, dtype=dtype), mask, 3.0)
        for shape, mask in zip(SHAPES, masks)
    ]
    # Moments left over at the pruned entries, as after a mask shrank: the step zeroes them.
    moments = [
        [
            noisy_at_pruned(torch.rand(shape, dtype=dtype), mask, 0.5)
            for shape, mask in zip(SHAPES, masks)
        ]
        for _ in range(3)
    ]
    steps = [torch.tensor(0.0) for _ in SHAPES]
    theirs = [[tensor.clone() for tensor in tensors] for tensors in (params, *moments)]
    their_steps = [torch.tensor(0.0) for _ in SHAPES]
    if not hyperparameters["amsgrad"]:
        moments[2], theirs[3] = [], []
    common = dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-3, **hyperparameters)
    for _ in range(STEPS):
        grads = gradients(dtype, masks)
        masked_adam_step(params, grads, masks, *moments, steps, **common)
        adam(
            *theirs[:1],
            masked_gradients(grads, masks),
            *theirs[1:],
            their_steps,
            foreach=False,
            **common,
        )
        for ours, expected in zip((params, *moments), theirs):
            assert_kept_equal(ours, expected, masks)
            assert_pruned_are_positive_zero(ours, masks)
    assert [step.item() for step in steps] == [STEPS] * len(SHAPES)


def test_the_callers_gradients_are_not_written():
    masks = make_masks(with_none=False)
    grads = gradients(torch.float32, masks)
    before = [grad.clone() for grad in grads]
    params = [torch.zeros(shape) for shape in SHAPES]
    masked_sgd_step(
        params,
        grads,
        masks,
        [None] * len(SHAPES),
        lr=0.1,
        momentum=0.9,
        dampening=0.0,
        nesterov=False,
        weight_decay=0.1,
        maximize=True,
    )
    masked_adam_step(
        params,
        grads,
        masks,
        [torch.zeros(s) for s in SHAPES],
        [torch.zeros(s) for s in SHAPES],
        [],
        [torch.tensor(0.0) for _ in SHAPES],
        amsgrad=False,
        beta1=0.9,
        beta2=0.999,
        lr=0.1,
        weight_decay=0.1,
        eps=1e-8,
        maximize=True,
        decoupled_weight_decay=False,
    )
    for grad, original in zip(grads, before):
        assert torch.equal(grad.nan_to_num(), original.nan_to_num())
