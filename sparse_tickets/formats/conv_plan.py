"""How a compact conv2d is computed: which vectorisation of the direct sparse convolution.

The CPU kernels (kernels/csrc/cpu/sparse_conv.cpp) vectorise either over the batch
(``"batch"``: operands copied batch-minor, a vector holds one pixel of several images) or over
the output width (``"width"``: a vector holds several pixels of one output row); ``"im2col"``
is the lowering to the compact linear kernels (unfold, SpMM, fold), the one form other devices'
compiled backends have. The variants give the same numbers up to the order of the sums.

A vector whose lanes run past the batch, or past the output row, computes zeros for nothing,
so the rule weighs the lanes each variant fills, ``N / round_up(N, lanes)`` over the batch and
``OW / round_up(OW, lanes)`` over the width, with what was measured on the paper's layers
(fwd+bwd at 90-98% sparsity, CPU time at one thread, AVX2): where both fill every lane, the
width variant wins on rows of two vectors or more (ResNet-20's 16ch 32x32 by 1.5-1.7x, its 32ch
16x16 by 1.1-1.4x, Conv-6's 32x32 at batch 60 by 1.1-1.7x in fp32; the 8x8 layers in fp64 by
1.05-1.4x), the batch variant on rows of one vector or less (the 8x8 and 4x4 layers in fp32,
by 1.1-2x). So:

- ``"width"`` when it fills at least the lanes the batch variant fills and the output rows
  are at least two vectors wide;
- else ``"batch"``, unless it fills less than half the lanes the width variant fills (one
  image at a time, say).

The rule is applied once per layer and input shape, at the first call with that shape after a
mask change, never again: the choice is recorded in the :class:`ConvPlan` that the layer's
:class:`~.compact_index.CompactIndex` carries (``index.conv_plan.choices``), so a level
trains with one kernel from its first step to its last, and what was chosen can be read back.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..conv_geometry import output_size

VARIANTS = ("batch", "width", "im2col")


@dataclass
class ConvPlan:
    """The variant chosen for each input shape a compact conv weight has met (see the module)."""

    # (device type, dtype, input shape, stride, padding, dilation, groups) -> variant
    choices: dict = field(default_factory=dict)

    def variant(
        self,
        x_shape: tuple,
        kernel: tuple,
        stride: tuple,
        padding: tuple,
        dilation: tuple,
        groups: int,
        dtype: torch.dtype,
        device_type: str,
    ) -> str:
        key = (device_type, dtype, tuple(x_shape), stride, padding, dilation, groups)
        chosen = self.choices.get(key)
        if chosen is None:
            chosen = choose_variant(x_shape, kernel, stride, padding, dilation, dtype, device_type)
            self.choices[key] = chosen
        return chosen


def check_variant(variant: str | None) -> str | None:
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"conv variant {variant!r} is not one of {', '.join(VARIANTS)} or None")
    return variant


def choose_variant(
    x_shape: tuple,
    kernel: tuple,
    stride: tuple,
    padding: tuple,
    dilation: tuple,
    dtype: torch.dtype,
    device_type: str,
) -> str:
    """The rule of the module for an ``(N, C, H, W)`` input (padding already symmetric ints)."""
    if device_type != "cpu":
        return "im2col"
    batch, _, _, width = x_shape
    lanes = simd_lanes(dtype)
    out_width = output_size(width, kernel[1], stride[1], padding[1], dilation[1])
    batch_filled = batch / _round_up(max(batch, 1), lanes)
    width_filled = out_width / _round_up(max(out_width, 1), lanes)
    if width_filled >= batch_filled and out_width >= 2 * lanes:
        return "width"
    return "batch" if batch_filled >= width_filled / 2 else "width"


def simd_lanes(dtype: torch.dtype) -> int:
    """Lanes of one vector of the CPU kernels for ``dtype`` (their build targets this CPU)."""
    return _vector_bytes() // torch.empty(0, dtype=dtype).element_size()


@functools.cache
def _vector_bytes() -> int:
    # As kernels/csrc/cpu/simd.h picks its path under -march=native: AVX-512 (F, BW, VL, DQ),
    # AVX2 with FMA, else 64-byte arrays of lanes.
    flags = _cpu_flags()
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return 64
    if {"avx2", "fma"} <= flags:
        return 32
    return 64


def _cpu_flags() -> frozenset:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _round_up(n: int, multiple: int) -> int:
    return math.ceil(n / multiple) * multiple
