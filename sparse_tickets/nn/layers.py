"""MaskedLinear and MaskedConv2d: nn.Linear / nn.Conv2d that carry a pruning mask.

Where ``mask`` is False the weight is exactly 0.0, always: after ``set_mask``, after loading a
state_dict, after ``reset_parameters``; the masked optimizers keep it so after every step, and
the forward computes with ``weight ⊙ mask`` regardless, so a stray write cannot leak into outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import functional
from .mask import validate_mask


class MaskedLayer:
    """What the two masked layers share: the ``mask`` buffer and the zero invariant."""

    weight: nn.Parameter
    mask: torch.Tensor

    def _init_mask(self) -> None:
        self.register_buffer("mask", torch.ones_like(self.weight, dtype=torch.bool))
        # Loading a state_dict may bring weights that are nonzero where the loaded mask is False.
        self.register_load_state_dict_post_hook(_reapply_mask_after_load)

    @torch.no_grad()
    def set_mask(self, mask) -> None:
        """Replace the mask (bool, or 0/1 values, of the weight's shape and device) and zero
        the weights it prunes. The buffer is updated in place, so references to it stay valid."""
        mask = validate_mask(mask, self.weight)
        self.mask.copy_(mask)
        self.apply_mask()

    @torch.no_grad()
    def apply_mask(self) -> None:
        """Zero the weights the mask prunes (restores the invariant after an outside write)."""
        self.weight.masked_fill_(~self.mask, 0.0)

    @property
    def density(self) -> float:
        """Fraction of the weight's entries the mask keeps, in [0, 1]."""
        return self.mask.sum().item() / max(self.mask.numel(), 1)

    @property
    def num_unpruned(self) -> int:
        """Number of weights the mask keeps."""
        return int(self.mask.sum().item())

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "mask"):  # absent while nn.Linear.__init__ runs
            self.apply_mask()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "mask"
        if key in state_dict:
            # With assign=True the incoming weight replaces ours (e.g. a model built on meta),
            # so the mask must match the incoming weight, not the one about to be dropped.
            weight = self.weight
            if local_metadata.get("assign_to_params_buffers") and prefix + "weight" in state_dict:
                weight = state_dict[prefix + "weight"]
            # A float or int mask would otherwise be cast to bool silently (0.5 -> True).
            state_dict[key] = validate_mask(state_dict[key].to(weight.device), weight,
                                            name=f"state_dict[{key!r}]")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def to_dense(self) -> nn.Module:
        """The plain torch layer (``nn.Linear`` / ``nn.Conv2d``) holding this layer's zeroed
        weight and its bias, the same Parameter objects, e.g. for export."""
        with torch.no_grad():
            self.apply_mask()
        dense = self._dense_like()
        dense.weight = self.weight
        dense.bias = self.bias
        return dense.train(self.training)

    def _adopt(self, dense: nn.Module) -> None:
        """Take ``dense``'s parameters (the same Parameter objects) and start with a full mask
        (or ``dense``'s own mask when it is already a masked layer)."""
        if not isinstance(dense.weight, nn.Parameter):
            raise ValueError(f"{type(dense).__name__}.weight is a computed tensor, not a "
                             f"Parameter (is it pruned with torch.nn.utils.prune or "
                             f"parametrized?); expected a plain layer: remove that first")
        self.weight = dense.weight
        self.bias = dense.bias
        mask = getattr(dense, "mask", None)
        self.mask = (mask.clone() if mask is not None
                     else torch.ones_like(dense.weight, dtype=torch.bool))
        self.apply_mask()

    def extra_repr(self) -> str:
        if self.mask.is_meta:  # no values to count
            return super().extra_repr()
        return f"{super().extra_repr()}, density={self.density:.4f}"


def _reapply_mask_after_load(module: MaskedLayer, incompatible_keys) -> None:
    module.apply_mask()


class MaskedLinear(MaskedLayer, nn.Linear):
    """``nn.Linear`` with a bool ``mask`` buffer (all True at construction); see the module."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.masked_linear(x, self.weight, self.mask, self.bias)

    def _dense_like(self) -> nn.Linear:
        return nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                         device="meta", dtype=self.weight.dtype)

    @classmethod
    def from_dense(cls, module: nn.Linear) -> "MaskedLinear":
        """A MaskedLinear sharing ``module``'s weight and bias Parameters, with a full mask."""
        if not isinstance(module, nn.Linear):
            raise TypeError(f"MaskedLinear.from_dense expects an nn.Linear; got "
                            f"{type(module).__name__}")
        layer = cls(module.in_features, module.out_features, bias=module.bias is not None,
                    device="meta", dtype=module.weight.dtype)
        layer._adopt(module)
        return layer.train(module.training)


class MaskedConv2d(MaskedLayer, nn.Conv2d):
    """``nn.Conv2d`` with a bool ``mask`` buffer (all True at construction); see the module."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode,
                         device=device, dtype=dtype)
        self._init_mask()

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias):
        if self.padding_mode != "zeros":
            # As nn.Conv2d does: pad by the mode first, then convolve without padding.
            x = torch.nn.functional.pad(x, self._reversed_padding_repeated_twice,
                                        mode=self.padding_mode)
            return functional.masked_conv2d(x, weight, self.mask, bias, self.stride, 0,
                                            self.dilation, self.groups)
        return functional.masked_conv2d(x, weight, self.mask, bias, self.stride, self.padding,
                                        self.dilation, self.groups)

    def _dense_like(self) -> nn.Conv2d:
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                         stride=self.stride, padding=self.padding, dilation=self.dilation,
                         groups=self.groups, bias=self.bias is not None,
                         padding_mode=self.padding_mode, device="meta", dtype=self.weight.dtype)

    @classmethod
    def from_dense(cls, module: nn.Conv2d) -> "MaskedConv2d":
        """A MaskedConv2d sharing ``module``'s weight and bias Parameters, with a full mask."""
        if not isinstance(module, nn.Conv2d):
            raise TypeError(f"MaskedConv2d.from_dense expects an nn.Conv2d; got "
                            f"{type(module).__name__}")
        layer = cls(module.in_channels, module.out_channels, module.kernel_size,
                    stride=module.stride, padding=module.padding, dilation=module.dilation,
                    groups=module.groups, bias=module.bias is not None,
                    padding_mode=module.padding_mode, device="meta", dtype=module.weight.dtype)
        layer._adopt(module)
        return layer.train(module.training)
