"""PNG plots: speedup over dense against sparsity, one figure per op family.

Each figure is a grid: a row per shape (and dtype), a column per pass of the op (forward,
forward_backward; sgd_step, adam_step). In each panel: one line per backend, compact mode and
baseline, and the ideal speedup 1 / density as a dashed line. The x axis is 1 / density on a
log scale, labelled with the sparsity, so the ideal is the diagonal.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on the benchmark machines
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator  # noqa: E402

from .rows import Row  # noqa: E402
from .table import FAMILIES, provider_order  # noqa: E402


def plot_family(rows: list[Row], family: str, title: str, path: Path) -> Path:
    """Draw ``family``'s rows (with ratios) into ``path``; return it."""
    rows = [row for row in rows if row.family == family and row.vs_dense is not None]
    panels = list(dict.fromkeys((row.shape, row.dtype) for row in rows))
    passes = list(dict.fromkeys(row.op.split(".", 1)[1] for row in rows))
    figure, axes = plt.subplots(
        len(panels), len(passes), squeeze=False, figsize=(5.5 * len(passes), 3.6 * len(panels))
    )
    for i, (shape, dtype) in enumerate(panels):
        for j, op_pass in enumerate(passes):
            panel_rows = [
                row
                for row in rows
                if (row.shape, row.dtype) == (shape, dtype) and row.op.endswith("." + op_pass)
            ]
            _draw_panel(axes[i][j], panel_rows, f"{op_pass}: {shape} ({dtype})")
    figure.suptitle(title, fontsize=12)
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial.png")
    figure.savefig(partial, dpi=80)
    plt.close(figure)
    partial.replace(path)
    return path


def _draw_panel(ax, rows: list[Row], title: str) -> None:
    ax.set_title(title, fontsize=8)
    if not rows:
        ax.set_axis_off()
        return
    inverse_density = sorted({row.ideal_vs_dense for row in rows})
    provider_of = {row.provider_label: row.provider for row in rows}
    for label in sorted(provider_of, key=lambda label: (provider_order(provider_of[label]), label)):
        points = sorted(
            (row.ideal_vs_dense, row.vs_dense) for row in rows if row.provider_label == label
        )
        if provider_of[label] == "dense":  # timed once: it is 1 at every sparsity by definition
            points = [(x, 1.0) for x in inverse_density]
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, label=label)
    # Markers too: with a single sparsity (the optimizer step) a line has nothing to draw.
    ax.plot(
        inverse_density,
        inverse_density,
        "k--",
        marker="x",
        markersize=4,
        linewidth=1,
        label="ideal (1 / density)",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(inverse_density)
    ax.set_xticklabels([f"{1 - 1 / x:.0%}" for x in inverse_density], fontsize=7)
    ax.xaxis.set_minor_locator(NullLocator())
    # Label 2x and 5x too: speedups often stay within one decade, where 1 is the only major.
    ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="both", labelsize=7)
    ax.set_xlabel("sparsity", fontsize=8)
    ax.set_ylabel("speedup over dense", fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=6)


def plot_all(rows: list[Row], directory: Path, device_name: str) -> list[Path]:
    """One PNG per op family that has rows: ``<directory>/<family>.png``."""
    written = []
    for family in FAMILIES:
        if any(row.family == family and row.vs_dense is not None for row in rows):
            title = f"{family}: speedup over dense on {device_name}"
            written.append(plot_family(rows, family, title, directory / f"{family}.png"))
    return written
