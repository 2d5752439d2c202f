"""The semi_structured backend: its 2:4 check, the reasons it gives, its caches, and (on an sm80+
GPU) its numbers against the reference backend."""

import gc

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparse_tickets
from sparse_tickets import ops
from sparse_tickets.functional import masked_linear
from sparse_tickets.ops import semi_structured
from sparse_tickets.ops.semi_structured import (
    SemiStructuredBackend,
    is_two_four,
    weight_shape_reasons,
)

CUTLASS = torch.sparse.SparseSemiStructuredTensorCUTLASS
CUSPARSELT = torch.sparse.SparseSemiStructuredTensorCUSPARSELT
SM80 = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)
needs_sparse_tensor_cores = pytest.mark.skipif(
    not SM80, reason="needs a CUDA GPU with sparse tensor cores (compute capability 8.0+)"
)
HALF_TYPES = [torch.float16, torch.bfloat16]


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """The 2:4 magnitude mask: the 2 largest |w| of each 4 consecutive inputs of a row."""
    rows, cols = weight.shape
    groups = weight.detach().float().abs().reshape(rows, cols // 4, 4)
    keep = groups.topk(2, dim=-1).indices
    return (
        torch.zeros(groups.shape, dtype=torch.bool, device=weight.device)
        .scatter_(-1, keep, True)
        .reshape(rows, cols)
    )


def kept_per_group(mask: torch.Tensor) -> list:
    """Independent count, in plain Python: kept entries of each group of 4 of each row."""
    rows = mask.tolist()
    return [sum(row[i : i + 4]) for row in rows for i in range(0, len(row), 4)]


@pytest.fixture(autouse=True)
def _fresh_caches():
    semi_structured.clear_caches()
    yield
    semi_structured.clear_caches()


# --- the 2:4 check, on CPU tensors ----------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 4), (1, 64), (3, 8), (7, 12), (32, 64)])
def test_two_four_check_counts_every_group(shape):
    weight = torch.randn(shape)
    valid = two_four_mask(weight)
    assert max(kept_per_group(valid)) == 2
    assert is_two_four(valid)
    assert is_two_four(valid & (torch.rand(shape) < 0.5))  # fewer kept is still 2:4
    one_more = valid.clone()
    row, group = shape[0] // 2, shape[1] // 8
    free = [i for i in range(4 * group, 4 * group + 4) if not one_more[row, i]]
    one_more[row, free[0]] = True
    assert max(kept_per_group(one_more)) == 3
    assert not is_two_four(one_more)
    for _ in range(5):
        unstructured = torch.rand(shape) < 0.5
        assert is_two_four(unstructured) == (max(kept_per_group(unstructured)) <= 2)


@pytest.mark.parametrize("shape", [(1, 3), (2, 6), (5, 7), (4, 66)])
def test_rows_whose_length_is_not_a_multiple_of_four_are_not_two_four(shape):
    assert not is_two_four(torch.zeros(shape, dtype=torch.bool))


def test_two_four_check_of_empty_strided_and_bad_masks():
    assert is_two_four(torch.zeros(0, 8, dtype=torch.bool))
    assert is_two_four(torch.zeros(4, 8, dtype=torch.bool))
    assert not is_two_four(torch.ones(1, 4, dtype=torch.bool))
    # A transposed (non-contiguous) view is checked along its own rows.
    stored = two_four_mask(torch.randn(8, 16))
    assert is_two_four(stored.t()) == (max(kept_per_group(stored.t().contiguous())) <= 2)
    with pytest.raises(TypeError, match="mask must be a bool tensor; got torch.float32"):
        is_two_four(torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"mask must be 2-D .* got shape \(8,\)"):
        is_two_four(torch.ones(8, dtype=torch.bool))


# --- torch's shape constraints --------------------------------------------------------------


@pytest.mark.parametrize("layout", [CUTLASS, CUSPARSELT], ids=["cutlass", "cusparselt"])
@pytest.mark.parametrize("dtype", HALF_TYPES)
def test_weight_shapes_must_be_multiples_of_the_layout_block(layout, dtype):
    block = layout._DTYPE_SHAPE_CONSTRAINTS[dtype]
    rows, cols = block.sparse_min_rows, block.sparse_min_cols
    assert weight_shape_reasons((rows, cols), dtype, layout) == []
    assert weight_shape_reasons((3 * rows, 2 * cols), dtype, layout) == []
    for bad in [(rows, cols + 4), (rows + 1, cols), (0, cols), (rows, cols // 2)]:
        (reason,) = weight_shape_reasons(bad, dtype, layout)
        assert reason.startswith(f"weight {bad[0]}x{bad[1]} does not fit torch's 2:4")
        assert f"multiple of {rows}, in_features of {cols}" in reason


@pytest.mark.parametrize("layout", [CUTLASS, CUSPARSELT], ids=["cutlass", "cusparselt"])
def test_paper_layers_against_the_constraints(layout):
    # 4096x4096 fits every layout; LeNet-300-100's fc1 (300 x 784) none.
    assert weight_shape_reasons((4096, 4096), torch.float16, layout) == []
    assert weight_shape_reasons((300, 784), torch.bfloat16, layout) != []
    with pytest.raises(ValueError, match="shape must be"):
        weight_shape_reasons((4, 4, 4), torch.float16, layout)


# --- what the backend says on this machine --------------------------------------------------


def test_registered_first_and_only_when_asked():
    assert ops.registered_names()[0] == "semi_structured"
    backend = ops.get("semi_structured")
    assert isinstance(backend, SemiStructuredBackend) and not backend.auto_select
    assert backend.ops == frozenset({"masked_linear"})
    assert backend.dtypes == frozenset(HALF_TYPES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU makes the backend available")
def test_unavailable_without_a_gpu_and_listed_with_its_reason():
    backend = ops.get("semi_structured")
    x, weight = torch.randn(3, 64, dtype=torch.half), torch.randn(32, 64, dtype=torch.half)
    assert backend.not_supported_reasons("masked_linear", [x, weight, two_four_mask(weight)]) == [
        "no CUDA GPU"
    ]
    (row,) = [r for r in sparse_tickets.backends() if r.name == "semi_structured"]
    assert not row.available and row.reason == "no CUDA GPU"
    assert row.ops == ("masked_linear",) and row.device_types == ("cuda",)
    assert "opted in with SPARSE_TICKETS_OPT_IN=semi_structured" in str(row)


def test_forcing_it_on_cpu_tensors_fails_in_one_line(monkeypatch):
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, "semi_structured")
    weight = torch.randn(32, 64, dtype=torch.half)
    with pytest.raises(ops.BackendError) as error:
        masked_linear(torch.randn(3, 64, dtype=torch.half), weight, two_four_mask(weight))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(
        "backend 'semi_structured' (forced by SPARSE_TICKETS_BACKEND) "
        "cannot run masked_linear on float16 tensors on cpu: "
    )
    assert "no CUDA GPU" in message or "device type cpu not supported" in message


# --- its reasons and caches, exercised on CPU tensors ---------------------------------------


@pytest.fixture
def on_cpu(monkeypatch):
    """The backend with its device checks lifted, so its own reasons and caches run on CPU
    tensors; CUTLASS's block (32 x 64 for the half types) whatever this torch has."""
    backend = SemiStructuredBackend()
    monkeypatch.setattr(backend, "unavailable_reason", lambda: None)
    monkeypatch.setattr(backend, "device_types", frozenset({"cpu", "cuda"}))
    monkeypatch.setattr(semi_structured, "sparse_layout", lambda: CUTLASS)
    return backend


def _call(dtype=torch.float16, batch=3, out_features=32, in_features=64, mask=None):
    x = torch.randn(batch, in_features, dtype=dtype)
    weight = torch.randn(out_features, in_features, dtype=dtype)
    return x, weight, two_four_mask(weight) if mask is None else mask


def test_a_two_four_half_layer_is_served(on_cpu):
    for dtype in HALF_TYPES:
        assert on_cpu.not_supported_reasons("masked_linear", list(_call(dtype))) == []
    # A probe of device and dtype alone (as the benchmarks list providers) is answered too.
    assert (
        on_cpu.not_supported_reasons(
            "masked_linear", [torch.empty(0, dtype=torch.half), torch.empty(0, dtype=torch.bool)]
        )
        == []
    )


def test_each_reason_it_gives(on_cpu, monkeypatch):
    def reasons(*tensors):
        return on_cpu.not_supported_reasons("masked_linear", list(tensors))

    x, weight, mask = _call()
    assert reasons(x, weight, torch.rand(32, 64) < 0.5) == [
        "mask is not 2:4 (at most 2 kept in each group of 4 consecutive inputs of every row)"
    ]
    assert reasons(*_call(dtype=torch.float32)) == [
        "dtype float32 not supported (supports bfloat16, float16)"
    ]
    assert reasons(*_call(out_features=30)) == [
        "weight 30x64 does not fit torch's 2:4 cutlass kernels in float16 (out_features a "
        "positive multiple of 32, in_features of 64)"
    ]
    # in_features 66: the shape says it all; no 2:4 scan of a row that cannot be 2:4.
    (reason,) = reasons(*_call(in_features=66, mask=torch.zeros(32, 66, dtype=torch.bool)))
    assert reason.startswith("weight 32x66 does not fit")
    assert reasons(x[:0], weight, mask) == [
        "the input has no rows (torch's 2:4 matmul needs at least one)"
    ]
    assert on_cpu.not_supported_reasons("masked_conv2d", [x, weight, mask]) == [
        "does not implement masked_conv2d"
    ]
    monkeypatch.setattr(semi_structured, "device_capability", lambda device: (7, 5))
    assert reasons(x, weight, mask) == [
        "needs sparse tensor cores (compute capability 8.0+), found 7.5"
    ]


def test_the_mask_is_scanned_once_per_version(on_cpu, monkeypatch):
    scans = []
    real = semi_structured.is_two_four
    monkeypatch.setattr(semi_structured, "is_two_four", lambda mask: scans.append(1) or real(mask))
    x, weight, mask = _call()
    for _ in range(3):
        assert on_cpu.not_supported_reasons("masked_linear", [x, weight, mask]) == []
    assert len(scans) == 1
    mask[0, :4] = True  # in place: the version counter moves, and the mask is no longer 2:4
    assert on_cpu.not_supported_reasons("masked_linear", [x, weight, mask]) != []
    assert len(scans) == 2
    other = two_four_mask(weight)
    assert on_cpu.not_supported_reasons("masked_linear", [x, weight, other]) == []
    assert len(scans) == 3
    # A freed mask takes its entry with it.
    entries = len(semi_structured._TWO_FOUR)
    del mask, other
    gc.collect()
    assert len(semi_structured._TWO_FOUR) == entries - 2


@pytest.fixture
def counted_compression(monkeypatch):
    """``_compress`` replaced by the dense masked weight (F.linear takes either), counted."""
    calls = []

    def compress(weight, mask):
        calls.append(1)  # not the tensors: the test frees them
        return torch.where(mask, weight, torch.zeros((), dtype=weight.dtype))

    monkeypatch.setattr(semi_structured, "_compress", compress)
    return calls


def test_forward_compresses_once_per_weight_and_mask_version(on_cpu, counted_compression):
    x, weight, mask = _call(dtype=torch.float32)
    bias = torch.randn(32)

    def check():
        expected = x @ (weight * mask).t() + bias
        torch.testing.assert_close(on_cpu.masked_linear_forward(x, weight, mask, bias), expected)

    check()
    check()
    assert len(counted_compression) == 1
    with torch.no_grad():
        weight.mul_(2.0)  # an optimizer step: in place
    check()
    assert len(counted_compression) == 2
    mask.copy_(two_four_mask(torch.randn(32, 64)))  # set_mask: in place
    check()
    assert len(counted_compression) == 3
    mask = two_four_mask(torch.randn(32, 64))  # another mask tensor
    check()
    check()
    assert len(counted_compression) == 4
    weight.data = torch.randn(32, 64)  # a new storage, the version counter unmoved (.to())
    check()
    assert len(counted_compression) == 5
    # One entry per weight: the new mask replaced the old one's.
    assert len(semi_structured._COMPRESSED) == 1


def test_a_freed_weight_frees_its_compressed_copy(on_cpu, counted_compression):
    x, weight, mask = _call(dtype=torch.float32)
    on_cpu.masked_linear_forward(x, weight, mask, None)
    assert len(semi_structured._COMPRESSED) == 1
    del weight
    gc.collect()
    assert len(semi_structured._COMPRESSED) == 0


def test_inference_tensors_are_compressed_at_every_call(on_cpu, counted_compression):
    with torch.inference_mode():
        x, weight, mask = _call(dtype=torch.float32)
        for _ in range(2):
            on_cpu.masked_linear_forward(x, weight, mask, None)
    assert len(counted_compression) == 2
    assert len(semi_structured._COMPRESSED) == 0


def test_backward_is_the_reference_dense_maths(on_cpu):
    x, weight, mask = _call(dtype=torch.float64, batch=5)
    bias = torch.randn(32, dtype=torch.float64, requires_grad=True)
    grad_y = torch.randn(5, 32, dtype=torch.float64)
    grad_x, grad_weight, grad_bias = on_cpu.masked_linear_backward(
        grad_y, x, weight, mask, True, (True, True, True)
    )
    leaf_x, leaf_w = x.clone().requires_grad_(), weight.clone().requires_grad_()
    F.linear(leaf_x, leaf_w * mask, bias).backward(grad_y)
    torch.testing.assert_close(grad_x, leaf_x.grad)
    torch.testing.assert_close(grad_weight, leaf_w.grad)  # already 0 where pruned
    assert torch.all(grad_weight[~mask] == 0)
    torch.testing.assert_close(grad_bias, bias.grad)


# --- on an sm80+ GPU --------------------------------------------------------------------------


def _cuda_layer(dtype, out_features=64, in_features=128, bias=True):
    weight = torch.randn(out_features, in_features, device="cuda", dtype=dtype)
    mask = two_four_mask(weight)
    with torch.no_grad():
        weight.mul_(mask)
    b = torch.randn(out_features, device="cuda", dtype=dtype) if bias else None
    return weight, mask, b


def _run(monkeypatch, backend, x, weight, mask, bias, grad_y):
    """Output and gradients of masked_linear forced onto ``backend``."""
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, backend)
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight)]
    b = bias.detach().clone().requires_grad_() if bias is not None else None
    y = masked_linear(leaves[0], leaves[1], mask, b)
    y.backward(grad_y)
    return y.detach(), leaves[0].grad, leaves[1].grad, None if b is None else b.grad


@pytest.mark.cuda
@needs_sparse_tensor_cores
@pytest.mark.parametrize("dtype", HALF_TYPES)
@pytest.mark.parametrize("leading", [(1,), (13,), (2, 7)], ids=["batch1", "prime", "3d"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_matches_the_reference_on_the_gpu(monkeypatch, dtype, leading, bias):
    weight, mask, b = _cuda_layer(dtype, bias=bias)
    x = torch.randn(*leading, weight.shape[1], device="cuda", dtype=dtype)
    grad_y = torch.randn(*leading, weight.shape[0], device="cuda", dtype=dtype)
    ours = _run(monkeypatch, "semi_structured", x, weight, mask, b, grad_y)
    reference = _run(monkeypatch, "reference", x, weight, mask, b, grad_y)
    # Forward: our error against float64 at most about twice dense torch's in this precision.
    exact = F.linear(x.double(), (weight * mask).double(), None if b is None else b.double())
    ours_error = (ours[0].double() - exact).abs().max().item()
    torch_error = (reference[0].double() - exact).abs().max().item()
    floor = torch.finfo(dtype).eps * exact.abs().max().item()
    assert ours_error <= 2 * torch_error + floor, (ours_error, torch_error)
    # Backward: the reference's own maths.
    for got, expected in zip(ours[1:], reference[1:]):
        torch.testing.assert_close(got, expected)
    assert torch.all(ours[2][~mask] == 0)


@pytest.mark.cuda
@needs_sparse_tensor_cores
def test_gpu_cache_recompresses_after_a_weight_or_mask_change(monkeypatch):
    compressions = []
    real = semi_structured._compress
    monkeypatch.setattr(
        semi_structured,
        "_compress",
        lambda weight, mask: compressions.append(1) or real(weight, mask),
    )
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, "semi_structured")
    weight, mask, bias = _cuda_layer(torch.float16)
    x = torch.randn(9, weight.shape[1], device="cuda", dtype=torch.float16)

    def check():
        expected = F.linear(x.float(), (weight * mask).float(), bias.float())
        torch.testing.assert_close(
            masked_linear(x, weight, mask, bias).float(), expected, atol=2e-2, rtol=1e-2
        )

    check()
    check()
    assert len(compressions) == 1
    with torch.no_grad():
        weight.mul_(-0.5)
    check()
    assert len(compressions) == 2
    mask.copy_(two_four_mask(torch.randn_like(weight)))
    check()
    assert len(compressions) == 3


@pytest.mark.cuda
@needs_sparse_tensor_cores
def test_two_four_check_on_the_gpu_agrees_with_the_cpu():
    for mask in (two_four_mask(torch.randn(64, 128)), torch.rand(64, 128) < 0.5):
        assert is_two_four(mask.cuda()) == is_two_four(mask)


@pytest.mark.cuda
@needs_sparse_tensor_cores
def test_forcing_a_layer_it_cannot_serve_names_why(monkeypatch):
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, "semi_structured")
    weight = torch.randn(64, 128, device="cuda", dtype=torch.float16)
    x = torch.randn(4, 128, device="cuda", dtype=torch.float16)
    with pytest.raises(ops.BackendError, match="mask is not 2:4"):
        masked_linear(x, weight, torch.rand(64, 128, device="cuda") < 0.5)
    with pytest.raises(ops.BackendError, match="weight 30x128 does not fit"):
        masked_linear(x, weight[:30], two_four_mask(weight[:30]))


@pytest.mark.cuda
@needs_sparse_tensor_cores
def test_opted_in_model_uses_it_for_two_four_layers_only(monkeypatch):
    monkeypatch.delenv(ops.BACKEND_ENV_VAR, raising=False)
    # tanh, not ReLU: the two runs' outputs differ by rounding, which must not flip a unit.
    model = sparse_tickets.masked(nn.Sequential(nn.Linear(128, 64), nn.Tanh(), nn.Linear(64, 32)))
    model = model.to("cuda", torch.float16)
    first, second = model[0], model[2]
    for layer in (first, second):
        layer.set_mode("dense")
    first.set_mask(two_four_mask(first.weight))
    second.set_mask(torch.rand(32, 64, device="cuda") < 0.5)  # not 2:4
    x = torch.randn(6, 128, device="cuda", dtype=torch.float16)

    chosen = []
    real_select = ops.select

    def recording_select(op, tensors):
        backend = real_select(op, tensors)
        chosen.append(backend.name)
        return backend

    monkeypatch.setattr(ops, "select", recording_select)
    monkeypatch.setenv(ops.OPT_IN_ENV_VAR, "semi_structured")
    y = model(x)
    y.float().sum().backward()
    assert chosen[0] == "semi_structured"
    assert chosen[1] != "semi_structured"

    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    monkeypatch.delenv(ops.OPT_IN_ENV_VAR)
    chosen.clear()
    y_reference = model(x)
    y_reference.float().sum().backward()
    assert "semi_structured" not in chosen
    torch.testing.assert_close(y, y_reference, atol=3e-2, rtol=1e-2)
    for got, expected in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, expected, atol=3e-2, rtol=1e-2)
