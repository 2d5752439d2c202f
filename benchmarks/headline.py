"""The headline of ``results.md``: our sparse paths' speedups over their baselines on the rows
that say whether a sparse level pays off, each read off one row pair of the run.

- the 4096x4096 layer's forward at batch 64, compact against dense and against torch's CSR;
- one training step of that layer (forward, backward, Adam), compact against dense;
- the same layer's forward + backward, compact against dense and against SparseProp (its
  fastest correct variant);
- forward + backward of the paper's conv layers (Conv-6, VGG-19, ResNet-20), compact against
  dense and against SparseProp;
- a LeNet-300-100 IMP level at 3.5% density trained end to end, compact against the dense
  network;
- that layer with a 2:4 mask (GPU only), semi_structured against dense, inference forward and
  forward + backward (recompressing the weight, as training does).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import shapes
from .profiles import CONV2, LENET_300_100
from .providers import (
    COMPACT,
    DENSE,
    SEMI_STRUCTURED,
    SPARSEPROP,
    TORCH_CSR,
    TWO_FOUR,
    TWO_FOUR_SPARSITY,
)
from .rows import Row, format_seconds


@dataclass(frozen=True)
class Headline:
    """The ``provider`` rows of ``op`` on ``shape`` at ``sparsities``, against ``baseline``."""

    measure: str
    op: str
    shape: str
    baseline: str
    sparsities: tuple
    provider: str = COMPACT


_LARGE_FORWARD = "forward, 4096x4096 at batch 64"
_LARGE_FORWARD_BACKWARD = "forward + backward, 4096x4096 at batch 64"
_HIGH_SPARSITIES = (0.9, 0.95, 0.98)
# The conv layers of the goals: Conv-6 at 32x32 and 8x8, VGG-19 at 8x8 and its last
# stage, ResNet-20's first and last stages.
_HEADLINE_CONVS = (
    shapes.CONV6_LAYERS
    + shapes.VGG19_LAYERS[1:]
    + (shapes.RESNET20_LAYERS[0], shapes.RESNET20_LAYERS[2])
)
HEADLINES = (
    Headline(
        _LARGE_FORWARD, "masked_linear.forward", shapes.LARGE_BATCH64.label, DENSE, _HIGH_SPARSITIES
    ),
    Headline(
        _LARGE_FORWARD,
        "masked_linear.forward",
        shapes.LARGE_BATCH64.label,
        TORCH_CSR,
        _HIGH_SPARSITIES,
    ),
    Headline(
        _LARGE_FORWARD_BACKWARD,
        "masked_linear.forward_backward",
        shapes.LARGE_BATCH64.label,
        DENSE,
        _HIGH_SPARSITIES,
    ),
    Headline(
        _LARGE_FORWARD_BACKWARD,
        "masked_linear.forward_backward",
        shapes.LARGE_BATCH64.label,
        SPARSEPROP,
        _HIGH_SPARSITIES,
    ),
    *(
        Headline(
            f"conv forward + backward, {conv.label}",
            "masked_conv2d.forward_backward",
            conv.label,
            baseline,
            _HIGH_SPARSITIES,
        )
        for conv in _HEADLINE_CONVS
        for baseline in (DENSE, SPARSEPROP)
    ),
    Headline(
        "training step (forward, backward, Adam), 4096x4096 at batch 64",
        "train_step.adam",
        shapes.LARGE_BATCH64.label,
        DENSE,
        shapes.TRAIN_STEP_SPARSITIES,
    ),
    Headline(
        "LeNet-300-100 training, the IMP level at 3.5% density (per 1,000 iterations)",
        "end_to_end.train",
        LENET_300_100.label,
        DENSE,
        (round(1.0 - 0.035, 4),),
    ),
    Headline(
        "Conv-2 training, the IMP level at 3.5% density (per 1,000 iterations)",
        "end_to_end.train",
        CONV2.label,
        DENSE,
        (round(1.0 - 0.035, 4),),
    ),
    Headline(
        "2:4 forward (inference), 4096x4096 at batch 64",
        f"masked_linear_{TWO_FOUR}.forward",
        shapes.LARGE_BATCH64.label,
        DENSE,
        (TWO_FOUR_SPARSITY,),
        SEMI_STRUCTURED,
    ),
    Headline(
        "2:4 forward + backward, recompressing each call, 4096x4096 at batch 64",
        f"masked_linear_{TWO_FOUR}.forward_backward",
        shapes.LARGE_BATCH64.label,
        DENSE,
        (TWO_FOUR_SPARSITY,),
        SEMI_STRUCTURED,
    ),
)


def render(rows: list[Row], headlines=HEADLINES) -> list[str]:
    """The headline table's markdown lines; none when the run has none of its rows (a
    ``--quick`` run, a ``-k`` selection)."""
    lines = []
    for spec in headlines:
        for ours in _our_rows(rows, spec):
            baseline = _baseline_row(rows, spec, ours)
            if baseline is None:
                continue
            lines.append(
                f"| {spec.measure} | {ours.dtype} | {ours.sparsity:.1%} | "
                f"{ours.provider_label} | {_time(ours)} | {baseline.row_label} | "
                f"{_time(baseline)} | {baseline.median_s / ours.median_s:.2f} |"
            )
    if not lines:
        return []
    return (
        [
            "## Headline: our sparse paths against their baselines",
            "",
            "Speedup = baseline time / our time, both from this run: above 1 ours is faster. "
            "Dense is timed once per shape (it ignores the mask).",
            "",
            "| measure | dtype | sparsity | ours | time | baseline | baseline time | speedup |",
            "|" + " --- |" * 8,
        ]
        + lines
        + [""]
    )


def _our_rows(rows: list[Row], spec: Headline) -> list[Row]:
    found = [
        row
        for row in rows
        if row.provider == spec.provider
        and row.op == spec.op
        and row.shape == spec.shape
        and row.sparsity in spec.sparsities
    ]
    return sorted(found, key=lambda row: (row.dtype, row.sparsity))


def _baseline_row(rows: list[Row], spec: Headline, ours: Row) -> Row | None:
    for row in rows:
        if (
            row.provider == spec.baseline
            and row.group == ours.group
            and (spec.baseline == DENSE or row.sparsity == ours.sparsity)
        ):
            return row
    return None


def _time(row: Row) -> str:
    if row.family == "end_to_end":
        return f"{row.median_s / (row.iterations_per_call or 1) * 1000:.2f} s"
    return format_seconds(row.median_s)
