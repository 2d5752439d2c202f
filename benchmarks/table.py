"""``results.md``: the machine, a summary of speedups over dense, and every row with its ratios."""

from __future__ import annotations

import math
from collections import defaultdict

from . import headline, sparseprop_peer
from .providers import BASELINES, COMPACT, SPARSEPROP
from .rows import Row, format_seconds

# Op families in the order the report shows them, with a sentence on what a row times.
FAMILIES = {
    "masked_linear": "Masked linear; the shape is batch x in -> out (a conv layer as its "
    "im2col GEMM where named so). Forward is inference; forward_backward "
    "computes the input and weight gradients.",
    "masked_linear_2to4": "Masked linear with a 2:4 magnitude mask (2 kept of every 4 "
    "consecutive inputs: 50% sparse), half precision, CUDA only: the "
    "semi_structured backend (torch's 2:4 sparse tensor-core kernels, "
    "forward only; its forward_backward compresses the weight at every "
    "call, as a training step must) against dense F.linear and the "
    "dense-masked reference.",
    "masked_conv2d": "Masked conv2d; the shape is batch x C_in x H x W -> C_out, kernel k.",
    "optimizer": "One optimizer step over all parameters of the network.",
    "train_step": "One training step of a single layer: forward, backward (input and weight "
    "gradients) and Adam step.",
    "end_to_end": "Training (forward, cross-entropy, backward, Adam step); the time is per "
    "1,000 iterations; ideal = density x dense.",
}


def provider_order(provider: str) -> tuple:
    # Our backends first, then our compact mode, then the baselines in their declared order.
    rank = 2 if provider in BASELINES else 1 if provider == COMPACT else 0
    return (rank, BASELINES.index(provider) if provider in BASELINES else 0, provider)


def render(machine_info: dict, rows: list[Row]) -> str:
    lines = ["# Benchmark results", ""] + _machine_lines(machine_info) + [""]
    lines += [
        "Ratios are baseline time / row time, from the same run: above 1 the row is faster "
        "than the baseline. `ideal` is 1 / density, the speedup over dense of a cost that "
        "falls with the density. The reference backend is the correctness oracle: it costs "
        "what prune-style costs. `compact (cpu)`: the compact mode, on the backend "
        "auto-selection gave it. `sparseprop [variant]`: SparseProp, on the fastest of its "
        "variants that computed the right numbers for the row.",
        "",
    ]
    lines += headline.render(rows)
    lines += _summary(rows)
    for family, description in FAMILIES.items():
        family_rows = [row for row in rows if row.family == family]
        if family_rows:
            lines += [f"## {family}", "", description, ""] + _table(family_rows) + [""]
    lines += _sparseprop_variants(rows)
    return "\n".join(lines).rstrip() + "\n"


def _sparseprop_variants(rows: list[Row]) -> list[str]:
    """Which SparseProp variants computed the right numbers on each row's case, and which
    one (the fastest of those) the row timed."""
    ours = [row for row in rows if row.provider == SPARSEPROP]
    if not ours:
        return []
    lines = [
        "## SparseProp variants",
        "",
        "Every variant's output and gradients were checked against the float64 dense "
        "product before timing (relative error at most "
        f"{sparseprop_peer.TOLERANCE:g}); a row times the fastest correct one. A case with "
        "no correct variant has no row.",
        "",
        "| op | shape | sparsity | timed | correct | wrong (relative error) |",
        "|" + " --- |" * 6,
    ]
    for row in ours:
        wrong = ", ".join(f"{name} ({error:.2g})" for name, error in row.variants_wrong)
        lines.append(
            f"| {row.op} | {row.shape} | {row.sparsity:.1%} | {row.variant} | "
            f"{', '.join(row.variants_correct)} | {wrong} |"
        )
    return lines + [""]


def _machine_lines(info: dict) -> list[str]:
    fields = [
        ("device", info.get("device_name")),
        ("CPU", info.get("cpu_model")),
        ("torch threads", info.get("torch_threads")),
        ("torch", info.get("torch_version")),
        ("triton", info.get("triton_version")),
        ("commit", info.get("git_commit")),
        ("profile", info.get("bench_profile")),
    ]
    lines = [f"- {name}: {value if value is not None else 'unknown'}" for name, value in fields]
    lines += [f"- not measured: {note}" for note in info.get("bench_omitted", [])]
    return lines


def _summary(rows: list[Row]) -> list[str]:
    """Per op family: the geometric mean over its shapes of the speedup over dense, for each
    op, provider and sparsity."""
    lines = []
    for family in FAMILIES:
        ratios = defaultdict(list)
        for row in rows:
            if row.family == family and row.vs_dense is not None and row.provider != "dense":
                ratios[(row.op, row.provider_label, row.sparsity)].append(row.vs_dense)
        if not ratios:
            continue
        provider_of = {row.provider_label: row.provider for row in rows}
        sparsities = sorted({key[2] for key in ratios})
        pairs = sorted(
            {key[:2] for key in ratios},
            key=lambda pair: (pair[0], provider_order(provider_of[pair[1]]), pair[1]),
        )
        lines += [
            f"### {family}",
            "",
            "| op | provider | " + " | ".join(f"{s:.1%}" for s in sparsities) + " |",
            "|" + " --- |" * (len(sparsities) + 2),
        ]
        for op, provider in pairs:
            cells = [_geomean(ratios.get((op, provider, s))) for s in sparsities]
            lines.append(f"| {op.split('.', 1)[1]} | {provider} | " + " | ".join(cells) + " |")
        ideal = [f"{1 / max(1 - s, 1e-12):.1f}" for s in sparsities]
        lines += ["| | ideal (1 / density) | " + " | ".join(ideal) + " |", ""]
    if not lines:
        return []
    return [
        "## Summary: speedup over dense",
        "",
        "Geometric mean over the shapes of each op, by sparsity.",
        "",
    ] + lines


def _geomean(values) -> str:
    if not values:
        return ""
    return f"{math.exp(sum(math.log(v) for v in values) / len(values)):.2f}"


def _table(rows: list[Row]) -> list[str]:
    per_thousand = rows[0].family == "end_to_end"
    time_header = "s / 1,000 it." if per_thousand else "median"
    # The ratio to SparseProp only in the tables of the ops it runs.
    with_sparseprop = any(row.vs_sparseprop is not None for row in rows)
    lines = [
        f"| op | shape | dtype | provider | sparsity | {time_header} | vs dense | "
        f"vs prune-style | " + ("vs sparseprop | " if with_sparseprop else "") + "ideal |",
        "|" + " --- |" * (10 if with_sparseprop else 9),
    ]
    first_seen = {}
    for row in rows:
        first_seen.setdefault(row.shape, len(first_seen))
    ordered = sorted(
        rows,
        key=lambda r: (
            r.op,
            first_seen[r.shape],
            r.dtype,
            provider_order(r.provider),
            r.provider_label,
            r.sparsity,
        ),
    )
    for row in ordered:
        if per_thousand:
            seconds = row.median_s / (row.iterations_per_call or 1) * 1000
            time = f"{seconds:.2f} s"
            # The ideal level costs density x dense: dense = vs_dense x this row's time.
            ideal = "" if row.vs_dense is None else f"{seconds * row.vs_dense * row.density:.2f} s"
        else:
            time = format_seconds(row.median_s)
            ideal = f"{row.ideal_vs_dense:.1f}"
        versus_sparseprop = f"{_ratio(row.vs_sparseprop)} | " if with_sparseprop else ""
        lines.append(
            f"| {row.op.split('.', 1)[1]} | {row.shape} | {row.dtype} | "
            f"{row.row_label} | {row.sparsity:.1%} | {time} | "
            f"{_ratio(row.vs_dense)} | "
            f"{_ratio(row.vs_prune_style)} | {versus_sparseprop}{ideal} |"
        )
    return lines


def _ratio(value) -> str:
    return "" if value is None else f"{value:.2f}"
