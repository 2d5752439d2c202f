"""The one dispatch point: priority, forcing by environment, reasons, and per-call stickiness."""

import pytest
import torch

import sparse_tickets
from sparse_tickets import ops
from sparse_tickets.functional import masked_linear
from sparse_tickets.ops import dispatch
from sparse_tickets.ops.reference import ReferenceBackend


class Float64OnlyBackend(ReferenceBackend):
    """A real second backend (the reference maths, narrower support) that counts its calls."""

    name = "float64only"
    dtypes = frozenset({torch.float64})
    # Through the autograd Function, whose backward must reuse the forward's backend (the
    # reference's composed form has no backward of its own to dispatch).
    masked_linear_autograd = None

    def __init__(self):
        self.calls = []

    def masked_linear_forward(self, x, weight, mask, bias):
        self.calls.append("forward")
        return super().masked_linear_forward(x, weight, mask, bias)

    def masked_linear_backward(self, grad_y, x, weight, mask, has_bias, needs_grad):
        self.calls.append("backward")
        return super().masked_linear_backward(grad_y, x, weight, mask, has_bias, needs_grad)


@pytest.fixture
def two_backends(monkeypatch):
    """float64only ahead of reference in the priority list, for this test only."""
    monkeypatch.setattr(dispatch, "_REGISTRY", [ops.get("reference")])
    monkeypatch.delenv(ops.BACKEND_ENV_VAR, raising=False)
    return ops.register(Float64OnlyBackend(), before="reference")


def _linear_inputs(dtype):
    x = torch.randn(3, 4, dtype=dtype, requires_grad=True)
    weight = torch.randn(2, 4, dtype=dtype, requires_grad=True)
    return x, weight, torch.rand(2, 4) < 0.5


def test_reference_serves_every_float_dtype_on_cpu(monkeypatch):
    monkeypatch.delenv(ops.BACKEND_ENV_VAR, raising=False)
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        assert ops.select("masked_linear", [torch.ones(2, dtype=dtype)]).name == "reference"


def test_auto_selection_walks_priority_and_falls_through(two_backends):
    assert ops.registered_names() == ["float64only", "reference"]
    assert ops.select("masked_linear", [torch.ones(2, dtype=torch.float64)]) is two_backends
    assert ops.select("masked_linear", [torch.ones(2)]).name == "reference"


def test_forward_and_backward_use_the_same_backend(two_backends, monkeypatch):
    x, weight, mask = _linear_inputs(torch.float64)
    y = masked_linear(x, weight, mask)
    # Forcing another backend between forward and backward must not split the call.
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, "reference")
    y.sum().backward()
    assert two_backends.calls == ["forward", "backward"]


def test_environment_forces_a_backend(two_backends, monkeypatch):
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, "reference")
    x, weight, mask = _linear_inputs(torch.float64)
    masked_linear(x, weight, mask).sum().backward()
    assert two_backends.calls == []


def test_forced_backend_that_cannot_serve_lists_its_reasons(two_backends, monkeypatch):
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, "float64only")
    x, weight, mask = _linear_inputs(torch.float32)
    with pytest.raises(
        ops.BackendError,
        match=r"backend 'float64only' \(forced by "
        r"SPARSE_TICKETS_BACKEND\) cannot run masked_linear on float32 tensors "
        r"on cpu: dtype float32 not supported \(supports float64\)",
    ):
        masked_linear(x, weight, mask)


def test_forcing_an_unknown_backend_names_the_known_ones(monkeypatch):
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, "cutlass")
    with pytest.raises(
        ops.BackendError,
        match="unknown backend 'cutlass'; expected one of "
        "cpu, cuda, reference, "
        "semi_structured, triton",
    ):
        ops.select("masked_linear", [torch.ones(1)])


def test_no_backend_lists_every_rejection(monkeypatch):
    monkeypatch.delenv(ops.BACKEND_ENV_VAR, raising=False)
    with pytest.raises(ops.BackendError) as error:
        ops.select("masked_linear", [torch.ones(2, dtype=torch.int32)])
    assert "no backend can run masked_linear on int32 tensors on cpu" in str(error.value)
    assert "reference: dtype int32 not supported" in str(error.value)
    assert (
        "triton: serves only when forced with SPARSE_TICKETS_BACKEND=triton or opted in "
        "with SPARSE_TICKETS_OPT_IN=triton"
    ) in str(error.value)


def test_tensors_on_several_devices_are_a_reason():
    reasons = ops.get("reference").not_supported_reasons(
        "masked_linear", [torch.ones(1), torch.ones(1, device="meta")]
    )
    assert reasons == ["tensors are on several devices (cpu, meta)"]


def test_unavailable_backend_is_reported_and_never_selected(two_backends, monkeypatch):
    monkeypatch.setattr(
        Float64OnlyBackend, "unavailable_reason", lambda self: "compiled extension not built"
    )
    assert ops.select("masked_linear", [torch.ones(1, dtype=torch.float64)]).name == "reference"
    rows = {row.name: row for row in sparse_tickets.backends()}
    assert rows["float64only"].available is False
    assert rows["float64only"].reason == "compiled extension not built"
    assert "unavailable: compiled extension not built" in str(rows["float64only"])


def test_backends_report_lists_reference_first_class():
    (row,) = [r for r in sparse_tickets.backends() if r.name == "reference"]
    assert row.available and row.reason is None
    assert set(row.ops) == set(ops.OPS)
    assert {"cpu", "cuda"} <= set(row.device_types)
    assert set(row.dtypes) == {"float64", "float32", "float16", "bfloat16"}


def test_registering_twice_or_unknown_op_is_refused(two_backends):
    with pytest.raises(ValueError, match="already registered"):
        ops.register(Float64OnlyBackend())
    with pytest.raises(ops.BackendError, match="unknown op 'masked_matmul'"):
        ops.select("masked_matmul", [])


class OptInOnlyBackend(Float64OnlyBackend):
    """Serves float64 only, and only when forced or opted in."""

    name = "optinonly"
    auto_select = False


class LaterOptInBackend(OptInOnlyBackend):
    name = "lateroptin"


@pytest.fixture
def opt_in_backends(monkeypatch):
    """optinonly, then lateroptin, ahead of reference, for this test only; no variable set."""
    monkeypatch.setattr(dispatch, "_REGISTRY", [ops.get("reference")])
    monkeypatch.delenv(ops.BACKEND_ENV_VAR, raising=False)
    monkeypatch.delenv(ops.OPT_IN_ENV_VAR, raising=False)
    first = ops.register(OptInOnlyBackend(), before="reference")
    second = ops.register(LaterOptInBackend(), before="reference")
    return first, second


FLOAT64 = [torch.ones(2, dtype=torch.float64)]


def test_without_opt_in_such_backends_are_never_auto_selected(opt_in_backends):
    assert ops.select("masked_linear", FLOAT64).name == "reference"
    assert ops.opted_in_names() == frozenset()
    rows = {row.name: row for row in sparse_tickets.backends()}
    assert not rows["optinonly"].opted_in
    assert str(rows["optinonly"]).startswith(
        "optinonly       available (only when forced with SPARSE_TICKETS_BACKEND=optinonly or "
        "opted in with SPARSE_TICKETS_OPT_IN=optinonly); "
    )


def test_opting_in_makes_a_backend_selectable_and_others_fall_through(opt_in_backends, monkeypatch):
    first, _ = opt_in_backends
    monkeypatch.setenv(ops.OPT_IN_ENV_VAR, "optinonly")
    assert ops.select("masked_linear", FLOAT64) is first
    # float32 is not served by it: the call falls through to the next backend.
    assert ops.select("masked_linear", [torch.ones(2)]).name == "reference"
    x, weight, mask = _linear_inputs(torch.float64)
    masked_linear(x, weight, mask).sum().backward()
    assert first.calls == ["forward", "backward"]
    rows = {row.name: row for row in sparse_tickets.backends()}
    assert rows["optinonly"].opted_in and not rows["lateroptin"].opted_in
    assert "(auto-selected: opted in with SPARSE_TICKETS_OPT_IN)" in str(rows["optinonly"])


def test_opted_in_backends_keep_the_registry_priority(opt_in_backends, monkeypatch):
    first, second = opt_in_backends
    monkeypatch.setenv(ops.OPT_IN_ENV_VAR, " lateroptin , optinonly,, ")
    assert ops.opted_in_names() == frozenset({"optinonly", "lateroptin"})
    assert ops.select("masked_linear", FLOAT64) is first
    monkeypatch.setenv(ops.OPT_IN_ENV_VAR, "lateroptin")
    assert ops.select("masked_linear", FLOAT64) is second


def test_forcing_still_wins_over_opting_in(opt_in_backends, monkeypatch):
    monkeypatch.setenv(ops.OPT_IN_ENV_VAR, "optinonly")
    monkeypatch.setenv(ops.BACKEND_ENV_VAR, "reference")
    assert ops.select("masked_linear", FLOAT64).name == "reference"


def test_opting_in_an_unknown_backend_names_the_known_ones(opt_in_backends, monkeypatch):
    monkeypatch.setenv(ops.OPT_IN_ENV_VAR, "optinonly,cutlass")
    with pytest.raises(ops.BackendError) as error:
        ops.select("masked_linear", FLOAT64)
    assert str(error.value) == (
        "SPARSE_TICKETS_OPT_IN names unknown backend 'cutlass'; expected a comma-separated "
        "list of backend names (those that serve only when opted in: lateroptin, optinonly)"
    )
    # The report of the backends does not fail on it.
    assert [row.name for row in sparse_tickets.backends()] == [
        "optinonly",
        "lateroptin",
        "reference",
    ]


def test_an_empty_opt_in_changes_nothing(opt_in_backends, monkeypatch):
    monkeypatch.setenv(ops.OPT_IN_ENV_VAR, " ")
    assert ops.select("masked_linear", FLOAT64).name == "reference"


def test_opting_in_the_real_backends_leaves_cpu_calls_to_the_others(monkeypatch):
    # semi_structured serves CUDA half-precision 2:4 layers only: a CPU call falls through.
    monkeypatch.delenv(ops.BACKEND_ENV_VAR, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv(ops.OPT_IN_ENV_VAR, "triton,semi_structured")
    x, weight, mask = _linear_inputs(torch.float32)
    assert ops.select("masked_linear", [x, weight, mask]).name == "reference"


def test_a_compiled_call_reads_the_opt_in_without_a_warning(monkeypatch):
    # Masked layers traced by torch.compile select their backend inside the graph.
    import warnings

    monkeypatch.setenv(ops.OPT_IN_ENV_VAR, "triton")
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda x: x * len(dispatch.opted_in_names()), backend="eager", fullgraph=True
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert torch.equal(compiled(torch.ones(2)), torch.ones(2))
    assert not [str(w.message) for w in caught if "sparse_tickets" in str(w.message)]
