"""The reference backend: plain torch on every device and float dtype; it defines the numbers."""

from __future__ import annotations

import torch

from ..base import Backend
from . import compact, conv, linear, optim


class ReferenceBackend(Backend):
    name = "reference"
    # Whatever device torch itself runs on: the reference is the fallback everywhere.
    device_types = frozenset({"cpu", "cuda", "mps", "xpu", "meta"})
    dtypes = frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16})

    masked_linear_autograd = staticmethod(linear.masked_linear_autograd)
    masked_conv2d_autograd = staticmethod(conv.masked_conv2d_autograd)
    masked_linear_forward = staticmethod(linear.masked_linear_forward)
    masked_linear_backward = staticmethod(linear.masked_linear_backward)
    masked_conv2d_forward = staticmethod(conv.masked_conv2d_forward)
    masked_conv2d_backward = staticmethod(conv.masked_conv2d_backward)
    compact_linear_forward = staticmethod(compact.compact_linear_forward)
    compact_linear_backward = staticmethod(compact.compact_linear_backward)
    compact_conv2d_forward = staticmethod(compact.compact_conv2d_forward)
    compact_conv2d_backward = staticmethod(compact.compact_conv2d_backward)
    masked_sgd_step = staticmethod(optim.masked_sgd_step)
    masked_adam_step = staticmethod(optim.masked_adam_step)
