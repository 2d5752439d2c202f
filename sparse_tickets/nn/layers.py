"""MaskedLinear and MaskedConv2d: nn.Linear / nn.Conv2d that carry a pruning mask.

Where ``mask`` is False the weight is exactly 0.0, always: after ``set_mask``, after loading a
state_dict, after ``reset_parameters``; the masked optimizers keep it so after every step, and
the forward computes with ``weight ⊙ mask`` regardless, so a stray write cannot leak into outputs.

Two execution modes (``layer.mode``), chosen at every mask change (:mod:`..compact.choice`):

- ``"dense"``: the Parameter ``weight`` is the dense weight; the kernels apply the mask.
- ``"compact"``: the Parameter is ``values``, the kept weights only (``weight[mask]``), with an
  index of the mask in non-persistent buffers (``compact_*``), so forward, backward and the
  optimizer step cost O(kept weights). ``layer.weight`` still reads as the dense weight
  (rebuilt from ``values`` at each read, differentiably), and the state_dict holds ``weight``
  exactly as in dense mode, so checkpoints, pruning, rewinding and export do not depend on the
  mode. Writing into ``layer.weight`` in place does not reach ``values``: load a state_dict, or
  ``set_mode("dense")`` first. Switching modes changes no value; a masked optimizer built on the
  model follows the switch (see :mod:`sparse_tickets.optim`). The index is built at the mode or
  mask change and at every move of its buffers, never in a forward, so a forward compiled right
  after a change needs nothing eager first.

On the meta device (a model built there to be materialised later) a layer propagates shapes,
and its mask is a full one that ``to_empty`` makes all True (:class:`~.mask.MetaFullMask`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import functional
from ..compact import choice
from ..compact.calibration import LayerSpec
from ..formats import INDEX_FIELDS, CompactIndex, ConvPlan
from . import owners
from .mask import count_kept, full_mask_like, materialised_mask, validate_mask

_INDEX_BUFFERS = tuple(f"compact_{field}" for field in INDEX_FIELDS)
# The conv plan of an index made inside a compiled graph, which never reads it: the compiled
# op chooses its variant when it runs (see sparse_tickets.ops.compiled).
_TRACED_PLAN = ConvPlan()


class MaskedLayer:
    """What the two masked layers share: the ``mask`` buffer, the zero invariant and the two
    execution modes (see the module)."""

    mask: torch.Tensor
    # Qualified names of the other modules holding this layer's weight (tied weights), set by
    # masked() and Masks.apply_to; a shared weight stays dense (see .tied).
    weight_shared_with: tuple = ()
    # The input shape of the last forward in training mode (a linear's as 2-D); "auto" measures
    # its threshold on it (see sparse_tickets.compact.layer_thresholds). None: none seen yet.
    training_input_shape = None

    def _init_mask(self) -> None:
        self.register_buffer("mask", full_mask_like(self.weight))
        # None: follow the global default (sparse_tickets.compact.set_default_mode).
        self.requested_mode = None
        # Loading a state_dict may bring weights that are nonzero where the loaded mask is False.
        self.register_load_state_dict_post_hook(_after_load)
        self._register_trainable_weight()

    def _register_trainable_weight(self) -> None:
        # How optimizers given only parameters find this layer's mask (see .owners); called at
        # every mask, mode and Parameter change.
        owners.register(self.trainable_weight, self, "mask")
        owners.note_change()

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        # A deep copy or unpickled layer holds new Parameters.
        self._register_trainable_weight()
        if self.weight_shared_with and self.mode == "dense":
            owners.mask_gradient(self._parameters["weight"], self, "mask")
        self._cache_compact_index()

    def _apply(self, fn, recurse=True):
        # .to(), .cuda(), to_empty() replace the index buffers: the index is rebuilt here, at
        # the change, not at the next forward, where a compiled graph could not build it.
        module = super()._apply(fn, recurse)
        self._cache_compact_index()
        return module

    # The weight, in either mode.

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight: the Parameter in dense mode; in compact mode a tensor rebuilt from
        ``values`` at each read (gradients flow into ``values``)."""
        parameters = self.__dict__["_parameters"]
        if "weight" in parameters:
            return parameters["weight"]
        if "values" in parameters:
            return self.compact_index.to_dense(parameters["values"])
        raise AttributeError("weight")  # during nn.Linear.__init__, before it is registered

    @property
    def trainable_weight(self) -> nn.Parameter:
        """The Parameter an optimizer updates: ``weight`` (dense mode) or ``values`` (compact)."""
        parameters = self._parameters
        return parameters["weight"] if "weight" in parameters else parameters["values"]

    @property
    def mode(self) -> str:
        """``"dense"`` or ``"compact"``: how the layer runs now."""
        return "compact" if "values" in self._parameters else "dense"

    @property
    def compact_index(self) -> CompactIndex:
        """The index of the mask (compact mode only)."""
        if self.mode != "compact":
            raise RuntimeError(f"{type(self).__name__} is in dense mode; it has no compact index")
        buffers = self._buffers
        tensors = tuple(buffers[name] for name in _INDEX_BUFFERS)
        cached = self.__dict__.get("_index_cache")
        # Built at every change of the buffers (a mask change, .to(), a copy); this check
        # catches a buffer replaced by hand. The index is read at every forward.
        if cached is None or any(a is not b for a, b in zip(cached[0], tensors)):
            if torch.compiler.is_compiling():
                # Nothing stored from inside a graph; the next eager read caches it.
                return CompactIndex(tuple(self.mask.shape), *tensors, conv_plan=_TRACED_PLAN)
            cached = self._cache_compact_index()
        return cached[1]

    def _cache_compact_index(self):
        if self.mode != "compact":
            self.__dict__.pop("_index_cache", None)
            return None
        tensors = tuple(self._buffers[name] for name in _INDEX_BUFFERS)
        cached = self.__dict__.get("_index_cache")
        if cached is None or any(a is not b for a, b in zip(cached[0], tensors)):
            index = CompactIndex.from_tensors(self.mask.shape, dict(zip(INDEX_FIELDS, tensors)))
            cached = self.__dict__["_index_cache"] = (tensors, index)
        return cached

    def _note_input(self, x: torch.Tensor) -> None:
        # Eager calls only (a compiled graph stores nothing): a mask still on meta beside a
        # weight loaded tensor by tensor becomes full, and "auto" learns the training input
        # shape it measures its threshold on.
        if self._buffers["mask"].is_meta and "weight" in self._parameters:
            self._materialise_mask()
        if self.training:
            self.__dict__["training_input_shape"] = self._training_shape(x)

    # Masks and modes.

    @torch.no_grad()
    def set_mask(self, mask) -> None:
        """Replace the mask (bool, or 0/1 values, of the weight's shape and device), zero the
        weights it prunes, and choose the execution mode for it. The buffer is updated in place,
        so references to it stay valid."""
        mask = validate_mask(mask, self.mask)
        if self.mode == "compact" and torch.equal(mask, self.mask):
            self._choose_mode(mask_changed=False)
            return
        self._become_dense()
        self.mask.copy_(mask)
        self.apply_mask()
        owners.note_change()
        self._choose_mode(mask_changed=True)

    def set_mode(self, mode) -> None:
        """Run this layer ``"dense"``, ``"compact"``, or ``"auto"`` (chosen by density at each
        mask change); None follows the global default (:mod:`sparse_tickets.compact.choice`).
        Takes effect now and changes no value, but a switch replaces the trainable Parameter
        (``weight`` <-> ``values``): the masked optimizers follow it, other optimizers must be
        built after it."""
        previous, self.requested_mode = (
            self.requested_mode,
            choice.check_mode(mode, allow_none=True),
        )
        try:
            with torch.no_grad():
                self._choose_mode(mask_changed=True)
        except ValueError:
            self.requested_mode = previous  # a refused mode leaves the layer as it was
            raise

    @torch.no_grad()
    def apply_mask(self) -> None:
        """Zero the weights the mask prunes (restores the invariant after an outside write).
        Compact mode holds only kept weights: nothing to zero."""
        if self.mode == "dense":
            self._materialise_mask()
            self.weight.masked_fill_(~self.mask, 0.0)

    def _materialise_mask(self) -> None:
        # A mask still on meta beside a weight given storage (see .mask.materialised_mask).
        mask = self._buffers["mask"]
        if mask.is_meta:
            self._buffers["mask"] = materialised_mask(mask, self._parameters["weight"])

    def _choose_mode(self, mask_changed: bool) -> None:
        target = choice.choose(self)
        if target == self.mode and not (target == "compact" and mask_changed):
            return
        self._become_dense()
        if target == "compact":
            self._become_compact()

    def _become_compact(self) -> None:
        weight = self._parameters["weight"]
        index = CompactIndex.from_mask(self.mask)
        values = nn.Parameter(index.gather(weight.detach()), requires_grad=weight.requires_grad)
        # Keep the Parameter object (switching back reuses it, so references stay valid) but
        # not its storage: compact mode's memory is O(kept weights) too.
        weight.data = weight.data.new_empty(0)
        weight.grad = None
        self.__dict__["_dense_weight"] = weight
        _replace_parameter(self._parameters, "weight", "values", values)
        for name, tensor in zip(_INDEX_BUFFERS, index.tensors().values()):
            self.register_buffer(name, tensor, persistent=False)
        # Cached now, at the mask change: a compiled forward right after it finds it built.
        self.__dict__["_index_cache"] = (tuple(index.tensors().values()), index)
        self._register_trainable_weight()

    def _become_dense(self) -> None:
        if self.mode == "dense":
            return
        values = self._parameters["values"]
        index = self.compact_index
        weight = self.__dict__.pop("_dense_weight", None)
        if weight is None:
            weight = nn.Parameter(torch.empty(0, dtype=values.dtype, device=values.device))
        weight.data = index.to_dense(values.detach())
        weight.requires_grad_(values.requires_grad)
        # An optimizer that knew ``values`` converts its state through the retired index.
        self.__dict__["_retired_compact"] = (values, index)
        self.__dict__.pop("_index_cache", None)
        _replace_parameter(self._parameters, "values", "weight", weight)
        for name in _INDEX_BUFFERS:
            del self._buffers[name]
            self._non_persistent_buffers_set.discard(name)
        self._register_trainable_weight()

    @property
    def density(self) -> float:
        """Fraction of the weight's entries the mask keeps, in [0, 1]."""
        return self.num_unpruned / max(self.mask.numel(), 1)

    @property
    def num_unpruned(self) -> int:
        """Number of weights the mask keeps."""
        return count_kept(self.mask, type(self).__name__)

    def reset_parameters(self) -> None:
        if not hasattr(self, "mask"):  # while nn.Linear.__init__ runs
            super().reset_parameters()
            return
        compact = self.mode == "compact"
        with torch.no_grad():
            self._become_dense()
        super().reset_parameters()
        self.apply_mask()
        if compact:
            with torch.no_grad():
                self._choose_mode(mask_changed=True)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self.mode == "dense":
            super()._save_to_state_dict(destination, prefix, keep_vars)
            return
        # The state_dict of a compact layer is the dense layer's: ``weight`` first, no values.
        own = type(destination)()
        super()._save_to_state_dict(own, prefix, keep_vars)
        values = own.pop(prefix + "values")
        weight = self.compact_index.to_dense(values if keep_vars else values.detach())
        destination[prefix + "weight"] = weight
        destination.update(own)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        key, weight_key = prefix + "mask", prefix + "weight"
        assign = local_metadata.get("assign_to_params_buffers", False)
        mask_changed = False
        if key in state_dict:
            # With assign=True the incoming weight replaces ours (e.g. a model built on meta),
            # so the mask must match the incoming weight, not the one about to be dropped.
            like = state_dict[weight_key] if assign and weight_key in state_dict else self.mask
            # A float or int mask would otherwise be cast to bool silently (0.5 -> True).
            state_dict[key] = validate_mask(
                state_dict[key].to(like.device), like, name=f"state_dict[{key!r}]"
            )
            incoming_mask = state_dict[key]
            mask_changed = (
                assign
                or incoming_mask.is_meta
                or self.mask.is_meta
                or incoming_mask.shape != self.mask.shape
                or not torch.equal(incoming_mask, self.mask)
            )
        if self.mode == "compact":
            incoming = state_dict.get(weight_key)
            if (
                not mask_changed
                and not assign
                and isinstance(incoming, torch.Tensor)
                and incoming.shape == self.mask.shape
            ):
                # Same mask: load into ``values`` in place, so the Parameter an optimizer holds
                # stays the one the layer trains.
                state_dict[prefix + "values"] = incoming.to(self.mask.device)[self.mask]
                del state_dict[weight_key]
            else:
                with torch.no_grad():
                    self._become_dense()
                mask_changed = True
        self.__dict__["_mode_pending"] = mask_changed
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def to_dense(self) -> nn.Module:
        """The plain torch layer (``nn.Linear`` / ``nn.Conv2d``) holding this layer's zeroed
        weight and its bias, e.g. for export: the same Parameter objects in dense mode; in
        compact mode a new weight Parameter rebuilt from ``values``."""
        with torch.no_grad():
            self.apply_mask()
        dense = self._dense_like()
        dense.weight = (
            self.weight
            if self.mode == "dense"
            else nn.Parameter(
                self.weight.detach(), requires_grad=self.trainable_weight.requires_grad
            )
        )
        dense.bias = self.bias
        return dense.train(self.training)

    def _adopt(self, dense: nn.Module, choose_mode: bool = True) -> None:
        """Take ``dense``'s parameters (the same Parameter objects) and start with a full mask
        (or ``dense``'s own mask when it is already a masked layer), in the mode chosen for it
        unless ``choose_mode`` is False (then dense: ``masked()`` chooses once every layer of a
        model is swapped and its ties are known)."""
        check_adoptable(dense)
        self.weight = dense.weight
        self.bias = dense.bias
        self._register_trainable_weight()
        mask = getattr(dense, "mask", None)
        self.mask = mask.clone() if mask is not None else full_mask_like(dense.weight)
        self.apply_mask()
        if choose_mode:
            with torch.no_grad():
                self._choose_mode(mask_changed=True)

    def extra_repr(self) -> str:
        if self.mask.is_meta:  # no values to count
            return super().extra_repr()
        mode = ", mode=compact" if self.mode == "compact" else ""
        return f"{super().extra_repr()}, density={self.density:.4f}{mode}"


def check_adoptable(dense: nn.Module) -> None:
    """Raise ValueError in one line when ``dense`` cannot become a masked layer."""
    if not isinstance(dense._parameters.get("weight"), nn.Parameter):
        raise ValueError(
            f"{type(dense).__name__}.weight is a computed tensor, not a "
            f"Parameter (is it pruned with torch.nn.utils.prune or "
            f"parametrized?); expected a plain layer: remove that first"
        )


def _after_load(module: MaskedLayer, incompatible_keys) -> None:
    module.apply_mask()  # which gives a mask left on meta beside a loaded weight its values
    module._register_trainable_weight()  # load_state_dict(assign=True) brings new Parameters
    if module.__dict__.pop("_mode_pending", False):
        with torch.no_grad():
            module._choose_mode(mask_changed=True)


def _replace_parameter(parameters: dict, old: str, new: str, parameter: nn.Parameter) -> None:
    """Put ``parameter`` under ``new`` where ``old`` was, keeping the order (weight, then
    bias), in the same dict object."""
    items = [
        (new, parameter) if name == old else (name, value) for name, value in parameters.items()
    ]
    parameters.clear()
    parameters.update(items)


class MaskedLinear(MaskedLayer, nn.Linear):
    """``nn.Linear`` with a bool ``mask`` buffer (all True at construction); see the module."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            self._note_input(x)
        if "values" in self._parameters:
            return functional.compact_linear(
                x, self._parameters["values"], self.compact_index, self.bias
            )
        return functional.masked_linear(x, self._parameters["weight"], self.mask, self.bias)

    @staticmethod
    def _training_shape(x: torch.Tensor):
        return (math.prod(x.shape[:-1]), x.shape[-1]) if x.dim() else None

    def calibration_spec(self, input_shape: tuple) -> LayerSpec:
        """This layer's class, geometry and ``input_shape`` (for ``auto``'s own threshold)."""
        return LayerSpec(
            "linear",
            (
                ("in_features", self.in_features),
                ("out_features", self.out_features),
                ("bias", self.bias is not None),
            ),
            tuple(input_shape),
        )

    def _dense_like(self) -> nn.Linear:
        return nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device="meta",
            dtype=self.trainable_weight.dtype,
        )

    @classmethod
    def from_dense(cls, module: nn.Linear, choose_mode: bool = True) -> MaskedLinear:
        """A MaskedLinear sharing ``module``'s weight and bias Parameters, with a full mask,
        in the mode chosen for it (dense when ``choose_mode`` is False)."""
        if not isinstance(module, nn.Linear):
            raise TypeError(
                f"MaskedLinear.from_dense expects an nn.Linear; got {type(module).__name__}"
            )
        check_adoptable(module)
        layer = cls(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            device="meta",
            dtype=module.weight.dtype,
        )
        layer._adopt(module, choose_mode)
        return layer.train(module.training)


class MaskedConv2d(MaskedLayer, nn.Conv2d):
    """``nn.Conv2d`` with a bool ``mask`` buffer (all True at construction); see the module."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self._init_mask()
        # The compact form's vectorisation: None lets the index's plan choose per input shape
        # (compact_index.conv_plan.choices records it); "batch", "width" or "im2col" forces one.
        self.conv_variant = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            self._note_input(x)
        if "values" in self._parameters:
            return self._compact_forward(x)
        return self._conv_forward(x, self._parameters["weight"], self.bias)

    @staticmethod
    def _training_shape(x: torch.Tensor) -> tuple:
        return tuple(x.shape) if x.dim() == 4 else (1, *x.shape)

    def calibration_spec(self, input_shape: tuple) -> LayerSpec:
        """This layer's class, geometry and ``input_shape`` (for ``auto``'s own threshold)."""
        return LayerSpec(
            "conv2d",
            (
                ("in_channels", self.in_channels),
                ("out_channels", self.out_channels),
                ("kernel_size", self.kernel_size),
                ("stride", self.stride),
                ("padding", self.padding),
                ("dilation", self.dilation),
                ("groups", self.groups),
                ("bias", self.bias is not None),
                ("padding_mode", self.padding_mode),
            ),
            tuple(input_shape),
        )

    def _compact_forward(self, x: torch.Tensor) -> torch.Tensor:
        x, padding = functional.padded_by_mode(x, self)
        return functional.compact_conv2d(
            x,
            self._parameters["values"],
            self.compact_index,
            self.bias,
            self.stride,
            padding,
            self.dilation,
            self.groups,
            self.conv_variant,
        )

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias):
        x, padding = functional.padded_by_mode(x, self)
        return functional.masked_conv2d(
            x, weight, self.mask, bias, self.stride, padding, self.dilation, self.groups
        )

    def _dense_like(self) -> nn.Conv2d:
        return nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias is not None,
            padding_mode=self.padding_mode,
            device="meta",
            dtype=self.trainable_weight.dtype,
        )

    @classmethod
    def from_dense(cls, module: nn.Conv2d, choose_mode: bool = True) -> MaskedConv2d:
        """A MaskedConv2d sharing ``module``'s weight and bias Parameters, with a full mask,
        in the mode chosen for it (dense when ``choose_mode`` is False)."""
        if not isinstance(module, nn.Conv2d):
            raise TypeError(
                f"MaskedConv2d.from_dense expects an nn.Conv2d; got {type(module).__name__}"
            )
        check_adoptable(module)
        layer = cls(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
            device="meta",
            dtype=module.weight.dtype,
        )
        layer._adopt(module, choose_mode)
        return layer.train(module.training)
