"""The rows of a pytest-benchmark JSON file, each with its ratios to the baselines of its group.

A group is one op on one shape in one dtype. ``vs_dense`` is the dense row's median over this
row's median (above 1: faster than dense), from the dense row of the group (timed once, at
sparsity 0: it never looks at the mask). ``vs_prune_style`` is the same against the
prune-style row of the group at the same sparsity, and ``vs_sparseprop`` against SparseProp's
row (its fastest correct variant) at the same sparsity. All come from the same run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .providers import DENSE, PRUNE_STYLE, SPARSEPROP

_FIELDS = ("op", "provider", "provider_kind", "shape", "dtype", "sparsity")


@dataclass(frozen=True)
class Row:
    op: str
    provider: str
    provider_kind: str
    shape: str
    dtype: str
    sparsity: float
    median_s: float
    rounds: int
    iterations_per_call: int | None = None
    # The backend(s) auto-selection gave a row that was not forced onto one (compact).
    backend: str | None = None
    # SparseProp rows: the variant timed (the fastest correct one), the variants that computed
    # the right numbers, and those that did not, with their relative errors.
    variant: str | None = None
    variants_correct: tuple = ()
    variants_wrong: tuple = ()
    vs_dense: float | None = None
    vs_prune_style: float | None = None
    vs_sparseprop: float | None = None

    @property
    def family(self) -> str:
        """The op without its pass: ``masked_linear`` for ``masked_linear.forward``."""
        return self.op.split(".", 1)[0]

    @property
    def provider_label(self) -> str:
        """The provider, with the backend it ran on where that is not its own name:
        ``compact (cpu)``."""
        if self.backend and self.backend != self.provider:
            return f"{self.provider} ({self.backend})"
        return self.provider

    @property
    def row_label(self) -> str:
        """:attr:`provider_label`, with the variant timed where the provider has several:
        ``sparseprop [output_width]``."""
        return f"{self.provider_label} [{self.variant}]" if self.variant else self.provider_label

    @property
    def density(self) -> float:
        return 1.0 - self.sparsity

    @property
    def ideal_vs_dense(self) -> float:
        """The speedup over dense of a kernel whose cost falls with the density: 1 / density."""
        return 1.0 / max(self.density, 1e-12)

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.op, self.shape, self.dtype)


def load_results(json_path: Path) -> tuple[dict, list[Row]]:
    """``(machine_info, rows)`` of a results JSON, rows in the order they were measured."""
    try:
        results = json.loads(Path(json_path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no benchmark results at {json_path}; expected the JSON "
            f"written by python -m benchmarks.run"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{json_path} is not JSON ({error}); expected pytest-benchmark's "
            f"--benchmark-json output"
        ) from None
    if not isinstance(results, dict) or "benchmarks" not in results:
        raise ValueError(
            f"{json_path} has no 'benchmarks' list; expected pytest-benchmark's "
            f"--benchmark-json output"
        )
    rows = [_row(entry, json_path) for entry in results["benchmarks"]]
    return results.get("machine_info", {}), with_ratios(rows)


def _row(entry: dict, json_path: Path) -> Row:
    extra = entry.get("extra_info", {})
    missing = [field for field in _FIELDS if field not in extra]
    if missing:
        raise ValueError(
            f"benchmark {entry.get('name')!r} in {json_path} lacks extra_info "
            f"{', '.join(missing)}; expected rows timed by benchmarks.measure"
        )
    return Row(
        **{field: extra[field] for field in _FIELDS},
        median_s=entry["stats"]["median"],
        rounds=entry["stats"]["rounds"],
        iterations_per_call=extra.get("iterations_per_call"),
        backend=extra.get("backend"),
        variant=extra.get("variant"),
        variants_correct=tuple(extra.get("variants_correct", ())),
        variants_wrong=tuple(sorted(extra.get("variants_wrong", {}).items())),
    )


def with_ratios(rows: list[Row]) -> list[Row]:
    """``rows`` with ``vs_dense``, ``vs_prune_style`` and ``vs_sparseprop`` filled in where
    the group has them."""
    dense = {row.group: row.median_s for row in rows if row.provider == DENSE}
    prune_style = {
        (row.group, row.sparsity): row.median_s for row in rows if row.provider == PRUNE_STYLE
    }
    sparseprop = {
        (row.group, row.sparsity): row.median_s for row in rows if row.provider == SPARSEPROP
    }

    def ratio(baseline: float | None, row: Row) -> float | None:
        return baseline / row.median_s if baseline is not None and row.median_s > 0 else None

    return [
        Row(
            **{
                **row.__dict__,
                "vs_dense": ratio(dense.get(row.group), row),
                "vs_prune_style": ratio(prune_style.get((row.group, row.sparsity)), row),
                "vs_sparseprop": ratio(sparseprop.get((row.group, row.sparsity)), row),
            }
        )
        for row in rows
    ]


def format_seconds(seconds: float) -> str:
    """``seconds`` with three significant digits in s, ms, us or ns."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"
