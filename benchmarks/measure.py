"""Timing one row: the benchmark group, the row's fields in ``extra_info``, and the device sync.

Every row carries the same fields (op, provider, shape, dtype, sparsity), so the report can
compute, for each row, its ratio to the dense and the prune-style rows of the same group.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .providers import provider_kind


def time_row(
    benchmark,
    fn: Callable[[], object],
    *,
    op: str,
    provider: str,
    shape: str,
    dtype: torch.dtype,
    sparsity: float,
    device: str,
    **extra,
) -> None:
    """Time ``fn`` as the row ``(op, provider, shape, dtype, sparsity)``.

    ``extra`` adds fields of the op's own (the iterations a call runs, say). On CUDA the
    timed function synchronises, so a row measures the work and not the launch.
    """
    benchmark.group = f"{op} | {shape} | {str(dtype).removeprefix('torch.')}"
    benchmark.extra_info.update(
        op=op,
        provider=provider,
        provider_kind=provider_kind(provider),
        shape=shape,
        dtype=str(dtype).removeprefix("torch."),
        sparsity=float(sparsity),
        device=device,
        **extra,
    )
    if device == "cuda":

        def timed():
            fn()
            torch.cuda.synchronize()

        benchmark(timed)
    else:
        benchmark(fn)
