"""The direct sparse conv2d ops of the C++ (CPU) extension, called raw, against torch's conv2d.

Every case runs each vectorisation ("batch": over the batch, "width": over the output width) in
float32 and float64, and checks the output, the input gradient and the gradient of the kept
weights against float64 torch with an error bound that holds for any summation order:
``(K + 2) * eps * sum_k |term_k|`` for a sum of K products (the sums of |terms| are the same
convolutions on absolute values).
"""

import pytest
import torch
import torch.nn.functional as F

from sparse_tickets.compact import CompactIndex
from sparse_tickets.ops.native import extension

ops = torch.ops.sparse_tickets

VARIANTS = ["batch", "width"]
DTYPES = [torch.float32, torch.float64]

# (N, C, O, H, W, (kH, kW), stride, padding, dilation, groups, density): batch 1, 3 and 60 (not a
# multiple of any vector); prime channels; 1x1, 3x3, 5x5 and uneven kernels; stride 2 and 3;
# dilation 2; padding 0, 1, 2 and uneven; widths below, at and past one vector; grouped and
# depthwise; an empty mask and a full one.
CASES = [
    (1, 3, 5, 7, 9, (3, 3), (1, 1), (1, 1), (1, 1), 1, 0.5),
    (3, 7, 11, 8, 8, (3, 3), (1, 1), (0, 0), (1, 1), 1, 0.3),
    (60, 5, 7, 6, 5, (5, 5), (1, 1), (2, 2), (1, 1), 1, 0.2),
    (17, 13, 6, 9, 11, (1, 1), (2, 2), (0, 0), (1, 1), 1, 0.6),
    (9, 6, 5, 10, 13, (3, 3), (2, 2), (1, 1), (2, 2), 1, 0.4),
    (5, 3, 4, 11, 17, (3, 2), (1, 2), (1, 0), (2, 1), 1, 0.5),
    (2, 5, 3, 6, 19, (2, 5), (3, 1), (0, 2), (1, 2), 1, 0.7),
    (4, 6, 9, 7, 7, (3, 3), (1, 1), (1, 1), (1, 1), 3, 0.6),
    (3, 7, 7, 6, 6, (3, 3), (2, 2), (1, 1), (1, 1), 7, 0.8),
    (2, 3, 3, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, 0.0),
    (3, 4, 5, 6, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1.0),
    (33, 13, 17, 12, 19, (3, 3), (3, 3), (2, 2), (1, 1), 1, 0.1),
    # Rows of whole vectors at column stride 1 (16 = 1, 2 or 4 vectors of any ISA and dtype):
    # the width variant writes the input gradient in place, with padding, row stride, dilation.
    (5, 4, 6, 9, 16, (3, 3), (2, 1), (1, 1), (1, 1), 1, 0.5),
    (2, 3, 5, 8, 16, (3, 3), (1, 1), (2, 2), (2, 2), 1, 0.4),
]


@pytest.fixture(autouse=True)
def _extension():
    extension.load(extension.CPU)  # raises, naming why, when it cannot be built here


def _case_id(case):
    n, c, o, h, w, k, s, p, d, g, density = case
    geometry = f"k{k[0]}x{k[1]}-s{s[0]}{s[1]}-p{p[0]}{p[1]}-d{d[0]}{d[1]}-g{g}"
    return f"n{n}-c{c}-o{o}-{h}x{w}-{geometry}-{density}"


def _assert_within_sum_bound(got, exact, magnitude, terms):
    """|got - exact| <= (terms + 2) * eps * magnitude, exact and magnitude in float64."""
    assert got.shape == exact.shape and exact.dtype == torch.float64
    bound = (terms + 2) * torch.finfo(got.dtype).eps * magnitude + torch.finfo(got.dtype).tiny
    error = (got.double() - exact).abs()
    if error.numel():
        worst = (error - bound).argmax()
        assert bool((error <= bound).all()), (
            f"error {error.flatten()[worst]:.3g} > bound {bound.flatten()[worst]:.3g}"
        )


def _problem(case, dtype):
    n, c, o, h, w, kernel, stride, padding, dilation, groups, density = case
    mask = torch.rand(o, c // groups, *kernel) < density
    weight = torch.randn(o, c // groups, *kernel, dtype=torch.float64) * mask
    index = CompactIndex.from_mask(mask)
    x = torch.randn(n, c, h, w, dtype=torch.float64).to(dtype)
    bias = torch.randn(o, dtype=torch.float64).to(dtype)
    geometry = (list(kernel), list(stride), list(padding), list(dilation), groups)
    return mask, weight.to(dtype).double(), index, weight[mask].to(dtype), x, bias, geometry


def _grads(x, weight, grad_y, stride, padding, dilation, groups):
    """(dx, dW) of conv2d in float64."""
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad_y,
        x,
        weight,
        None,
        stride,
        padding,
        dilation,
        False,
        [0, 0],
        groups,
        [True, True, False],
    )
    return grad_x, grad_w


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp64"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_forward_and_gradients_match_conv2d(case, variant, dtype):
    mask, weight, index, values, x, bias, geometry = _problem(case, dtype)
    kernel, stride, padding, dilation, groups = geometry
    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    taps = kernel[0] * kernel[1]

    for b in (bias, None):
        y = ops.sparse_conv2d(x, index.row_ptr, index.col_idx, values, b, *geometry, variant)
        assert y.dtype == dtype and y.is_contiguous()
        exact = F.conv2d(x.double(), weight, None if b is None else b.double(), **conv)
        magnitude = F.conv2d(x.double().abs(), weight.abs(), None, **conv)
        if b is not None:
            magnitude = magnitude + b.double().abs().view(1, -1, 1, 1)
        _assert_within_sum_bound(y, exact, magnitude, x.shape[1] // groups * taps + 1)

    grad_y = torch.randn(y.shape, dtype=torch.float64).to(dtype)
    grad_x, grad_values = ops.sparse_conv2d_backward(
        grad_y,
        x,
        index.row_ptr,
        index.col_idx,
        index.t_row_ptr,
        index.t_col_idx,
        index.t_value_index,
        values,
        *geometry,
        variant,
        [True, True],
    )
    exact_x, exact_w = _grads(
        x.double(), weight, grad_y.double(), stride, padding, dilation, groups
    )
    size_x, size_w = _grads(
        x.double().abs(), weight.abs(), grad_y.double().abs(), stride, padding, dilation, groups
    )
    assert grad_x.dtype == dtype and grad_values.shape == values.shape
    _assert_within_sum_bound(grad_x, exact_x, size_x, weight.shape[0] // groups * taps)
    _assert_within_sum_bound(
        grad_values, exact_w[mask], size_w[mask], y.shape[0] * y.shape[2] * y.shape[3]
    )


# The kernels split the work between threads by images (batch variant: by blocks of one vector
# of images) when there are at least as many as threads, else by channels over operands laid out
# for the whole batch: fewer images than threads, and more, each at one thread and at four; and
# many images whose weight gradient would need more accumulators per thread than the input has
# elements (tiny images, many kept weights), which the backward splits by channels too.
SPLIT_CASES = [
    (1, 16, 12, 20, 24, (3, 3), (1, 1), (1, 1), (1, 1), 1, 0.5),
    (3, 8, 12, 31, 29, (3, 3), (2, 2), (1, 1), (1, 1), 2, 0.6),
    (2, 5, 7, 17, 16, (3, 3), (1, 1), (2, 2), (2, 2), 1, 0.5),
    (37, 6, 5, 13, 11, (3, 3), (1, 2), (1, 1), (1, 1), 1, 0.4),
    (9, 32, 32, 2, 2, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1.0),
    (40, 32, 24, 3, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1, 0.9),
]


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", SPLIT_CASES, ids=_case_id)
def test_every_thread_split_matches_conv2d(case, variant, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        test_forward_and_gradients_match_conv2d(case, variant, torch.float32)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_gradient_alone_and_non_contiguous_operands(variant):
    case = (6, 5, 4, 9, 10, (3, 3), (1, 1), (1, 1), (1, 1), 1, 0.5)
    mask, weight, index, values, x, _, geometry = _problem(case, torch.float64)
    wide = torch.randn(6, 5, 9, 20, dtype=torch.float64)
    strided = wide[..., ::2]  # neither the width nor anything else contiguous
    channels_last = x.contiguous(memory_format=torch.channels_last)
    for inputs in (strided, channels_last):
        y = ops.sparse_conv2d(
            inputs, index.row_ptr, index.col_idx, values, None, *geometry, variant
        )
        assert torch.allclose(y, F.conv2d(inputs, weight, padding=1))
    grad_y = torch.randn(y.shape, dtype=torch.float64).transpose(2, 3).contiguous().transpose(2, 3)
    args = (
        grad_y,
        x,
        index.row_ptr,
        index.col_idx,
        index.t_row_ptr,
        index.t_col_idx,
        index.t_value_index,
        values,
        *geometry,
        variant,
    )
    exact_x, exact_w = _grads(x, weight, grad_y, [1, 1], [1, 1], [1, 1], 1)
    grad_x, nothing = ops.sparse_conv2d_backward(*args, [True, False])
    assert torch.allclose(grad_x, exact_x) and nothing.numel() == 0
    nothing, grad_values = ops.sparse_conv2d_backward(*args, [False, True])
    assert torch.allclose(grad_values, exact_w[mask]) and nothing.numel() == 0


def test_bad_calls_fail_in_one_line():
    mask, _, index, values, x, bias, geometry = _problem(CASES[0], torch.float32)
    call = lambda *args: ops.sparse_conv2d(*args)  # noqa: E731
    with pytest.raises(RuntimeError, match='variant must be "batch" or "width", got "im2col"'):
        call(x, index.row_ptr, index.col_idx, values, bias, *geometry, "im2col")
    with pytest.raises(RuntimeError, match="values must have the input's dtype"):
        call(x, index.row_ptr, index.col_idx, values.double(), bias, *geometry, "batch")
    with pytest.raises(RuntimeError, match="values must be 1-D with one entry per kept weight"):
        call(x, index.row_ptr, index.col_idx, values[:-1], bias, *geometry, "batch")
    with pytest.raises(RuntimeError, match="the output would be empty"):
        call(
            x[:, :, :1, :1],
            index.row_ptr,
            index.col_idx,
            values,
            bias,
            geometry[0],
            geometry[1],
            [0, 0],
            geometry[3],
            1,
            "width",
        )


def test_opcheck_every_op():
    for variant in VARIANTS:
        mask, _, index, values, x, bias, geometry = _problem(CASES[4], torch.float32)
        torch.library.opcheck(
            ops.sparse_conv2d.default,
            (x, index.row_ptr, index.col_idx, values, bias, *geometry, variant),
        )
        y = ops.sparse_conv2d(x, index.row_ptr, index.col_idx, values, bias, *geometry, variant)
        torch.library.opcheck(
            ops.sparse_conv2d_backward.default,
            (
                torch.randn_like(y),
                x,
                index.row_ptr,
                index.col_idx,
                index.t_row_ptr,
                index.t_col_idx,
                index.t_value_index,
                values,
                *geometry,
                variant,
                [True, True],
            ),
        )
