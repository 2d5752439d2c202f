"""The Triton masked-linear kernels against the reference backend, through the public Function."""

import os
import subprocess
import sys

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
def test_forward_and_gradients_match_reference(
    shape, density, dtype, atol, rtol, monkeypatch, kernel_device
):
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
    monkeypatch.setattr(
        mm,
        "cached_block_occupancy",
        lambda m, r, c: torch.zeros_like(occupancy.block_occupancy(m, r, c)),
    )
    grad_y = torch.randn(5, 20, device=kernel_device)
    assert torch.equal(
        mm.masked_linear_weight_grad(grad_y, x, mask), torch.zeros(20, 18, device=kernel_device)
    )


def test_occupancy_table_matches_brute_force_at_ragged_edges():
    mask = torch.zeros(21, 7, dtype=torch.bool)
    mask[20, 6] = True  # the last, partial block on both axes
    mask[3, 0] = True
    table = occupancy.block_occupancy(mask, 8, 4)
    expected = torch.tensor([[1, 0], [0, 0], [0, 1]], dtype=torch.int8)
    assert table.dtype == torch.int8 and torch.equal(table, expected)


def test_occupancy_cache_is_reused_then_rebuilt_after_an_in_place_change(
    monkeypatch, kernel_device
):
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


def test_occupancy_cache_keeps_one_table_per_block_shape_and_drops_them_with_the_mask():
    occupancy.clear_occupancy_cache()
    mask = torch.ones(4, 4, dtype=torch.bool)
    by_two = occupancy.cached_block_occupancy(mask, 2, 2)
    by_four = occupancy.cached_block_occupancy(mask, 4, 4)
    assert by_two.shape == (2, 2) and by_four.shape == (1, 1)
    assert occupancy.cached_block_occupancy(mask, 2, 2) is by_two
    assert len(occupancy._CACHE) == 2
    del mask
    assert len(occupancy._CACHE) == 0


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
    torch.testing.assert_close(
        mm.masked_linear_forward(x, weight, mask.to(torch.uint8), bias),
        mm.masked_linear_forward(x, weight, mask, bias),
        atol=0,
        rtol=0,
    )


@pytest.mark.cuda
@pytest.mark.parametrize(
    "dtype,atol,rtol",
    [(torch.float32, 1e-4, 1e-4), (torch.float16, 2e-2, 2e-2), (torch.bfloat16, 1e-1, 5e-2)],
    ids=["fp32", "fp16", "bf16"],
)
def test_large_shapes_on_cuda(dtype, atol, rtol, monkeypatch):
    inputs = _inputs(509, 1000, 784, 0.2, dtype, "cuda")
    _assert_matches_reference(monkeypatch, *inputs, atol, rtol)


# Offsets past 2^31 elements, without 2^31 elements of work: views whose stride along one
# dimension is just over 2^30 elements put index 2 of that dimension past 2^31. triton passes
# such a stride as int32, so kernels that multiply it in int32 wrap; in int64 they do not.
_FAR_STRIDE = 2**30 + 7
# Every view starts 2^31 elements into its storage: an offset wrapped by 2^32 then still lands
# inside it, so 32-bit offsets read wrong numbers (the comparison fails) rather than crash.
_FAR_BASE = 2**31
_SLOT = 1024  # elements between the views that share one storage


class _FarViews:
    """2-D and 1-D views of size 3 along a far dimension, packed along the other one, in one
    reserved storage of about 2^32 elements. Only the pages the views write are backed by
    memory (a few MiB on the CPU); on a GPU the whole storage is allocated."""

    def __init__(self, dtype, device):
        self.storage = torch.empty(
            _FAR_BASE + 2 * _FAR_STRIDE + 8 * _SLOT, dtype=dtype, device=device
        )
        self.slots = 0

    def place(self, values: torch.Tensor, far_dim: int) -> torch.Tensor:
        assert values.shape[far_dim] == 3 and values.numel() <= 3 * _SLOT and self.slots < 8
        strides = [1] * values.dim()
        strides[far_dim] = _FAR_STRIDE
        view = self.storage.as_strided(values.shape, strides, _FAR_BASE + self.slots * _SLOT)
        self.slots += 1
        return view.copy_(values)


def _skip_unless_device_holds(device, nbytes):
    if device == "cuda" and torch.cuda.mem_get_info()[0] < nbytes:
        pytest.skip(f"needs {nbytes / 2**30:.0f} GiB of free GPU memory")


@pytest.mark.parametrize("far_dim", [0, 1], ids=["far-rows", "far-columns"])
def test_offsets_past_2_31_elements_do_not_wrap(far_dim, kernel_device):
    # far-rows: rows of x, grad_y, W, mask and bias lie 2^30 apart (index 2 past 2^31), which
    # the tile offsets of M and N and the weight gradient's loop over M multiply; far-columns:
    # columns of x, W, mask (K) and grad_y (N), which the loops over K and N and the tile
    # offsets of K and N multiply. Together every index * stride product of the three kernels.
    _skip_unless_device_holds(kernel_device, 13 * 2**30)
    dtype = torch.float16
    m, n, k = (3, 3, 6) if far_dim == 0 else (5, 3, 3)
    values, masks = _FarViews(dtype, kernel_device), _FarViews(torch.bool, kernel_device)
    x = torch.randn(m, k, dtype=dtype, device=kernel_device)
    weight = torch.randn(n, k, dtype=dtype, device=kernel_device)
    # Every row and column keeps some and prunes some: a mask read from the wrong place shows.
    mask = ((torch.arange(n)[:, None] + torch.arange(k)) % 3 != 0).to(kernel_device)
    bias = torch.randn(n, dtype=dtype, device=kernel_device)
    grad_y = torch.randn(m, n, dtype=dtype, device=kernel_device)
    x_far, weight_far = values.place(x, far_dim), values.place(weight, far_dim)
    mask_far, grad_y_far = masks.place(mask, far_dim), values.place(grad_y, far_dim)
    bias_far = values.place(bias, 0) if far_dim == 0 else bias
    assert x_far.stride(far_dim) * 2 >= 2**31  # the premise: index 2 lies past 2^31

    masked_weight = torch.where(mask, weight.float(), 0.0)
    expected = {
        "y": x.float() @ masked_weight.t() + bias.float(),
        "grad_x": grad_y.float() @ masked_weight,
        "grad_weight": torch.where(mask, grad_y.float().t() @ x.float(), 0.0),
    }
    got = {
        "y": mm.masked_linear_forward(x_far, weight_far, mask_far, bias_far),
        "grad_x": mm.masked_linear_input_grad(grad_y_far, weight_far, mask_far),
        "grad_weight": mm.masked_linear_weight_grad(grad_y_far, x_far, mask_far),
    }
    for name, tensor in got.items():
        torch.testing.assert_close(tensor.float(), expected[name], atol=1e-2, rtol=1e-2, msg=name)


def test_a_strided_bias_is_read_through_its_stride(kernel_device):
    x, weight, mask, _ = _inputs(4, 5, 6, 0.5, torch.float32, kernel_device)
    bias = torch.randn(10, device=kernel_device)[::2]
    expected = x @ torch.where(mask, weight, 0.0).t() + bias
    torch.testing.assert_close(mm.masked_linear_forward(x, weight, mask, bias), expected)


# Compiles the three kernels for a GPU (no GPU needed) with every size and stride an int32, as
# triton passes values below 2^31, and prints each tile address whose offsets are int32.
_LIST_INT32_TILE_OFFSETS = """
import re, warnings
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from sparse_tickets.kernels.triton import masked_matmul as mm
warnings.simplefilter("ignore")
tiles = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, INPUT_PRECISION="ieee", HAS_BIAS=True)
for autotuned in (mm._masked_linear_fwd_kernel, mm._masked_linear_input_grad_kernel,
                  mm._masked_linear_weight_grad_kernel):
    kernel = autotuned.fn
    names = kernel.arg_names
    constexprs = {(names.index(n),): v for n, v in tiles.items() if n in names}
    signature = {n: "constexpr" if n in tiles else
                 ("*i8" if n in ("mask_ptr", "occupancy_ptr") else "*fp16")
                 if n.endswith("_ptr") else "i32" for n in names}
    compiled = triton.compile(ASTSource(kernel, signature, constexprs),
                              target=GPUTarget("cuda", 90, 32),
                              options=dict(num_warps=1, num_stages=1))
    for line in re.findall(r"tt\\.addptr .*", compiled.asm["ttir"]):
        if re.search(r"tensor<[0-9x]+xi32>", line.split(":")[-1]):
            print(kernel.__name__, line.strip())
print("compiled")
"""


def test_compiled_kernels_address_every_tile_with_int64_offsets():
    # What the interpreter cannot show: the code a GPU runs, stores included. Compiled in a
    # process of its own, since the kernels here were made for the interpreter.
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", _LIST_INT32_TILE_OFFSETS],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "compiled\n", f"tile addresses with int32 offsets:\n{result.stdout}"


def _assert_edges_close(got: torch.Tensor, expected_rows, expected_cols):
    """The last two rows and columns of ``got``, the ones whose offsets lie past 2^31."""
    torch.testing.assert_close(got[-2:].float(), expected_rows, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(got[:, -2:].float(), expected_cols, atol=1e-2, rtol=1e-2)


@pytest.mark.cuda
def test_outputs_past_2_31_elements_on_cuda():
    # Small inputs, outputs of 65,536 x 32,769 = 2^31 + 2^16 elements: their last rows lie past
    # 2^31. With one input feature (or one row) each output is an outer product.
    _skip_unless_device_holds("cuda", 24 * 2**30)
    rows, cols, dtype = 65536, 32769, torch.float16
    a = torch.randn(rows, 1, dtype=dtype, device="cuda")
    b = torch.randn(cols, 1, dtype=dtype, device="cuda")
    keep_b = torch.rand(cols, 1, device="cuda") < 0.7
    masked_b = torch.where(keep_b, b, 0.0).float()

    y = mm.masked_linear_forward(a, b, keep_b)  # (rows, cols) = a @ (b ⊙ keep)^T
    _assert_edges_close(y, a[-2:].float() @ masked_b.t(), a.float() @ masked_b[-2:].t())
    del y
    grad_x = mm.masked_linear_input_grad(a, b.t(), keep_b.t())  # (rows, cols)
    _assert_edges_close(grad_x, a[-2:].float() @ masked_b.t(), a.float() @ masked_b[-2:].t())
    del grad_x
    # A (rows, cols) mask built without a (rows, cols) intermediate wider than a byte.
    keep_a = torch.rand(rows, 1, device="cuda") < 0.5
    mask = keep_a ^ keep_b.t()
    grad_weight = mm.masked_linear_weight_grad(a.t(), b.t(), mask)  # (rows, cols)
    outer = lambda r, c: a[r].float() @ b[c].float().t()  # noqa: E731
    _assert_edges_close(
        grad_weight,
        torch.where(mask[-2:], outer(slice(-2, None), slice(None)), 0.0),
        torch.where(mask[:, -2:], outer(slice(None), slice(-2, None)), 0.0),
    )


@pytest.mark.cuda
def test_more_feature_tiles_than_a_cuda_grid_y_axis_holds():
    # 65,535 tiles of the largest tile (128) plus one element: more than a grid's y axis takes,
    # at every tile the autotuner may pick.
    features = 65535 * 128 + 1
    one = torch.ones(1, 1, device="cuda")
    weight = torch.randn(features, 1, device="cuda")
    keep = torch.rand(features, 1, device="cuda") < 0.5
    masked = torch.where(keep, weight, 0.0)
    torch.testing.assert_close(mm.masked_linear_forward(one, weight, keep), masked.t())
    torch.testing.assert_close(mm.masked_linear_input_grad(one, weight.t(), keep.t()), masked.t())
    torch.testing.assert_close(mm.masked_linear_weight_grad(one, weight.t(), keep.t()), masked.t())
