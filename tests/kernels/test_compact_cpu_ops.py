"""The C++ (CPU) ops of the compact sparse mode, called raw, against pure torch formulas.

spmm and sddmm are checked against the dense formula in float64 with an error bound that holds
for any summation order: ``(K + 2) * eps * sum_k |term_k|`` for a sum of K products. The
optimizer steps are checked against ``sparse_tickets.ops.reference.optim`` (bitwise torch.optim
on the kept entries): SGD bitwise; Adam bitwise with the default SPARSE_TICKETS_CPU_ADAM_SQRT=torch
(torch's own MKL square root), within a few ulps with the opt-in correctly rounded one (fast).
Pruned entries must end as +0.0 exactly.
"""

import itertools

import pytest
import torch

from sparse_tickets.ops.native import extension
from sparse_tickets.ops.reference import optim as reference

ops = torch.ops.sparse_tickets

DTYPES = [torch.float32, torch.float64]
# (batch, rows, columns, density): one of everything, primes, a batch past one and two SIMD
# widths (16 fp32 / 8 fp64 lanes, 64-lane chunks), no nonzero at all, and a full matrix.
SHAPES = [
    (1, 1, 1, 1.0),
    (1, 7, 5, 0.5),
    (3, 1, 13, 0.6),
    (5, 11, 1, 0.5),
    (17, 31, 37, 0.2),
    (64, 64, 64, 0.1),
    (65, 19, 23, 0.3),
    (130, 41, 29, 0.15),
    (2, 13, 17, 0.0),
    (16, 16, 16, 1.0),
    (33, 97, 61, 0.05),
]


@pytest.fixture(autouse=True)
def _extension():
    extension.load(extension.CPU)  # raises, naming why, when it cannot be built here


def _mask(rows, columns, density, empty_lines):
    mask = torch.rand(rows, columns) < density
    if empty_lines:  # whole rows and columns with no nonzero
        mask[::3] = False
        mask[:, 1::4] = False
    return mask


def _csr(mask):
    """row_ptr and col_idx (int32) of a bool matrix, columns ascending within each row."""
    row_ptr = torch.zeros(mask.shape[0] + 1, dtype=torch.int32)
    row_ptr[1:] = mask.sum(1).cumsum(0)
    return row_ptr, mask.nonzero()[:, 1].to(torch.int32).contiguous()


def _transposed_index(mask):
    """CSR of mask.T plus, per entry, the position of that nonzero in mask's row-major order."""
    row_ptr, col_idx = _csr(mask.T)
    position = torch.full(mask.shape, -1, dtype=torch.int32)
    position[mask] = torch.arange(int(mask.sum()), dtype=torch.int32)
    return row_ptr, col_idx, position.T[mask.T].contiguous()


def _assert_within_sum_bound(got, exact, magnitude, terms):
    """|got - exact| <= (terms + 2) * eps * magnitude, exact and magnitude in float64."""
    assert got.dtype in DTYPES and exact.dtype == torch.float64
    bound = (terms + 2) * torch.finfo(got.dtype).eps * magnitude + torch.finfo(got.dtype).tiny
    error = (got.double() - exact).abs()
    worst = (error - bound).argmax() if error.numel() else None
    assert bool((error <= bound).all()), (
        f"error {error.flatten()[worst]:.3g} > bound {bound.flatten()[worst]:.3g} at {worst}"
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp64"])
@pytest.mark.parametrize("empty_lines", [False, True], ids=["random", "empty-lines"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_spmm_forward_transposed_and_sddmm_match_dense_formulas(shape, empty_lines, dtype):
    batch, rows, columns, density = shape
    mask = _mask(rows, columns, density, empty_lines)
    weight = torch.randn(rows, columns, dtype=torch.float64) * mask
    row_ptr, col_idx = _csr(mask)
    values = weight[mask].to(dtype)
    x = torch.randn(batch, columns, dtype=dtype)
    bias = torch.randn(rows, dtype=dtype)
    exact_weight = weight.to(dtype).double()

    # y = x W^T + b, with and without the bias.
    for b in (bias, None):
        y = ops.spmm(x, row_ptr, col_idx, values, None, b)
        assert y.shape == (batch, rows) and y.dtype == dtype and y.is_contiguous()
        bias64 = torch.zeros(rows, dtype=torch.float64) if b is None else b.double()
        _assert_within_sum_bound(
            y,
            x.double() @ exact_weight.T + bias64,
            x.double().abs() @ exact_weight.abs().T + bias64.abs(),
            columns,
        )

    # dx = dy W, through the transposed index and its value_index.
    grad_out = torch.randn(batch, rows, dtype=dtype)
    t_row_ptr, t_col_idx, value_index = _transposed_index(mask)
    dx = ops.spmm(grad_out, t_row_ptr, t_col_idx, values, value_index, None)
    assert dx.shape == (batch, columns)
    _assert_within_sum_bound(
        dx, grad_out.double() @ exact_weight, grad_out.double().abs() @ exact_weight.abs(), rows
    )

    # dW at the nonzeros = (dy^T x)[mask], in values' order.
    dw = ops.sddmm(grad_out, x, row_ptr, col_idx)
    assert dw.shape == values.shape and dw.dtype == dtype
    _assert_within_sum_bound(
        dw,
        (grad_out.double().T @ x.double())[mask],
        (grad_out.double().abs().T @ x.double().abs())[mask],
        batch,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp64"])
def test_strided_inputs_give_the_contiguous_result(dtype):
    mask = _mask(37, 45, 0.3, False)
    row_ptr, col_idx = _csr(mask)
    values = torch.randn(int(mask.sum()), dtype=dtype)
    batch = 21
    column_major = torch.randn(45, batch, dtype=dtype).T  # stride (1, batch)
    padded_rows = torch.randn(batch, 60, dtype=dtype)[:, 3:48]  # stride (60, 1)
    every_other = torch.randn(batch, 90, dtype=dtype)[:, ::2]  # stride (90, 2)
    grad_out = torch.randn(37, batch, dtype=dtype).T
    for x in (column_major, padded_rows, every_other):
        assert not x.is_contiguous()
        expected = ops.spmm(x.contiguous(), row_ptr, col_idx, values, None, None)
        assert torch.equal(ops.spmm(x, row_ptr, col_idx, values, None, None), expected)
        expected = ops.sddmm(grad_out.contiguous(), x.contiguous(), row_ptr, col_idx)
        assert torch.equal(ops.sddmm(grad_out, x, row_ptr, col_idx), expected)


def test_value_index_permutation_reads_values_through_it():
    mask = _mask(29, 31, 0.4, False)
    row_ptr, col_idx = _csr(mask)
    nnz = col_idx.numel()
    values = torch.randn(nnz)
    permutation = torch.randperm(nnz)
    stored = torch.empty_like(values)
    stored[permutation] = values  # stored[permutation[j]] == values[j]
    x = torch.randn(9, 31)
    direct = ops.spmm(x, row_ptr, col_idx, values, None, None)
    through = ops.spmm(x, row_ptr, col_idx, stored, permutation.to(torch.int32), None)
    assert torch.equal(direct, through)


def test_columns_need_not_be_sorted_within_a_row():
    mask = _mask(23, 41, 0.5, False)
    row_ptr, col_idx = _csr(mask)
    values = torch.randn(col_idx.numel(), dtype=torch.float64)
    shuffled = torch.cat(
        [torch.randperm(int(row_ptr[r + 1] - row_ptr[r])) + int(row_ptr[r]) for r in range(23)]
    )
    x, grad_out = torch.randn(5, 41, dtype=torch.float64), torch.randn(5, 23, dtype=torch.float64)
    sorted_y = ops.spmm(x, row_ptr, col_idx, values, None, None)
    shuffled_y = ops.spmm(x, row_ptr, col_idx[shuffled], values[shuffled], None, None)
    torch.testing.assert_close(shuffled_y, sorted_y, rtol=1e-12, atol=1e-12)
    sorted_dw = ops.sddmm(grad_out, x, row_ptr, col_idx)
    assert torch.equal(ops.sddmm(grad_out, x, row_ptr, col_idx[shuffled]), sorted_dw[shuffled])


def test_large_layer_splits_rows_between_threads_correctly():
    # Big enough for the parallel path (the row split, more than one 64-wide batch chunk).
    mask = _mask(700, 300, 0.05, True)
    row_ptr, col_idx = _csr(mask)
    weight = torch.randn(700, 300, dtype=torch.float64) * mask
    values = weight[mask]
    x = torch.randn(150, 300, dtype=torch.float64)
    grad_out = torch.randn(150, 700, dtype=torch.float64)
    bias = torch.randn(700, dtype=torch.float64)
    torch.testing.assert_close(
        ops.spmm(x, row_ptr, col_idx, values, None, bias), x @ weight.T + bias
    )
    torch.testing.assert_close(ops.sddmm(grad_out, x, row_ptr, col_idx), (grad_out.T @ x)[mask])
    t_row_ptr, t_col_idx, value_index = _transposed_index(mask)
    torch.testing.assert_close(
        ops.spmm(grad_out, t_row_ptr, t_col_idx, values, value_index, None), grad_out @ weight
    )


def test_empty_batch_and_empty_matrix():
    row_ptr, col_idx = _csr(torch.zeros(4, 3, dtype=torch.bool))
    values = torch.empty(0)
    assert ops.spmm(torch.randn(0, 3), row_ptr, col_idx, values, None, None).shape == (0, 4)
    bias = torch.randn(4)
    assert torch.equal(
        ops.spmm(torch.randn(2, 3), row_ptr, col_idx, values, None, bias), bias.expand(2, 4)
    )
    assert ops.sddmm(torch.randn(2, 4), torch.randn(2, 3), row_ptr, col_idx).shape == (0,)
    mask = torch.ones(4, 3, dtype=torch.bool)
    row_ptr, col_idx = _csr(mask)
    assert torch.equal(
        ops.sddmm(torch.randn(0, 4), torch.randn(0, 3), row_ptr, col_idx), torch.zeros(12)
    )


# ------------------------------------------------------------------------------------------
# Optimizer steps: bitwise against the reference.

# One element, around the 16 / 8 lanes of a vector, a multi-dimensional weight, a longer one.
OPTIM_SHAPES = [(1,), (7,), (15,), (16,), (17,), (13, 17), (3, 5, 7), (1031,)]
STEPS = 3


def _optim_entries(dtype, masked, garbage):
    """Params (pruned entries zero), masks, and a gradient generator; with ``garbage``, the
    gradients hold inf and NaN at pruned entries and the params NaN there before the step."""
    params, masks = [], []
    for shape in OPTIM_SHAPES:
        mask = torch.rand(shape) < 0.6 if masked else None
        param = torch.randn(shape, dtype=dtype)
        if mask is not None:
            param = param.masked_fill(~mask, float("nan") if garbage else 0.0)
        params.append(param)
        masks.append(mask)
    return params, masks


def _grads(params, masks, generator, garbage):
    grads = []
    for param, mask in zip(params, masks):
        grad = torch.randn(param.shape, generator=generator, dtype=param.dtype)
        if garbage and mask is not None:
            grad = grad.masked_fill(~mask, float("nan"))
            grad.view(-1)[:3].masked_fill_(~mask.view(-1)[:3], float("-inf"))
        grads.append(grad)
    return grads


def _assert_bitwise(got, expected, masks, what):
    for i, (ours, theirs, mask) in enumerate(zip(got, expected, masks)):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert torch.equal(ours, theirs), (
            f"{what}[{i}]: {int((ours != theirs).sum())} entries differ, worst "
            f"{float((ours - theirs).abs().max()):.3g}"
        )
        if mask is not None:
            pruned = ours[~mask]
            assert torch.equal(pruned, torch.zeros_like(pruned)) and not pruned.signbit().any()


def _assert_close_and_pruned_zero(got, expected, masks, what, rtol, atol):
    for i, (ours, theirs, mask) in enumerate(zip(got, expected, masks)):
        torch.testing.assert_close(ours, theirs, rtol=rtol, atol=atol, msg=f"{what}[{i}]")
        if mask is not None:
            pruned = ours[~mask]
            assert torch.equal(pruned, torch.zeros_like(pruned)) and not pruned.signbit().any()


SGD_CONFIGS = [
    dict(momentum=m, dampening=d, weight_decay=w, nesterov=n, maximize=x)
    for m, d, w, n, x in itertools.product(
        (0.0, 0.9), (0.0, 0.3), (0.0, 1e-2), (False, True), (False, True)
    )
    if not (n and (m == 0 or d != 0))
]  # torch's own constraint on nesterov


def _id(config):
    return "-".join(f"{k}={v}" for k, v in config.items() if v) or "plain"


# Unmasked (the compact values), masked, and masked with inf / NaN where the mask prunes.
ENTRY_KINDS = [(False, False), (True, False), (True, True)]
ENTRY_KIND_IDS = ["unmasked", "masked", "masked-garbage"]


@pytest.mark.parametrize("masked,garbage", ENTRY_KINDS, ids=ENTRY_KIND_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp64"])
@pytest.mark.parametrize("config", SGD_CONFIGS, ids=[_id(c) for c in SGD_CONFIGS])
def test_sgd_step_is_bitwise_the_reference(config, dtype, masked, garbage):
    params, masks = _optim_entries(dtype, masked, garbage)
    ours = [p.clone() for p in params]
    theirs = [p.clone() for p in params]
    # The first step must ignore whatever the buffer held.
    our_buffers = [torch.full_like(p, float("nan")) for p in params]
    their_buffers = [None] * len(params)
    momentum = config["momentum"]
    ours_generator = torch.Generator().manual_seed(5)
    theirs_generator = torch.Generator().manual_seed(5)
    for step in range(STEPS):
        grads = _grads(ours, masks, ours_generator, garbage)
        for param, grad, buffer, mask in zip(ours, grads, our_buffers, masks):
            ops.sgd_step_(
                param,
                grad,
                buffer if momentum else torch.empty(0, dtype=dtype),
                mask,
                0.05,
                config["weight_decay"],
                momentum,
                config["dampening"],
                config["nesterov"],
                config["maximize"],
                step == 0,
            )
        reference.masked_sgd_step(
            theirs,
            _grads(theirs, masks, theirs_generator, garbage),
            masks,
            their_buffers,
            lr=0.05,
            **config,
        )
    _assert_bitwise(ours, theirs, masks, "param")
    if momentum:
        _assert_bitwise(our_buffers, their_buffers, masks, "momentum_buffer")


ADAM_CONFIGS = [
    dict(amsgrad=a, maximize=x, weight_decay=w, decoupled_weight_decay=d, beta1=b)
    for a, x, w, d, b in itertools.product(
        (False, True), (False, True), (0.0, 0.1), (False, True), (0.9, 0.3)
    )
    if not (d and w == 0)
]  # beta1=0.3: lerp's other branch (1 - beta1 >= 0.5)


@pytest.mark.parametrize("sqrt", ["torch", "fast"])
@pytest.mark.parametrize("masked,garbage", ENTRY_KINDS, ids=ENTRY_KIND_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp64"])
@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=[_id(c) for c in ADAM_CONFIGS])
def test_adam_step_matches_the_reference(config, dtype, masked, garbage, sqrt, monkeypatch):
    """Bitwise with torch's own square root; with the fast one (correctly rounded, where torch's
    MKL sqrt may be an ulp off) within a few ulps, and pruned entries still exactly +0.0."""
    monkeypatch.setenv("SPARSE_TICKETS_CPU_ADAM_SQRT", sqrt)
    params, masks = _optim_entries(dtype, masked, garbage)
    hyper = dict(lr=1e-2, beta2=0.99, eps=1e-8, **config)
    amsgrad = config["amsgrad"]

    def state():
        tensors = [[torch.zeros_like(p) for p in params] for _ in range(3)]
        if garbage:  # state left at pruned entries by a mask that shrank: NaN, -0.0
            for group in tensors:
                for tensor, mask in zip(group, masks):
                    tensor.masked_fill_(~mask, float("nan"))
                    tensor.view(-1)[:2].masked_fill_(~mask.view(-1)[:2], -0.0)
        return tensors

    ours, theirs = [p.clone() for p in params], [p.clone() for p in params]
    our_state, their_state = state(), state()
    steps = [torch.tensor(0.0) for _ in params]
    ours_generator = torch.Generator().manual_seed(5)
    theirs_generator = torch.Generator().manual_seed(5)
    for step in range(1, STEPS + 1):
        grads = _grads(ours, masks, ours_generator, garbage)
        for i, (param, grad, mask) in enumerate(zip(ours, grads, masks)):
            max_exp_avg_sq = our_state[2][i] if amsgrad else torch.empty(0, dtype=dtype)
            ops.adam_step_(
                param,
                grad,
                our_state[0][i],
                our_state[1][i],
                max_exp_avg_sq,
                mask,
                hyper["lr"],
                hyper["beta1"],
                hyper["beta2"],
                hyper["eps"],
                hyper["weight_decay"],
                float(step),
                amsgrad,
                hyper["maximize"],
                hyper["decoupled_weight_decay"],
            )
        reference.masked_adam_step(
            theirs,
            _grads(theirs, masks, theirs_generator, garbage),
            masks,
            *their_state,
            steps,
            **hyper,
        )
    compared = [
        ("param", ours, theirs, hyper["lr"]),
        ("exp_avg", our_state[0], their_state[0], 1.0),
        ("exp_avg_sq", our_state[1], their_state[1], 1.0),
    ]
    if amsgrad:
        compared.append(("max_exp_avg_sq", our_state[2], their_state[2], 1.0))
    eps = torch.finfo(dtype).eps
    for what, got, expected, scale in compared:
        if sqrt == "torch":
            _assert_bitwise(got, expected, masks, what)
        else:
            _assert_close_and_pruned_zero(
                got, expected, masks, what, rtol=16 * eps, atol=16 * eps * scale
            )


def test_adam_sqrt_choice_is_checked(monkeypatch):
    monkeypatch.setenv("SPARSE_TICKETS_CPU_ADAM_SQRT", "exact")
    param = torch.zeros(3)
    with pytest.raises(RuntimeError, match="SPARSE_TICKETS_CPU_ADAM_SQRT=exact; expected torch"):
        ops.adam_step_(
            param,
            param.clone(),
            param.clone(),
            param.clone(),
            torch.empty(0),
            None,
            1e-3,
            0.9,
            0.999,
            1e-8,
            0.0,
            1.0,
            False,
            False,
            False,
        )


def test_adam_step_uses_the_given_step_count(monkeypatch):
    monkeypatch.setenv("SPARSE_TICKETS_CPU_ADAM_SQRT", "torch")
    # A late step: the bias corrections come from `step`, not from a counter of calls.
    param, grad = torch.randn(33), torch.randn(33)
    state = [torch.rand(33) for _ in range(2)]
    ours, theirs = param.clone(), param.clone()
    our_state = [t.clone() for t in state]
    ops.adam_step_(
        ours,
        grad,
        *our_state,
        torch.empty(0),
        None,
        1e-3,
        0.9,
        0.999,
        1e-8,
        0.0,
        1234.0,
        False,
        False,
        False,
    )
    reference.masked_adam_step(
        [theirs],
        [grad],
        [None],
        [state[0]],
        [state[1]],
        [],
        [torch.tensor(1233.0)],
        amsgrad=False,
        beta1=0.9,
        beta2=0.999,
        lr=1e-3,
        weight_decay=0.0,
        eps=1e-8,
        maximize=False,
        decoupled_weight_decay=False,
    )
    assert torch.equal(ours, theirs) and torch.equal(our_state[0], state[0])


# ------------------------------------------------------------------------------------------
# Bad inputs and registration.


def _spmm_args(**override):
    mask = torch.ones(3, 4, dtype=torch.bool)
    row_ptr, col_idx = _csr(mask)
    args = dict(
        x=torch.randn(2, 4),
        row_ptr=row_ptr,
        col_idx=col_idx,
        values=torch.randn(12),
        value_index=None,
        bias=None,
    )
    args.update(override)
    return args


SPMM_ERRORS = {
    "col_idx must be int32, got Long": dict(col_idx=torch.arange(12)),
    "row_ptr must be int32, got Float": dict(row_ptr=torch.tensor([0.0, 4, 8, 12])),
    "x must be float32 or float64, got Half": dict(x=torch.randn(2, 4).half()),
    "values must have x's dtype Float, got Double": dict(values=torch.randn(12).double()),
    "x must be 2-D": dict(x=torch.randn(4)),
    "values must have one entry per nonzero (12), got 11": dict(values=torch.randn(11)),
    "row_ptr[-1] must equal col_idx's length 12, got 10": dict(
        row_ptr=torch.tensor([0, 4, 8, 10], dtype=torch.int32)
    ),
    "row_ptr[0] must be 0, got 1": dict(row_ptr=torch.tensor([1, 4, 8, 12], dtype=torch.int32)),
    "row_ptr must be nondecreasing": dict(row_ptr=torch.tensor([0, 8, 4, 12], dtype=torch.int32)),
    "value_index must have col_idx's length 12, got 5": dict(
        value_index=torch.arange(5, dtype=torch.int32)
    ),
    "bias must have shape (3,)": dict(bias=torch.randn(4)),
    "bias must have x's dtype Float, got Double": dict(bias=torch.randn(3).double()),
}


@pytest.mark.parametrize("message", SPMM_ERRORS, ids=range(len(SPMM_ERRORS)))
def test_spmm_rejects_bad_inputs_naming_the_problem(message):
    with pytest.raises(
        RuntimeError,
        match=message.replace("(", r"\(")
        .replace(")", r"\)")
        .replace("[", r"\[")
        .replace("]", r"\]"),
    ):
        ops.spmm(**_spmm_args(**SPMM_ERRORS[message]))


def test_sddmm_rejects_bad_inputs_naming_the_problem():
    args = _spmm_args()
    with pytest.raises(RuntimeError, match="grad_out and x must have the same batch size"):
        ops.sddmm(torch.randn(3, 3), args["x"], args["row_ptr"], args["col_idx"])
    with pytest.raises(RuntimeError, match="grad_out must have one column per row of row_ptr"):
        ops.sddmm(torch.randn(2, 5), args["x"], args["row_ptr"], args["col_idx"])
    with pytest.raises(RuntimeError, match="grad_out must have x's dtype"):
        ops.sddmm(torch.randn(2, 3).double(), args["x"], args["row_ptr"], args["col_idx"])


def test_optimizer_steps_reject_bad_inputs_naming_the_problem():
    param = torch.zeros(4, 5)
    empty = torch.empty(0)
    sgd = dict(
        lr=0.1,
        weight_decay=0.0,
        momentum=0.9,
        dampening=0.0,
        nesterov=False,
        maximize=False,
        first_step=True,
    )
    with pytest.raises(RuntimeError, match="sgd_step_: param must be contiguous"):
        ops.sgd_step_(torch.zeros(5, 4).T, param.T.clone(), param.T.clone(), None, **sgd)
    with pytest.raises(RuntimeError, match=r"momentum_buffer must have param's shape \[4, 5\]"):
        ops.sgd_step_(param, param.clone(), empty, None, **sgd)
    with pytest.raises(RuntimeError, match="mask must be bool, got Float"):
        ops.sgd_step_(param, param.clone(), param.clone(), torch.ones(4, 5), **sgd)
    with pytest.raises(RuntimeError, match="grad must have param's dtype Float, got Double"):
        ops.sgd_step_(param, param.double(), param.clone(), None, **sgd)
    adam = dict(
        lr=1e-3,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        step=1.0,
        maximize=False,
        decoupled_weight_decay=False,
    )
    with pytest.raises(RuntimeError, match="adam_step_: max_exp_avg_sq must have param's shape"):
        ops.adam_step_(
            param, param.clone(), param.clone(), param.clone(), empty, None, amsgrad=True, **adam
        )
    with pytest.raises(RuntimeError, match="exp_avg_sq must have param's shape"):
        ops.adam_step_(
            param,
            param.clone(),
            param.clone(),
            torch.zeros(5, 4),
            empty,
            None,
            amsgrad=False,
            **adam,
        )
    with pytest.raises(RuntimeError, match="mask must have param's shape"):
        ops.adam_step_(
            param,
            param.clone(),
            param.clone(),
            param.clone(),
            empty,
            torch.ones(20, dtype=torch.bool),
            amsgrad=False,
            **adam,
        )


def test_opcheck_every_op():
    mask = _mask(9, 7, 0.5, False)
    row_ptr, col_idx = _csr(mask)
    t_row_ptr, t_col_idx, value_index = _transposed_index(mask)
    values = torch.randn(col_idx.numel())
    x, grad_out = torch.randn(3, 7), torch.randn(3, 9)
    torch.library.opcheck(ops.spmm.default, (x, row_ptr, col_idx, values, None, torch.randn(9)))
    torch.library.opcheck(
        ops.spmm.default, (grad_out, t_row_ptr, t_col_idx, values, value_index, None)
    )
    torch.library.opcheck(ops.sddmm.default, (grad_out, x, row_ptr, col_idx))
    param, grad = torch.randn(9, 7) * mask, torch.randn(9, 7)
    torch.library.opcheck(
        ops.sgd_step_.default,
        (param, grad, torch.zeros(9, 7), mask, 0.1, 1e-2, 0.9, 0.0, True, False, False),
    )
    torch.library.opcheck(
        ops.adam_step_.default,
        (
            param,
            grad,
            torch.zeros(9, 7),
            torch.zeros(9, 7),
            torch.zeros(9, 7),
            mask,
            1e-3,
            0.9,
            0.999,
            1e-8,
            0.0,
            2.0,
            True,
            False,
            False,
        ),
    )
