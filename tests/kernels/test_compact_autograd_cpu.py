"""The compact linear op with its derivative in C++ (kernels/csrc/cpu/compact_autograd.cpp),
against the dense formula in float64: the output and the gradients of the input, the kept
values and the bias, over odd shapes, both dtypes and every subset of inputs needing a gradient.

It needs the compiled CPU extension: without it these tests fail (they never skip).
"""

import pytest
import torch
import torch.nn.functional as F

from sparse_tickets.compact import CompactIndex
from sparse_tickets.ops.native import extension

ops = torch.ops.sparse_tickets

# (batch, rows, columns, density): one of everything, primes, rows and columns not a multiple of
# a SIMD width, a batch past one vector pass, an empty mask and a full one.
SHAPES = [
    (1, 1, 1, 1.0),
    (3, 7, 5, 0.5),
    (1, 13, 31, 0.3),
    (17, 31, 37, 0.2),
    (65, 19, 23, 0.05),
    (60, 100, 300, 0.035),
    (2, 13, 17, 0.0),
    (16, 16, 16, 1.0),
]
TOLERANCES = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
}


@pytest.fixture(autouse=True)
def _extension():
    extension.load(extension.CPU)  # raises, naming why, when it cannot be built here


def _case(shape, dtype, with_bias, seed=0):
    batch, rows, columns, density = shape
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(rows, columns, generator=generator) < density
    index = CompactIndex.from_mask(mask)
    values = torch.randn(index.nnz, generator=generator, dtype=dtype)
    x = torch.randn(batch, columns, generator=generator, dtype=dtype)
    bias = torch.randn(rows, generator=generator, dtype=dtype) if with_bias else None
    return index, values, x, bias


def _op(x, index, values, bias):
    return ops.compact_linear(
        x,
        index.row_ptr,
        index.col_idx,
        index.t_row_ptr,
        index.t_col_idx,
        index.t_value_index,
        values,
        bias,
    )


def _dense(x, index, values, bias):
    weight = index.to_dense(values).reshape(index.rows, index.cols)
    return F.linear(x, weight, bias)


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_output_and_every_gradient_match_the_dense_formula(shape, dtype, with_bias):
    index, values, x, bias = _case(shape, dtype, with_bias)
    inputs = [t.clone().requires_grad_() for t in (x, values, bias) if t is not None]
    y = _op(inputs[0], index, inputs[1], inputs[2] if with_bias else None)
    grad_y = torch.randn_like(y)
    y.backward(grad_y)

    exact = [t.double().requires_grad_() for t in (x, values, bias) if t is not None]
    expected = _dense(exact[0], index, exact[1], exact[2] if with_bias else None)
    expected.backward(grad_y.double())
    torch.testing.assert_close(y, expected.to(dtype), **TOLERANCES[dtype])
    for got, want in zip(inputs, exact):
        torch.testing.assert_close(got.grad, want.grad.to(dtype), **TOLERANCES[dtype])


@pytest.mark.parametrize(
    "needs",
    [(True, False, False), (False, True, False), (False, False, True), (True, True, False)],
    ids=["x-only", "values-only", "bias-only", "x-and-values"],
)
def test_only_the_gradients_asked_for_are_computed(needs):
    index, values, x, bias = _case((5, 11, 13, 0.4), torch.float64, True)
    x, values, bias = (t.clone().requires_grad_(need) for t, need in zip((x, values, bias), needs))
    y = _op(x, index, values, bias)
    y.sum().backward()
    exact = [t.detach().clone().requires_grad_() for t in (x, values, bias)]
    _dense(*exact[:1], index, exact[1], exact[2]).sum().backward()
    for tensor, want, need in zip((x, values, bias), exact, needs):
        if need:
            torch.testing.assert_close(tensor.grad, want.grad)
        else:
            assert tensor.grad is None


@pytest.mark.parametrize(
    "context", [torch.no_grad, torch.inference_mode], ids=["no_grad", "inference_mode"]
)
def test_forward_without_autograd_is_the_same_product(context):
    index, values, x, bias = _case((7, 9, 10, 0.5), torch.float64, True)
    with context():
        y = _op(x, index, values.requires_grad_(), bias)
    assert y.grad_fn is None
    torch.testing.assert_close(y, _dense(x, index, values.detach(), bias))


def test_opcheck():
    index, values, x, bias = _case((3, 9, 7, 0.5), torch.float32, True)
    torch.library.opcheck(
        ops.compact_linear.default,
        (
            x,
            index.row_ptr,
            index.col_idx,
            index.t_row_ptr,
            index.t_col_idx,
            index.t_value_index,
            values.requires_grad_(),
            bias,
        ),
    )
