"""Masked layers, and the functions that swap them into and out of a user's model."""

from .convert import masked, masked_layers, unmasked
from .layers import MaskedConv2d, MaskedLayer, MaskedLinear
from .mask import validate_mask

__all__ = ["MaskedConv2d", "MaskedLayer", "MaskedLinear", "masked", "masked_layers",
           "unmasked", "validate_mask"]
