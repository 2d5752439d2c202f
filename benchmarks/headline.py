"""The headline of ``results.md``: the compact mode's speedup over its baselines on the rows
that say whether a sparse level pays off, each read off one row pair of the run.

- the 4096x4096 layer's forward at batch 64, against dense and against torch's CSR;
- one training step of that layer (forward, backward, Adam), against dense;
- a LeNet-300-100 IMP level at 3.5% density trained end to end, against the dense network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import shapes
from .profiles import LENET_300_100
from .providers import COMPACT, DENSE, TORCH_CSR
from .rows import Row, format_seconds


@dataclass(frozen=True)
class Headline:
    """The compact rows of ``op`` on ``shape`` at ``sparsities``, against ``baseline``."""

    measure: str
    op: str
    shape: str
    baseline: str
    sparsities: tuple


_LARGE_FORWARD = "forward, 4096x4096 at batch 64"
HEADLINES = (
    Headline(_LARGE_FORWARD, "masked_linear.forward", shapes.LARGE_BATCH64.label, DENSE,
             (0.9, 0.95, 0.98)),
    Headline(_LARGE_FORWARD, "masked_linear.forward", shapes.LARGE_BATCH64.label, TORCH_CSR,
             (0.9, 0.95, 0.98)),
    Headline("training step (forward, backward, Adam), 4096x4096 at batch 64",
             "train_step.adam", shapes.LARGE_BATCH64.label, DENSE, shapes.TRAIN_STEP_SPARSITIES),
    Headline("LeNet-300-100 training, the IMP level at 3.5% density (per 1,000 iterations)",
             "end_to_end.train", LENET_300_100.label, DENSE, (round(1.0 - 0.035, 4),)),
)


def render(rows: list[Row], headlines=HEADLINES) -> list[str]:
    """The headline table's markdown lines; none when the run has none of its rows (a
    ``--quick`` run, a ``-k`` selection)."""
    lines = []
    for spec in headlines:
        for compact in _compact_rows(rows, spec):
            baseline = _baseline_row(rows, spec, compact)
            if baseline is None:
                continue
            lines.append(f"| {spec.measure} | {compact.dtype} | {compact.sparsity:.1%} | "
                         f"{compact.provider_label} | {_time(compact)} | {spec.baseline} | "
                         f"{_time(baseline)} | {baseline.median_s / compact.median_s:.2f} |")
    if not lines:
        return []
    return ["## Headline: the compact mode against its baselines", "",
            "Speedup = baseline time / compact time, both from this run: above 1 the compact "
            "mode is faster. Dense is timed once per shape (it ignores the mask).", "",
            "| measure | dtype | sparsity | ours | time | baseline | baseline time | speedup |",
            "|" + " --- |" * 8] + lines + [""]


def _compact_rows(rows: list[Row], spec: Headline) -> list[Row]:
    found = [row for row in rows if row.provider == COMPACT and row.op == spec.op
             and row.shape == spec.shape and row.sparsity in spec.sparsities]
    return sorted(found, key=lambda row: (row.dtype, row.sparsity))


def _baseline_row(rows: list[Row], spec: Headline, compact: Row) -> Optional[Row]:
    for row in rows:
        if (row.provider == spec.baseline and row.group == compact.group
                and (spec.baseline == DENSE or row.sparsity == compact.sparsity)):
            return row
    return None


def _time(row: Row) -> str:
    if row.family == "end_to_end":
        return f"{row.median_s / (row.iterations_per_call or 1) * 1000:.2f} s"
    return format_seconds(row.median_s)
