"""compact_linear / compact_conv2d on every backend that serves them, against dense torch on
the dense weight the values describe (float64 ground truth for the low-precision dtypes)."""

import pytest
import torch
import torch.nn.functional as F

from sparse_tickets import ops
from sparse_tickets.compact import CompactIndex
from sparse_tickets.functional import compact_conv2d, compact_linear
from sparse_tickets.ops.native import extension

DTYPES = {
    "reference": [torch.float64, torch.float32, torch.float16, torch.bfloat16],
    "cpu": [torch.float64, torch.float32],
}
CASES = [(backend, dtype) for backend, dtypes in DTYPES.items() for dtype in dtypes]

# (x shape, out_features): primes, one row, one feature, leading dims, a wide batch.
LINEAR_SHAPES = [((1, 1), 1), ((7, 13), 5), ((3, 17), 31), ((2, 3, 11), 7), ((70, 37), 3)]
DENSITIES = [0.0, 0.05, 0.4, 1.0]


@pytest.fixture(params=CASES, ids=[f"{b}-{str(d)[6:]}" for b, d in CASES])
def backend_dtype(request, monkeypatch):
    backend, dtype = request.param
    if backend == "cpu":
        extension.load(extension.CPU)  # raises, naming why, when it cannot be built here
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, backend)
    return backend, dtype


def _tolerance(dtype):
    return {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}[
        dtype
    ]


def _compact(shape, density, dtype):
    mask = torch.rand(shape) < density
    weight = torch.randn(shape, dtype=torch.float64) * mask
    index = CompactIndex.from_mask(mask)
    return weight, index, index.gather(weight)


def _leaf(t, dtype):
    return t.detach().to(dtype).clone().requires_grad_()


def _assert_close(ours, truth, dtype):
    assert ours.dtype == dtype and ours.shape == truth.shape
    if truth.numel() == 0:
        return
    scale = truth.abs().max().item() + 1.0
    error = (ours.double() - truth).abs().max().item()
    assert error <= _tolerance(dtype) * scale, error


@pytest.mark.parametrize("x_shape, out_features", LINEAR_SHAPES, ids=str)
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_compact_linear_matches_dense(backend_dtype, x_shape, out_features, density, with_bias):
    _, dtype = backend_dtype
    weight, index, values = _compact((out_features, x_shape[-1]), density, dtype)
    x = torch.randn(x_shape, dtype=torch.float64)
    bias = torch.randn(out_features, dtype=torch.float64) if with_bias else None
    grad_y = torch.randn(*x_shape[:-1], out_features, dtype=torch.float64)

    ours = [_leaf(x, dtype), _leaf(values, dtype), None if bias is None else _leaf(bias, dtype)]
    y = compact_linear(ours[0], ours[1], index, ours[2])
    y.backward(grad_y.to(dtype))
    truth = [
        _leaf(x, torch.float64),
        _leaf(weight, torch.float64),
        None if bias is None else _leaf(bias, torch.float64),
    ]
    y_truth = F.linear(*truth)
    y_truth.backward(grad_y)

    _assert_close(y, y_truth, dtype)
    _assert_close(ours[0].grad, truth[0].grad, dtype)
    _assert_close(ours[1].grad, index.gather(truth[1].grad), dtype)
    if bias is not None:
        _assert_close(ours[2].grad, truth[2].grad, dtype)


def test_compact_linear_takes_non_contiguous_inputs(backend_dtype):
    _, dtype = backend_dtype
    weight, index, values = _compact((9, 12), 0.3, dtype)
    x = torch.randn(12, 8, dtype=torch.float64).t()  # (8, 12), transposed storage
    assert not x.is_contiguous()
    leaf = _leaf(values, dtype)
    y = compact_linear(x.to(dtype), leaf, index)
    _assert_close(y, F.linear(x, weight), dtype)
    y.backward(torch.ones_like(y)[:, :].t().contiguous().t())  # a non-contiguous gradient
    _assert_close(leaf.grad, index.gather(torch.ones(8, 9, dtype=torch.float64).t() @ x), dtype)


# (input shape, out channels, kernel, stride, padding, dilation)
CONV_CASES = [
    ((2, 3, 7, 6), 5, (3, 3), 1, 1, 1),
    ((1, 1, 5, 5), 1, (1, 1), 1, 0, 1),
    ((2, 4, 9, 8), 3, (3, 2), (2, 1), (1, 2), (1, 2)),
    ((3, 2, 6, 7), 7, (3, 3), 1, "same", (2, 1)),
    ((1, 3, 8, 8), 4, (2, 2), 2, "valid", 1),
]


@pytest.mark.parametrize(
    "x_shape, out_channels, kernel, stride, padding, dilation",
    CONV_CASES,
    ids=[f"case{i}" for i in range(len(CONV_CASES))],
)
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_compact_conv2d_matches_dense(
    backend_dtype, x_shape, out_channels, kernel, stride, padding, dilation, density
):
    _, dtype = backend_dtype
    weight, index, values = _compact((out_channels, x_shape[1], *kernel), density, dtype)
    x = torch.randn(x_shape, dtype=torch.float64)
    bias = torch.randn(out_channels, dtype=torch.float64)

    ours = [_leaf(x, dtype), _leaf(values, dtype), _leaf(bias, dtype)]
    y = compact_conv2d(ours[0], ours[1], index, ours[2], stride, padding, dilation)
    truth = [_leaf(x, torch.float64), _leaf(weight, torch.float64), _leaf(bias, torch.float64)]
    y_truth = F.conv2d(*truth, stride, padding, dilation)
    grad_y = torch.randn_like(y_truth)
    y.backward(grad_y.to(dtype))
    y_truth.backward(grad_y)

    _assert_close(y, y_truth, dtype)
    _assert_close(ours[0].grad, truth[0].grad, dtype)
    _assert_close(ours[1].grad, index.gather(truth[1].grad), dtype)
    _assert_close(ours[2].grad, truth[2].grad, dtype)


def test_compact_conv2d_takes_an_unbatched_input():
    weight, index, values = _compact((4, 3, 3, 3), 0.5, torch.float64)
    x = torch.randn(3, 6, 6, dtype=torch.float64)
    y = compact_conv2d(x, values, index, padding=1)
    assert torch.allclose(y, F.conv2d(x, weight, padding=1))


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda v, i: compact_linear(torch.randn(2, 5), v, i),
            r"input has shape \(2, 5\); expected",
        ),
        (lambda v, i: compact_linear(torch.randn(2, 4), v[:-1], i), r"values has shape"),
        (lambda v, i: compact_linear(torch.randn(2, 4), v, "index"), "must be a sparse_tickets"),
        (lambda v, i: compact_linear(torch.randn(2, 4), v, i, torch.zeros(2)), r"bias has shape"),
        (lambda v, i: compact_linear(torch.randn(2, 4).double(), v, i), "share one dtype"),
        (lambda v, i: compact_conv2d(torch.randn(1, 4, 3, 3), v, i), "expected 4 dimensions"),
    ],
)
def test_bad_calls_fail_in_one_line(call, message):
    index = CompactIndex.from_mask(torch.ones(3, 4, dtype=torch.bool))
    values = torch.randn(index.nnz)
    with pytest.raises((ValueError, TypeError), match=message):
        call(values, index)


def test_compact_conv2d_refuses_an_output_that_would_be_empty():
    _, index, values = _compact((2, 1, 5, 5), 0.5, torch.float32)
    with pytest.raises(ValueError, match="output would be empty"):
        compact_conv2d(torch.randn(1, 1, 3, 3), values.float(), index)


# (input shape, out channels, kernel, stride, padding, dilation, groups): batch 1 and 60, prime
# channels, 1x1 and 5x5, "same", grouped and depthwise.
VARIANT_CASES = [
    ((1, 3, 6, 9), 5, (3, 3), 1, "same", 1, 1),
    ((60, 2, 5, 4), 3, (1, 1), 2, 0, 1, 1),
    ((3, 5, 8, 7), 7, (5, 5), 1, 2, (1, 2), 1),
    ((4, 6, 5, 5), 9, (3, 3), 1, 1, 1, 3),
    ((2, 4, 6, 6), 4, (3, 3), 2, 1, 1, 4),
]


@pytest.mark.parametrize("variant", ["batch", "width", "im2col"])
@pytest.mark.parametrize("case", VARIANT_CASES, ids=[f"case{i}" for i in range(len(VARIANT_CASES))])
def test_every_conv_variant_of_the_cpu_backend_matches_dense(monkeypatch, case, variant):
    extension.load(extension.CPU)  # raises, naming why, when it cannot be built here
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, "cpu")
    x_shape, out_channels, kernel, stride, padding, dilation, groups = case
    weight, index, values = _compact(
        (out_channels, x_shape[1] // groups, *kernel), 0.4, torch.float32
    )
    x = torch.randn(x_shape, dtype=torch.float64)
    bias = torch.randn(out_channels, dtype=torch.float64)
    ours = [_leaf(x, torch.float32), _leaf(values, torch.float32), _leaf(bias, torch.float32)]

    def call():
        return compact_conv2d(
            ours[0], ours[1], index, ours[2], stride, padding, dilation, groups, variant
        )

    if variant == "im2col" and groups > 1:
        with pytest.raises(ValueError, match="im2col compact conv2d serves groups=1 only"):
            call()
        return
    y = call()
    truth = [_leaf(x, torch.float64), _leaf(weight, torch.float64), _leaf(bias, torch.float64)]
    y_truth = F.conv2d(*truth, stride, padding, dilation, groups)
    grad_y = torch.randn_like(y_truth)
    y.backward(grad_y.float())
    y_truth.backward(grad_y)
    _assert_close(y, y_truth, torch.float32)
    for got, want in zip(ours, truth):
        _assert_close(
            got.grad, index.gather(want.grad) if want is truth[1] else want.grad, torch.float32
        )


def test_compact_conv2d_takes_a_non_contiguous_input(backend_dtype):
    _, dtype = backend_dtype
    weight, index, values = _compact((5, 3, 3, 3), 0.5, torch.float64)
    x = torch.randn(4, 9, 3, 7, dtype=torch.float64).permute(0, 2, 3, 1)[..., ::2]  # (4, 3, 7, 5)
    leaf = _leaf(values, dtype)
    y = compact_conv2d(x.to(dtype), leaf, index, padding=1)
    _assert_close(y, F.conv2d(x, weight, padding=1), dtype)


def test_the_conv_plan_records_one_choice_per_input_shape():
    _, index, values = _compact((4, 3, 3, 3), 0.5, torch.float32)
    for batch in (64, 64, 1):
        compact_conv2d(torch.randn(batch, 3, 8, 8), values.float(), index, padding=1)
    assert sorted(index.conv_plan.choices.values()) in (
        ["batch", "width"],
        ["batch", "batch"],
        ["width", "width"],
    )
    assert len(index.conv_plan.choices) == 2
    with pytest.raises(ValueError, match="conv variant 'fast' is not one of batch, width, im2col"):
        compact_conv2d(torch.randn(1, 3, 8, 8), values.float(), index, variant="fast")
