"""The backend contract: one signature per op method, ops derived from the methods defined."""

import inspect

import pytest
import torch

from sparse_tickets import ops
from sparse_tickets.ops import dispatch
from sparse_tickets.ops.base import AUTOGRAD_FORMS, OP_METHODS, OPS, Backend, signature_problems
from sparse_tickets.ops.reference import ReferenceBackend

# Ids that never read as the cuda marker: checking a signature needs no GPU.
BACKENDS = pytest.mark.parametrize(
    "name", ops.registered_names(), ids=[f"{name}_backend" for name in ops.registered_names()]
)


def _contract(method):
    return list(inspect.signature(getattr(Backend, method)).parameters)[1:]  # without self


@BACKENDS
def test_every_registered_backend_follows_the_contracts_signatures(name):
    backend = ops.get(name)
    assert signature_problems(backend) == []
    for op in backend.ops:
        for method in OP_METHODS[op]:
            actual = inspect.signature(getattr(backend, method))
            assert list(actual.parameters) == _contract(method), f"{name}.{method}"
    for attribute, forward in AUTOGRAD_FORMS.items():
        form = getattr(backend, attribute)
        if form is not None:
            assert list(inspect.signature(form).parameters) == _contract(forward)


@BACKENDS
def test_a_backend_serves_exactly_the_ops_whose_methods_it_defines(name):
    backend = type(ops.get(name))
    for op in OPS:
        defined = [getattr(backend, m) is not getattr(Backend, m) for m in OP_METHODS[op]]
        assert all(defined) == (op in backend.ops) and any(defined) == all(defined), op


def test_the_reference_serves_every_op():
    assert ReferenceBackend.ops == frozenset(OPS)


def test_an_op_not_served_raises_naming_the_backend_and_the_op():
    x = torch.ones(2, 3)
    with pytest.raises(
        NotImplementedError,
        match=r"^backend 'semi_structured' does not "
        r"implement compact_linear \(it serves "
        r"masked_linear\)$",
    ):
        ops.get("semi_structured").compact_linear_forward(x, x, None, None)


def test_ops_cannot_be_set_by_hand():
    with pytest.raises(TypeError, match="sets ops; a backend serves the ops whose methods"):

        class Claims(ReferenceBackend):
            name = "claims"
            ops = frozenset({"masked_linear"})


def test_half_an_op_is_refused_when_the_class_is_made():
    with pytest.raises(
        TypeError,
        match=r"^Forward defines masked_linear_forward but not "
        r"masked_linear_backward; op masked_linear needs all",
    ):

        class Forward(Backend):
            name, device_types, dtypes = "forward", frozenset({"cpu"}), frozenset()

            def masked_linear_forward(self, x, weight, mask, bias):
                return x


def test_a_backend_without_name_devices_or_dtypes_cannot_be_made():
    class Nameless(Backend):
        def masked_sgd_step(
            self,
            params,
            grads,
            masks,
            momentum_buffer_list,
            *,
            weight_decay,
            momentum,
            lr,
            dampening,
            nesterov,
            maximize,
        ):
            pass

    with pytest.raises(TypeError, match="abstract"):
        Nameless()


class Drifted(ReferenceBackend):
    """The masked linear with its arguments in another order: what the contract forbids."""

    name = "drifted"

    def masked_linear_forward(self, x, mask, weight, bias=None):
        return super().masked_linear_forward(x, weight, mask, bias)


def test_a_drifted_signature_is_named_and_refused_at_registration(monkeypatch):
    monkeypatch.setattr(dispatch, "_REGISTRY", list(dispatch._REGISTRY))
    assert signature_problems(Drifted()) == [
        "drifted.masked_linear_forward(x, mask, weight, bias) differs from the contract's "
        "(x, weight, mask, bias), that of Backend.masked_linear_forward"
    ]
    with pytest.raises(
        TypeError,
        match=r"^backend 'drifted' does not follow the Backend "
        r"contract: drifted.masked_linear_forward",
    ):
        ops.register(Drifted())
    assert "drifted" not in ops.registered_names()


def test_a_backend_that_serves_no_op_is_refused(monkeypatch):
    class Idle(Backend):
        name, device_types, dtypes = "idle", frozenset({"cpu"}), frozenset({torch.float32})

    monkeypatch.setattr(dispatch, "_REGISTRY", list(dispatch._REGISTRY))
    with pytest.raises(ValueError, match="^backend 'idle' defines no op; expected the methods"):
        ops.register(Idle())
