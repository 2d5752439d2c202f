"""masked_linear / masked_conv2d against dense torch on the masked weight.

Low-precision results are judged the way flash-attention judges them: against a float64 ground
truth, our error may be at most about twice that of plain torch computing in the same dtype.
"""

import pytest
import torch
import torch.nn.functional as F

from sparse_tickets.functional import masked_conv2d, masked_linear
from tests.conftest import DEVICES

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]

# (x shape, out_features): primes, a single row, a single feature, extra leading dims.
LINEAR_SHAPES = [((1, 1), 1), ((7, 13), 5), ((3, 17), 31), ((2, 3, 11), 7), ((64, 37), 1)]


def _random_mask(shape, density, device="cpu"):
    return torch.rand(shape, device=device) < density


def _assert_close_to_truth(ours, lowp_torch, truth, slack=1e-6):
    """``ours`` is at most about twice as far from ``truth`` as plain torch in the same dtype."""
    if ours is None or truth is None:
        assert ours is None and truth is None
        return
    assert ours.dtype == lowp_torch.dtype and ours.shape == truth.shape
    ours_error = (ours.double() - truth).abs().max().item()
    torch_error = (lowp_torch.double() - truth).abs().max().item()
    scale = truth.abs().max().item() + 1.0
    assert ours_error <= 2 * torch_error + slack * scale, (ours_error, torch_error)


def _leaf(t, dtype):
    return None if t is None else t.detach().to(dtype).clone().requires_grad_()


def _grads(y, grad_y, *inputs):
    y.backward(grad_y)
    return [None if t is None else t.grad for t in inputs]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape,out_features", LINEAR_SHAPES)
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("with_bias", [True, False])
def test_masked_linear_matches_dense_on_masked_weight(
    device, dtype, x_shape, out_features, density, with_bias
):
    in_features = x_shape[-1]
    x = torch.randn(x_shape, dtype=torch.float64, device=device)
    weight = torch.randn(out_features, in_features, dtype=torch.float64, device=device)
    mask = _random_mask(weight.shape, density, device)
    bias = torch.randn(out_features, dtype=torch.float64, device=device) if with_bias else None
    grad_y = torch.randn(*x_shape[:-1], out_features, dtype=torch.float64, device=device)

    def run(fn, precision):
        xs, ws, bs = (_leaf(t, precision) for t in (x, weight, bias))
        y = fn(xs, ws, mask, bs)
        return [y.detach(), *_grads(y, grad_y.to(precision), xs, ws, bs)]

    def dense(x_, w_, m_, b_):
        return F.linear(x_, w_ * m_, b_)

    truth = run(dense, torch.float64)
    truth[2] = truth[2] * mask  # the masked weight gradient
    lowp = run(dense, dtype)
    lowp[2] = lowp[2] * mask
    for got, plain, exact in zip(run(masked_linear, dtype), lowp, truth):
        _assert_close_to_truth(got, plain, exact)


@pytest.mark.parametrize("device", DEVICES)
def test_masked_linear_weight_grad_is_exactly_zero_where_pruned(device):
    x = torch.randn(9, 23, device=device)
    weight = torch.randn(13, 23, device=device, requires_grad=True)  # pruned entries NOT zeroed
    mask = _random_mask(weight.shape, 0.5, device)
    masked_linear(x, weight, mask).pow(2).sum().backward()
    assert torch.equal(weight.grad[~mask], torch.zeros_like(weight.grad[~mask]))
    assert (weight.grad[mask] != 0).any()


def test_masked_linear_ignores_values_at_pruned_positions():
    x = torch.randn(5, 8)
    weight = torch.randn(3, 8)
    mask = _random_mask(weight.shape, 0.5)
    poisoned = weight.masked_fill(~mask, float("nan"))
    torch.testing.assert_close(
        masked_linear(x, poisoned, mask), F.linear(x, weight.masked_fill(~mask, 0)), rtol=0, atol=0
    )


def test_masked_linear_gradcheck_float64():
    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    mask = _random_mask(weight.shape, 0.6)
    # Finite differences see the unmasked function of W; compare through W ⊙ M so that pruned
    # entries (whose true gradient we define as 0) are outside the check.
    assert torch.autograd.gradcheck(
        lambda x_, w_, b_: masked_linear(x_, w_ * mask, mask, b_), (x, weight, bias)
    )
    assert torch.autograd.gradcheck(lambda x_, b_: masked_linear(x_, weight, mask, b_), (x, bias))


def test_masked_linear_only_requested_grads():
    x = torch.randn(3, 4)
    weight = torch.randn(2, 4, requires_grad=True)
    masked_linear(x, weight, torch.ones_like(weight, dtype=torch.bool)).sum().backward()
    assert x.grad is None and weight.grad is not None


@pytest.mark.parametrize("op", ["linear", "conv2d"])
def test_an_all_true_mask_is_the_plain_op_and_a_later_in_place_prune_is_seen(op):
    # An all-true mask takes torch's own op (nothing to mask); pruning the same mask tensor in
    # place afterwards must be seen by the very next call, output and gradient.
    if op == "linear":
        x, weight = torch.randn(6, 9), torch.randn(4, 9, requires_grad=True)
        call, plain = masked_linear, F.linear
    else:
        x, weight = torch.randn(2, 3, 7, 7), torch.randn(4, 3, 3, 3, requires_grad=True)
        call, plain = masked_conv2d, F.conv2d
    mask = torch.ones_like(weight, dtype=torch.bool)
    y = call(x, weight, mask)
    assert torch.equal(y, plain(x, weight))
    y.sum().backward()
    full_grad = weight.grad.clone()
    weight.grad = None
    mask.view(-1)[::2] = False
    y = call(x, weight, mask)
    torch.testing.assert_close(y, plain(x, weight.detach() * mask), rtol=0, atol=0)
    y.sum().backward()
    assert torch.equal(weight.grad[~mask], torch.zeros_like(weight.grad[~mask]))
    torch.testing.assert_close(weight.grad[mask], full_grad[mask])


@pytest.mark.parametrize("op", ["linear", "conv2d"])
def test_the_composed_reference_path_is_bitwise_the_reference_function(op):
    # What a step runs (torch's autograd around an exact masked weight) against the autograd
    # Function over the reference's forward and backward: the same bits, NaN in pruned entries
    # included.
    from sparse_tickets import functional, ops

    reference = ops.get("reference")
    if op == "linear":
        x, weight = torch.randn(6, 9), torch.randn(4, 9)
        bias = torch.randn(4)
        function, composed = functional.MaskedLinearFunction, functional.masked_linear
        extra = ()
    else:
        x, weight = torch.randn(2, 3, 7, 7), torch.randn(4, 3, 3, 3)
        bias = torch.randn(4)
        function, composed = functional.MaskedConv2dFunction, functional.masked_conv2d
        extra = ((1, 1), (1, 1), (1, 1), 1)
    mask = torch.rand(weight.shape) < 0.4
    weight[~mask] = float("nan")
    results = []
    for run in ("function", "composed"):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        if run == "function":
            y = function.apply(leaves[0], leaves[1], mask, leaves[2], *extra, reference)
        else:
            y = composed(leaves[0], leaves[1], mask, leaves[2], *extra)
        y.backward(torch.ones_like(y))
        results.append([y] + [leaf.grad for leaf in leaves])
    for got, want in zip(*results):
        assert torch.equal(got, want)


CONV_CASES = [
    # (N, C_in, H, W), (C_out, kH, kW), stride, padding, dilation, groups
    ((1, 1, 5, 5), (1, 1, 1), 1, 0, 1, 1),
    ((2, 3, 7, 11), (5, 3, 3), 1, 1, 1, 1),
    ((3, 4, 13, 9), (6, 3, 2), (2, 1), (1, 0), 1, 2),
    ((2, 2, 17, 17), (3, 5, 5), 3, 2, 2, 1),
    ((1, 6, 8, 10), (6, 3, 3), 1, "same", (1, 2), 3),
    ((2, 3, 9, 9), (4, 4, 2), 1, "same", 1, 1),  # even kernel: uneven "same" padding
    ((2, 3, 9, 9), (4, 3, 3), 2, "valid", 1, 1),
]


def _conv_args(case, device):
    x_shape, (c_out, kh, kw), stride, padding, dilation, groups = case
    weight_shape = (c_out, x_shape[1] // groups, kh, kw)
    return (
        x_shape,
        weight_shape,
        dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_masked_conv2d_matches_dense_on_masked_weight(device, dtype, case, with_bias):
    x_shape, weight_shape, geometry = _conv_args(case, device)
    x = torch.randn(x_shape, dtype=torch.float64, device=device)
    weight = torch.randn(weight_shape, dtype=torch.float64, device=device)
    mask = _random_mask(weight.shape, 0.4, device)
    bias = torch.randn(weight_shape[0], dtype=torch.float64, device=device) if with_bias else None

    def run(masked_op, precision):
        leaves = [_leaf(t, precision) for t in (x, weight, bias)]
        if masked_op:
            y = masked_conv2d(leaves[0], leaves[1], mask, leaves[2], **geometry)
        else:
            y = F.conv2d(leaves[0], leaves[1] * mask, leaves[2], **geometry)
        grad_y = torch.randn(
            y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
        ).to(device, precision)
        grads = _grads(y, grad_y, *leaves)
        if not masked_op:
            grads[1] = grads[1] * mask
        return [y.detach(), *grads]

    truth = run(False, torch.float64)
    for got, plain, exact in zip(run(True, dtype), run(False, dtype), truth):
        _assert_close_to_truth(got, plain, exact)


def test_masked_conv2d_weight_grad_is_exactly_zero_where_pruned():
    x = torch.randn(2, 3, 8, 8)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    mask = _random_mask(weight.shape, 0.5)
    masked_conv2d(x, weight, mask, padding=1).pow(2).sum().backward()
    assert torch.equal(weight.grad[~mask], torch.zeros_like(weight.grad[~mask]))


def test_masked_conv2d_gradcheck_float64():
    # Small on purpose: gradcheck runs a forward per input element and a backward per output
    # element; 4x5 images still take the stride, the padding and the dilation at both edges.
    x = torch.randn(2, 4, 4, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    mask = _random_mask(weight.shape, 0.5)
    assert torch.autograd.gradcheck(
        lambda x_, w_, b_: masked_conv2d(
            x_, w_ * mask, mask, b_, stride=(2, 1), padding=1, dilation=(1, 2), groups=2
        ),
        (x, weight, bias),
    )


def test_masked_conv2d_unbatched_input():
    x = torch.randn(3, 6, 6)
    weight = torch.randn(2, 3, 3, 3)
    mask = _random_mask(weight.shape, 0.5)
    torch.testing.assert_close(
        masked_conv2d(x, weight, mask, padding=1), F.conv2d(x, weight * mask, padding=1)
    )


FULL = torch.ones(4, 3, dtype=torch.bool)


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: masked_linear(torch.randn(2, 3), torch.randn(4, 3), FULL[:, :2]),
            "mask has shape (4, 2); expected the weight's shape (4, 3)",
        ),
        (
            lambda: masked_linear(torch.randn(2, 3), torch.randn(4, 3), torch.ones(4, 3)),
            "mask must be a bool tensor; got torch.float32",
        ),
        (
            lambda: masked_linear(
                torch.randn(2, 3),
                torch.randn(4, 3),
                torch.ones(4, 3, dtype=torch.bool, device="meta"),
            ),
            "mask is on meta; expected the weight's device cpu",
        ),
        (
            lambda: masked_linear(torch.randn(2, 5), torch.randn(4, 3), FULL),
            "input has shape (2, 5); expected (*, 3)",
        ),
        (
            lambda: masked_linear(torch.randn(2, 3), torch.randn(4, 3), FULL, torch.randn(3)),
            "bias has shape (3,); expected (4,)",
        ),
        (
            lambda: masked_conv2d(
                torch.randn(1, 2, 5, 5),
                torch.randn(3, 3, 3, 3),
                torch.ones(3, 3, 3, 3, dtype=torch.bool),
            ),
            "input has shape (1, 2, 5, 5); expected (N, 3, H, W)",
        ),
        (
            lambda: masked_conv2d(
                torch.randn(1, 3, 5, 5),
                torch.randn(3, 3, 3, 3),
                torch.ones(3, 3, 3, 3, dtype=torch.bool),
                stride=2,
                padding="same",
            ),
            "padding='same' needs stride 1",
        ),
        (
            lambda: masked_conv2d(
                torch.randn(1, 4, 5, 5),
                torch.randn(3, 2, 3, 3),
                torch.ones(3, 2, 3, 3, dtype=torch.bool),
                groups=2,
            ),
            "groups=2 must be a positive int dividing out_channels=3",
        ),
    ],
)
def test_bad_inputs_give_one_line_errors(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value) and "\n" not in str(error.value)
