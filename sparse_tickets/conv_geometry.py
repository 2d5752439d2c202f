"""The size of a convolution's output, the one formula every layer, op and kernel uses."""

from __future__ import annotations

from collections.abc import Sequence


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """The output length along one dimension of ``size`` input entries, as ``F.conv2d`` gives it
    (below 1 where the kernel does not fit: the caller decides whether that is an error)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def output_shape(
    sizes: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple:
    """:func:`output_size` along each spatial dimension (e.g. ``(OH, OW)`` of ``(H, W)``)."""
    return tuple(output_size(*dims) for dims in zip(sizes, kernel, stride, padding, dilation))
