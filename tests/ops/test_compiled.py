"""The compact linear and conv2d custom ops that compiled graphs call (ops.compiled)."""

import pytest
import torch

from sparse_tickets import functional
from sparse_tickets.formats import CompactIndex
from sparse_tickets.ops import compiled


def compact_weight(shape, dtype, density=0.4):
    mask = torch.rand(shape) < density
    mask.view(shape[0], -1)[:, 0] = True  # no empty row, no surprise
    index = CompactIndex.from_mask(mask)
    values = torch.randn(index.nnz, dtype=dtype, requires_grad=True)
    return index, values


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "rows,cols,batch,bias", [(7, 13, 5, True), (1, 3, 1, False), (17, 31, 2, True)]
)
def test_linear_op_equals_the_eager_function_forward_and_backward(rows, cols, batch, bias, dtype):
    index, values = compact_weight((rows, cols), dtype)
    x = torch.randn(batch, 3, cols, dtype=dtype, requires_grad=True)
    b = torch.randn(rows, dtype=dtype, requires_grad=True) if bias else None
    inputs = [t for t in (x, values, b) if t is not None]
    expected = functional.compact_linear(x, values, index, b)
    expected_grads = torch.autograd.grad(expected.square().sum(), inputs)
    got = compiled.compact_linear(x, values, index, b)
    grads = torch.autograd.grad(got.square().sum(), inputs)
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=0, atol=0)
    torch.testing.assert_close(got, expected, **tolerance)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, **tolerance)


def test_linear_op_passes_torch_library_opcheck():
    index, values = compact_weight((5, 7), torch.float64)
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(
        compiled._compact_linear, (x, values, bias, *index.tensors().values(), list(index.shape))
    )


@pytest.mark.parametrize("variant", [None, "batch", "width", "im2col"])
@pytest.mark.parametrize("groups", [1, 3])
def test_conv_op_equals_the_eager_function(groups, variant):
    index, values = compact_weight((6, 6 // groups, 3, 2), torch.float64)
    x = torch.randn(3, 6, 7, 6, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    geometry = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=groups)
    if groups > 1 and variant == "im2col":  # the im2col lowering serves groups=1 only
        for conv in (functional.compact_conv2d, compiled.compact_conv2d):
            with pytest.raises(ValueError, match="serves groups=1 only"):
                conv(x, values, index, bias, **geometry, variant=variant)
        return
    expected = functional.compact_conv2d(x, values, index, bias, **geometry, variant=variant)
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, values, bias))
    got = compiled.compact_conv2d(x, values, index, bias, **geometry, variant=variant)
    grads = torch.autograd.grad(got.square().sum(), (x, values, bias))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)


def test_conv_op_passes_torch_library_opcheck():
    index, values = compact_weight((4, 3, 3, 3), torch.float64)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(
        compiled._compact_conv2d,
        (
            x,
            values,
            bias,
            *index.tensors().values(),
            list(index.shape),
            [1, 1],
            [1, 1],
            [1, 1],
            1,
            "auto",
        ),
    )
