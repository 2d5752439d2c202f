"""The Triton masked-linear kernels against the reference backend, through the public Function."""

import pytest
import torch

from sparse_tickets import ops
from sparse_tickets.functional import masked_linear
from tests.conftest import import_triton_or_skip

import_triton_or_skip()  # required where it has wheels: fails there, never skips
from sparse_tickets.kernels.triton import masked_matmul as mm  # noqa: E402  (after the guard)
from sparse_tickets.kernels.triton import occupancy  # noqa: E402

# Awkward on purpose against the 16 tile of the interpreter and the 32-128 tiles on a GPU:
# one element, one row, K below the tile, primes, non-multiples of every tile.
SHAPES = [(1, 1, 1), (1, 17, 5), (13, 7, 3), (37, 45, 67), (31, 2, 19)]
DENSITIES = [0.0, 0.3, 1.0]
# (dtype, atol, rtol): fp32 is pinned to ieee products, so only the summation order differs.
TOLERANCES = [(torch.float32, 1e-5, 1e-5), (torch.float16, 1e-2, 1e-2)]


def _inputs(batch, out_features, in_features, density, dtype, device, bias=True):
    x = torch.randn(batch, in_features, dtype=dtype, device=device)
    weight = torch.randn(out_features, in_features, dtype=dtype, device=device)
    mask = torch.rand(out_features, in_features, device=device) < density
    b = torch.randn(out_features, dtype=dtype, device=device) if bias else None
    return x, weight, mask, b


def _run(backend, monkeypatch, x, weight, mask, bias):
    """Output and gradients of masked_linear on ``backend``, for a fixed upstream gradient."""
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, backend)
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight)]
    b = None if bias is None else bias.detach().clone().requires_grad_()
    y = masked_linear(leaves[0], leaves[1], mask, b)
    grad_y = torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).reshape(y.shape)
    y.backward(grad_y)
    return y.detach(), leaves[0].grad, leaves[1].grad, None if b is None else b.grad


def _assert_matches_reference(monkeypatch, x, weight, mask, bias, atol, rtol):
    ours = _run("triton", monkeypatch, x, weight, mask, bias)
    reference = _run("reference", monkeypatch, x, weight, mask, bias)
    for name, got, expected in zip(("y", "grad_x", "grad_weight", "grad_bias"), ours, reference):
        if expected is None:
            assert got is None, name
            continue
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        torch.testing.assert_close(got, expected, atol=atol, rtol=rtol, msg=name)
    # Semantics, not tolerance: a pruned weight's gradient is exactly +0.0.
    grad_weight = ours[2]
    assert torch.equal(grad_weight[~mask], torch.zeros_like(grad_weight[~mask]))
    assert not torch.signbit(grad_weight[~mask]).any()


@pytest.mark.parametrize("dtype,atol,rtol", TOLERANCES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_and_gradients_match_reference(shape, density, dtype, atol, rtol, monkeypatch,
                                               kernel_device):
    inputs = _inputs(*shape, density, dtype, kernel_device, bias=True)
    _assert_matches_reference(monkeypatch, *inputs, atol, rtol)


@pytest.mark.parametrize("dtype,atol,rtol", TOLERANCES, ids=["fp32", "fp16"])
def test_without_bias_and_with_leading_dims(dtype, atol, rtol, monkeypatch, kernel_device):
    x, weight, mask, _ = _inputs(1, 19, 23, 0.3, dtype, kernel_device, bias=False)
    x = torch.randn(2, 3, 23, dtype=dtype, device=kernel_device)
    _assert_matches_reference(monkeypatch, x, weight, mask, None, atol, rtol)


def test_non_contiguous_operands_are_read_through_strides(monkeypatch, kernel_device):
    x = torch.randn(21, 18, device=kernel_device).t()  # (18, 21), column-major
    weight = torch.randn(21, 11, device=kernel_device).t()  # (11, 21)
    mask = (torch.rand(21, 11, device=kernel_device) < 0.5).t()
    bias = torch.randn(22, device=kernel_device)[::2]
    _assert_matches_reference(monkeypatch, x, weight, mask, bias, 1e-5, 1e-5)


def test_pruned_weights_holding_nan_do_not_leak(monkeypatch, kernel_device):
    x, weight, mask, bias = _inputs(9, 20, 18, 0.3, torch.float32, kernel_device)
    weight = weight.masked_fill(~mask, float("nan"))
    y, grad_x, grad_weight, _ = _run("triton", monkeypatch, x, weight, mask, bias)
    assert torch.isfinite(y).all() and torch.isfinite(grad_x).all()
    assert torch.isfinite(grad_weight).all()


def _block_sparse_mask(rows_of_blocks, cols_of_blocks, device):
    """A mask of whole weight-gradient tiles, every other one empty, ragged at the far edges."""
    block_n, block_k = mm.weight_grad_block()
    rows, cols = rows_of_blocks * block_n - 3, cols_of_blocks * block_k - 5
    tile_kept = torch.arange(rows_of_blocks)[:, None] + torch.arange(cols_of_blocks)[None, :]
    tile_kept = (tile_kept % 2 == 0).to(device)
    mask = tile_kept.repeat_interleave(block_n, 0).repeat_interleave(block_k, 1)[:rows, :cols]
    return mask & (torch.rand(rows, cols, device=device) < 0.7), tile_kept


def test_block_skip_gives_exact_zeros_and_matches_reference(monkeypatch, kernel_device):
    mask, tile_kept = _block_sparse_mask(3, 2, kernel_device)
    block_n, block_k = mm.weight_grad_block()
    assert torch.equal(occupancy.block_occupancy(mask, block_n, block_k).bool(), tile_kept)
    x, weight, _, bias = _inputs(7, *mask.shape, 1.0, torch.float32, kernel_device)
    _assert_matches_reference(monkeypatch, x, weight, mask, bias, 1e-5, 1e-5)


def test_weight_grad_kernel_skips_the_tiles_the_table_marks_empty(monkeypatch, kernel_device):
    # A full mask with a table claiming every tile empty: only a skipped reduction gives zeros.
    x, weight, mask, _ = _inputs(5, 20, 18, 1.0, torch.float32, kernel_device)
    monkeypatch.setattr(mm, "cached_block_occupancy",
                        lambda m, r, c: torch.zeros_like(occupancy.block_occupancy(m, r, c)))
    grad_y = torch.randn(5, 20, device=kernel_device)
    assert torch.equal(mm.masked_linear_weight_grad(grad_y, x, mask), torch.zeros(20, 18,
                                                                                  device=kernel_device))


def test_occupancy_table_matches_brute_force_at_ragged_edges():
    mask = torch.zeros(21, 7, dtype=torch.bool)
    mask[20, 6] = True  # the last, partial block on both axes
    mask[3, 0] = True
    table = occupancy.block_occupancy(mask, 8, 4)
    expected = torch.tensor([[1, 0], [0, 0], [0, 1]], dtype=torch.int8)
    assert table.dtype == torch.int8 and torch.equal(table, expected)


def test_occupancy_cache_is_reused_then_rebuilt_after_an_in_place_change(monkeypatch,
                                                                          kernel_device):
    occupancy.clear_occupancy_cache()
    block_n, block_k = mm.weight_grad_block()
    mask = torch.ones(2 * block_n, 2 * block_k, dtype=torch.bool, device=kernel_device)
    first = occupancy.cached_block_occupancy(mask, block_n, block_k)
    assert occupancy.cached_block_occupancy(mask, block_n, block_k) is first
    assert first.bool().all()

    mask[:block_n, :block_k] = False  # pruning in place, as set_mask does
    rebuilt = occupancy.cached_block_occupancy(mask, block_n, block_k)
    assert rebuilt is not first and rebuilt.tolist() == [[0, 1], [1, 1]]
    # And the kernels see the new mask: gradients still match the reference.
    x, weight, _, bias = _inputs(6, *mask.shape, 1.0, torch.float32, kernel_device)
    _assert_matches_reference(monkeypatch, x, weight, mask, bias, 1e-5, 1e-5)


def test_occupancy_cache_does_not_trust_a_reused_address():
    occupancy.clear_occupancy_cache()
    mask = torch.ones(4, 4, dtype=torch.bool)
    occupancy.cached_block_occupancy(mask, 2, 2)
    other = torch.zeros(4, 4, dtype=torch.bool)  # a different tensor under the same key
    key = next(iter(occupancy._CACHE))
    owner, version, table = occupancy._CACHE.pop(key)
    occupancy._CACHE[(other.data_ptr(),) + key[1:]] = (owner, other._version, table)
    assert not occupancy.cached_block_occupancy(other, 2, 2).any()


def test_launchers_reject_bad_operands_in_one_line(kernel_device):
    x, weight, mask, bias = _inputs(3, 4, 5, 0.5, torch.float32, kernel_device)
    with pytest.raises(TypeError, match="mask must be a bool or uint8 tensor; got torch.float32"):
        mm.masked_linear_forward(x, weight, mask.float(), bias)
    with pytest.raises(ValueError, match=r"x has shape \(3, 5\); expected \(3, 6\)"):
        mm.masked_linear_forward(x, torch.randn(4, 6, device=kernel_device), mask, bias)
    with pytest.raises(ValueError, match="weight is torch.float16"):
        mm.masked_linear_input_grad(torch.randn(3, 4, device=kernel_device), weight.half(), mask)
    with pytest.raises(ValueError, match=r"mask has shape \(5, 4\)"):
        mm.masked_linear_weight_grad(torch.randn(3, 4, device=kernel_device), x, mask.t())


def test_uint8_masks_are_read_like_bool(kernel_device):
    x, weight, mask, bias = _inputs(6, 9, 10, 0.4, torch.float32, kernel_device)
    torch.testing.assert_close(mm.masked_linear_forward(x, weight, mask.to(torch.uint8), bias),
                               mm.masked_linear_forward(x, weight, mask, bias), atol=0, rtol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,atol,rtol", [(torch.float32, 1e-4, 1e-4),
                                             (torch.float16, 2e-2, 2e-2),
                                             (torch.bfloat16, 1e-1, 5e-2)],
                         ids=["fp32", "fp16", "bf16"])
def test_large_shapes_on_cuda(dtype, atol, rtol, monkeypatch):
    inputs = _inputs(509, 1000, 784, 0.2, dtype, "cuda")
    _assert_matches_reference(monkeypatch, *inputs, atol, rtol)
