"""The contract of a backend: what it declares, and one typed signature per op method.

An op is a pair of methods (``<op>_forward``, ``<op>_backward``) or, for an optimizer step, one
method of the op's name (:data:`OP_METHODS`). A backend serves an op by defining all of its
methods, with exactly the signatures written here (the same argument names, order and kinds);
it serves no other op. ``Backend.ops`` is derived from the methods a class defines, so it
cannot disagree with them, and :func:`signature_problems` (checked when a backend is
registered, and by the tests for every registered backend) says where a signature drifted.

Conventions of every op: tensors arrive on one device, in one float dtype the backend lists in
``dtypes`` (masks are bool, of the weight's shape); a linear's input is 2-D (the autograd
Function flattens the leading dimensions); conv geometry is resolved to pairs of ints (the
functional layer turns ``"same"`` and ``"valid"`` into numbers); a backward returns
``(grad_input, grad_weight_or_values, grad_bias)`` with None for each gradient that
``needs_grad`` does not ask for. The reference backend (:mod:`.reference`) defines the numbers.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..formats.compact_index import CompactIndex

Pair = tuple[int, int]
# (input, weight or values, bias): which gradients the backward must return.
NeedsGrad = tuple[bool, bool, bool]
Gradients = tuple[Tensor | None, Tensor | None, Tensor | None]

# Every op a backend may serve, and the methods that serve it.
OP_METHODS = {
    "masked_linear": ("masked_linear_forward", "masked_linear_backward"),
    "masked_conv2d": ("masked_conv2d_forward", "masked_conv2d_backward"),
    "compact_linear": ("compact_linear_forward", "compact_linear_backward"),
    "compact_conv2d": ("compact_conv2d_forward", "compact_conv2d_backward"),
    "masked_sgd_step": ("masked_sgd_step",),
    "masked_adam_step": ("masked_adam_step",),
}
OPS = tuple(OP_METHODS)

# Optional one-call forms of a forward whose derivative is already attached (a step then runs
# no Python backward): attribute -> the forward whose signature it has.
AUTOGRAD_FORMS = {
    "masked_linear_autograd": "masked_linear_forward",
    "masked_conv2d_autograd": "masked_conv2d_forward",
    "compact_linear_autograd": "compact_linear_forward",
}


class Backend(abc.ABC):
    """What every backend declares (its name, devices and dtypes) and the op methods it serves.

    Subclass it, set ``name``, ``device_types`` and ``dtypes`` (class attributes or properties),
    define the methods of each op served, and add reasons in :meth:`not_supported_reasons`
    (shape limits, a minimum compute capability) and :meth:`unavailable_reason` (a missing
    compiler or GPU). The methods of an op not served are not defined: the base's raise
    NotImplementedError, and ``ops`` leaves the op out.
    """

    # False for a backend that serves only when forced or opted in: one not yet validated and
    # measured faster where auto-selection would pick it.
    auto_select: bool = True
    # Derived from the op methods a class defines (see __init_subclass__): never set by hand.
    ops: frozenset = frozenset()
    # The one-call forms of AUTOGRAD_FORMS, composed of torch's autograd or with a compiled
    # derivative; None: the autograd Functions of sparse_tickets.functional call the forward
    # and backward methods.
    masked_linear_autograd: Callable[..., Tensor] | None = None
    masked_conv2d_autograd: Callable[..., Tensor] | None = None
    compact_linear_autograd: Callable[..., Tensor] | None = None

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The name ``SPARSE_TICKETS_BACKEND`` forces it by; unique among the registered."""

    @property
    @abc.abstractmethod
    def device_types(self) -> frozenset:
        """The device types it serves (``"cpu"``, ``"cuda"``, ...)."""

    @property
    @abc.abstractmethod
    def dtypes(self) -> frozenset:
        """The float dtypes it serves (masks are bool whatever these are)."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "ops" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} sets ops; a backend serves the ops whose methods "
                f"it defines (see OP_METHODS), so define those instead"
            )
        cls.ops = frozenset(op for op in OPS if _defines_op(cls, op))

    # --- what it can serve ---------------------------------------------------------------

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run on this machine at all (None when it can)."""
        return None

    def not_supported_reasons(self, op: str, tensors: Sequence[Tensor]) -> list[str]:
        """Every reason this backend cannot serve ``op`` on ``tensors``; empty when it can.

        ``tensors`` are the call's tensors in the op's argument order, None entries dropped
        (``(x, weight, mask, bias)`` for a masked linear), or a few of them for a probe.
        """
        unavailable = self.unavailable_reason()
        if unavailable is not None:
            return [unavailable]
        if op not in self.ops:
            return [f"does not implement {op}"]
        if self._serves_kinds(tensors):  # the usual answer, without building any message
            return []
        reasons = []
        kinds = {(t.device, t.dtype) for t in tensors}
        devices = sorted({str(device) for device, _ in kinds})
        if len(devices) > 1:
            reasons.append(f"tensors are on several devices ({', '.join(devices)})")
        for device_type in sorted({device.type for device, _ in kinds} - self.device_types):
            reasons.append(
                f"device type {device_type} not supported (supports "
                f"{sorted_names(self.device_types)})"
            )
        float_dtypes = {dtype for _, dtype in kinds if dtype != torch.bool}
        for dtype in sorted(float_dtypes - self.dtypes, key=str):
            reasons.append(
                f"dtype {dtype_name(dtype)} not supported (supports "
                f"{sorted_names(dtype_name(d) for d in self.dtypes)})"
            )
        return reasons

    def _serves_kinds(self, tensors: Sequence[Tensor]) -> bool:
        # One device of a served type, every dtype served (bool masks aside): one pass over the
        # tensors, since an optimizer step asks about dozens at every step.
        if not tensors:
            return True
        device = tensors[0].device
        if device.type not in self.device_types:
            return False
        dtypes = self.dtypes
        for tensor in tensors:
            if tensor.device != device or (
                tensor.dtype not in dtypes and tensor.dtype != torch.bool
            ):
                return False
        return True

    # --- masked linear: x (N, in), weight and mask (out, in), bias (out,) or None ----------

    def masked_linear_forward(
        self, x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None
    ) -> Tensor:
        """``x @ (weight ⊙ mask)^T + bias``, of shape ``(N, out)``."""
        raise _not_implemented(self, "masked_linear")

    def masked_linear_backward(
        self,
        grad_y: Tensor,
        x: Tensor,
        weight: Tensor,
        mask: Tensor,
        has_bias: bool,
        needs_grad: NeedsGrad,
    ) -> Gradients:
        """``(dx (N, in), dW (out, in) exactly 0 where mask is False, db (out,))`` for
        ``grad_y`` of shape ``(N, out)``."""
        raise _not_implemented(self, "masked_linear")

    # --- masked conv2d: x (N, C, H, W), weight and mask (O, C / groups, kH, kW) -------------

    def masked_conv2d_forward(
        self,
        x: Tensor,
        weight: Tensor,
        mask: Tensor,
        bias: Tensor | None,
        stride: Pair,
        padding: Pair,
        dilation: Pair,
        groups: int,
    ) -> Tensor:
        """``conv2d(x, weight ⊙ mask, bias, stride, padding, dilation, groups)``, of shape
        ``(N, O, OH, OW)``."""
        raise _not_implemented(self, "masked_conv2d")

    def masked_conv2d_backward(
        self,
        grad_y: Tensor,
        x: Tensor,
        weight: Tensor,
        mask: Tensor,
        has_bias: bool,
        needs_grad: NeedsGrad,
        stride: Pair,
        padding: Pair,
        dilation: Pair,
        groups: int,
    ) -> Gradients:
        """``(dx (N, C, H, W), dW exactly 0 where mask is False, db (O,))`` for ``grad_y`` of
        shape ``(N, O, OH, OW)``."""
        raise _not_implemented(self, "masked_conv2d")

    # --- compact linear: values (nnz,) at index's kept entries of the (R, C) weight -------

    def compact_linear_forward(
        self, x: Tensor, values: Tensor, index: CompactIndex, bias: Tensor | None
    ) -> Tensor:
        """``x @ W^T + bias`` for ``x`` of shape ``(N, C)``, ``W`` holding ``values`` at
        ``index``'s kept entries: shape ``(N, R)``."""
        raise _not_implemented(self, "compact_linear")

    def compact_linear_backward(
        self,
        grad_y: Tensor,
        x: Tensor,
        values: Tensor,
        index: CompactIndex,
        has_bias: bool,
        needs_grad: NeedsGrad,
    ) -> Gradients:
        """``(dx (N, C), dvalues (nnz,) at the kept entries only, db (R,))`` for ``grad_y`` of
        shape ``(N, R)``."""
        raise _not_implemented(self, "compact_linear")

    # --- compact conv2d: values (nnz,) of the (O, C / groups, kH, kW) weight --------------

    def compact_conv2d_forward(
        self,
        x: Tensor,
        values: Tensor,
        index: CompactIndex,
        bias: Tensor | None,
        stride: Pair,
        padding: Pair,
        dilation: Pair,
        groups: int,
        variant: str,
    ) -> Tensor:
        """``conv2d(x, W, bias, ...)`` for ``x`` of shape ``(N, C, H, W)``: ``(N, O, OH,
        OW)``. ``variant`` (``"batch"``, ``"width"``, ``"im2col"``) names the kernel form;
        a backend with one form computes every variant with it."""
        raise _not_implemented(self, "compact_conv2d")

    def compact_conv2d_backward(
        self,
        grad_y: Tensor,
        x: Tensor,
        values: Tensor,
        index: CompactIndex,
        has_bias: bool,
        needs_grad: NeedsGrad,
        stride: Pair,
        padding: Pair,
        dilation: Pair,
        groups: int,
        variant: str,
    ) -> Gradients:
        """``(dx (N, C, H, W), dvalues (nnz,), db (O,))`` for ``grad_y`` of shape
        ``(N, O, OH, OW)``."""
        raise _not_implemented(self, "compact_conv2d")

    # --- optimizer steps: lists with one entry per parameter, updated in place ------------

    def masked_sgd_step(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        masks: list[Tensor | None],
        momentum_buffer_list: list[Tensor | None],
        *,
        weight_decay: float,
        momentum: float,
        lr: float,
        dampening: float,
        nesterov: bool,
        maximize: bool,
    ) -> None:
        """One step of ``torch.optim.SGD`` (``foreach=False``), then every pruned entry of each
        parameter and momentum buffer set to +0.0 (a None mask: unmasked). A None buffer is
        created on the parameter's first step with momentum and stored in the list."""
        raise _not_implemented(self, "masked_sgd_step")

    def masked_adam_step(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        masks: list[Tensor | None],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        max_exp_avg_sqs: list[Tensor],
        state_steps: list[Tensor],
        *,
        amsgrad: bool,
        beta1: float,
        beta2: float,
        lr: float,
        weight_decay: float,
        eps: float,
        maximize: bool,
        decoupled_weight_decay: bool,
    ) -> None:
        """One step of ``torch.optim.Adam`` (AdamW with ``decoupled_weight_decay``), then every
        pruned entry of each parameter and state tensor set to +0.0. ``state_steps`` (scalar
        tensors) are incremented here; ``max_exp_avg_sqs`` is read only with ``amsgrad``."""
        raise _not_implemented(self, "masked_adam_step")

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


def signature_problems(backend: Backend) -> list[str]:
    """Where the op methods and one-call forms ``backend`` defines differ from the contract's
    signatures (argument names, order, kinds and defaults); empty when none do."""
    problems = []
    for op in backend.ops:
        for method in OP_METHODS[op]:
            problems += _signature_problem(backend, method, method)
    for attribute, forward in AUTOGRAD_FORMS.items():
        if getattr(backend, attribute) is not None:
            problems += _signature_problem(backend, attribute, forward)
    return problems


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def sorted_names(items) -> str:
    return ", ".join(sorted(items))


def _signature_problem(backend: Backend, attribute: str, contract_method: str) -> list[str]:
    expected = _parameters(inspect.signature(getattr(Backend, contract_method)))[1:]  # no self
    actual = _parameters(inspect.signature(getattr(backend, attribute)))  # bound: no self
    if actual == expected:
        return []
    return [
        f"{backend.name}.{attribute}({_spelled(actual)}) differs from the contract's "
        f"({_spelled(expected)}), that of Backend.{contract_method}"
    ]


def _parameters(signature: inspect.Signature) -> list[tuple]:
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def _spelled(parameters: list[tuple]) -> str:
    words, keyword_only = [], False
    for name, kind, _ in parameters:
        if kind == inspect.Parameter.KEYWORD_ONLY and not keyword_only:
            words.append("*")
            keyword_only = True
        prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}.get(
            kind, ""
        )
        words.append(prefix + name)
    return ", ".join(words)


def _defines_op(cls: type, op: str) -> bool:
    """Whether ``cls`` defines every method of ``op`` (TypeError when only some of them)."""
    methods = OP_METHODS[op]
    defined = [m for m in methods if getattr(cls, m) is not getattr(Backend, m)]
    if defined and len(defined) < len(methods):
        missing = [m for m in methods if m not in defined]
        raise TypeError(
            f"{cls.__name__} defines {', '.join(defined)} but not "
            f"{', '.join(missing)}; op {op} needs all of {', '.join(methods)}"
        )
    return bool(defined)


def _not_implemented(backend: Backend, op: str) -> NotImplementedError:
    return NotImplementedError(
        f"backend {backend.name!r} does not implement {op} (it serves "
        f"{sorted_names(backend.ops) or 'no op'})"
    )
