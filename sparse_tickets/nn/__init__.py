"""Masked layers, maskable weights of any layer type, and the functions that put masks into a
user's model and take them out."""

from .convert import masked, unmasked
from .holders import masked_layers, masked_weights
from .layers import MaskedConv2d, MaskedLayer, MaskedLinear
from .mask import validate_mask
from .registry import maskable_weights, register_maskable
from .report import MaskingReport, masking_report
from .state import plain_state_dict
from .weight_mask import MaskedWeight

__all__ = [
    "MaskedConv2d",
    "MaskedLayer",
    "MaskedLinear",
    "MaskedWeight",
    "MaskingReport",
    "maskable_weights",
    "masked",
    "masked_layers",
    "masked_weights",
    "masking_report",
    "plain_state_dict",
    "register_maskable",
    "unmasked",
    "validate_mask",
]
