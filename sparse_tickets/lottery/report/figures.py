"""The report's plots, drawn as Frankle & Carbin draw theirs: percent of weights remaining on a
reversed log axis, so density falls from left to right, ticked at the densities the runs
reached; one line per branch, the mean over seeds with error bars from the lowest to the
highest seed, and the dense network's accuracy as a horizontal line; the training curves
(test accuracy against iteration, a line per level) as their Figure 3.

matplotlib is imported only here, inside the functions, and only through its object API
(``Figure`` and the Agg canvas): no pyplot, so no global figure registry or backend switch.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

from ..runs import BRANCHES
from .results import BRANCH_LABELS, Configuration, LevelSummary, Spread

DPI = 120
MAX_TICKS = 8
# Ticks closer than this factor would print on top of one another.
MIN_TICK_RATIO = 1.15
MAX_CURVES = 6  # levels drawn per configuration in the training curves
MAX_CURVE_PANELS = 6  # configurations drawn in the training curves
_BRANCH_STYLES = {"main": ("o", "-"), "reinit": ("s", "--"), "random_pruning": ("^", ":")}


def accuracy_png(configurations: Sequence[Configuration]) -> bytes:
    return png_bytes(accuracy_figure(configurations))


def early_stop_png(configurations: Sequence[Configuration]) -> bytes:
    return png_bytes(early_stop_figure(configurations))


def accuracy_figure(configurations: Sequence[Configuration]):
    """Test accuracy at early stop (percent) against percent of weights remaining: a
    matplotlib ``Figure``."""
    return _density_figure(
        configurations,
        lambda summary: summary.early_stop_test_accuracy,
        scale=100.0,
        ylabel="test accuracy at early stop (%)",
        title="Test accuracy at early stop",
        dense_line=True,
    )


def early_stop_figure(configurations: Sequence[Configuration]):
    """The early-stop iteration (minimum validation loss) against percent of weights
    remaining: a matplotlib ``Figure``."""
    return _density_figure(
        configurations,
        lambda summary: summary.early_stop_iteration,
        scale=1.0,
        ylabel="early-stop iteration",
        title="Early-stop iteration (minimum validation loss)",
    )


def png_bytes(figure) -> bytes:
    """``figure`` as a PNG file's bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def density_ticks(percents: Sequence[float], max_ticks: int = MAX_TICKS) -> list[float]:
    """The densities to tick, largest first: all of them when they fit, else an evenly spread
    subset in log space (100, 51.2, 26.2, 13.4, ... for twenty levels at 20% per level)."""
    values = sorted(set(percents), reverse=True)
    span = math.log(values[0]) - math.log(values[-1])
    gap = max(span / max(max_ticks - 1, 1), math.log(MIN_TICK_RATIO))
    chosen = [values[0]]
    for value in values[1:]:
        # The tolerance keeps levels that are exactly ``gap`` apart despite rounding.
        if math.log(chosen[-1]) - math.log(value) >= gap * (1 - 1e-9):
            chosen.append(value)
    return chosen


def format_percent(percent: float) -> str:
    """A tick label: three significant digits (100, 51.2, 6.87, 0.352)."""
    return f"{percent:.3g}"


def _density_figure(
    configurations: Sequence[Configuration],
    quantity: Callable[[LevelSummary], Spread],
    scale: float,
    ylabel: str,
    title: str,
    dense_line: bool = False,
):
    figure_class, canvas_class = _matplotlib()
    several = len(configurations) > 1
    lines = sum(len(configuration.summaries) for configuration in configurations)
    figure = figure_class(
        figsize=(7.0, _height(lines if several else 0)), dpi=DPI, layout="constrained"
    )
    canvas_class(figure)
    axes = figure.add_subplot()
    percents, banded, drawn, dense_drawn = [], False, [], set()
    for index, configuration in enumerate(configurations):
        for branch, by_level in configuration.summaries.items():
            summaries = list(by_level.values())
            x = [summary.percent_remaining for summary in summaries]
            spreads = [quantity(summary) for summary in summaries]
            # One configuration: a color per branch. Several: a color per configuration, and
            # the branch in the marker and line style.
            color = f"C{(index if several else BRANCHES.index(branch)) % 10}"
            marker, linestyle = _BRANCH_STYLES[branch]
            means = [scale * spread.mean for spread in spreads]
            label = _line_label(configuration, branch, summaries, several)
            drawn.append(label)
            if any(summary.n_seeds > 1 for summary in summaries):
                # The paper's error bars: from the lowest to the highest seed.
                errors = [
                    [mean - scale * spread.minimum for mean, spread in zip(means, spreads)],
                    [scale * spread.maximum - mean for mean, spread in zip(means, spreads)],
                ]
                axes.errorbar(
                    x,
                    means,
                    yerr=errors,
                    color=color,
                    marker=marker,
                    markersize=5,
                    linestyle=linestyle,
                    capsize=3,
                    elinewidth=1,
                    label=label,
                )
                banded = True
            else:
                axes.plot(
                    x,
                    means,
                    color=color,
                    marker=marker,
                    markersize=5,
                    linestyle=linestyle,
                    label=label,
                )
            percents += x
        dense = configuration.summaries.get("main", {}).get(0)
        # Configurations that share their dense level (one-shot runs beside an IMP run of the
        # same training) share one line.
        dense_key = dense is not None and (
            configuration.hparams.get("model"),
            configuration.hparams.get("dataset"),
            round(quantity(dense).mean, 9),
        )
        if dense_line and dense is not None and dense_key not in dense_drawn:
            dense_drawn.add(dense_key)
            drawn.append(
                f"{configuration.label}: dense (100%)" if several else "dense network (100%)"
            )
            axes.axhline(
                scale * quantity(dense).mean,
                color=f"C{index % 10}" if several else "0.4",
                linestyle=(0, (6, 3)),
                linewidth=1,
                alpha=0.7,
                label=drawn[-1],
            )
    _density_axis(axes, percents)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    subtitle = [] if several else [configurations[0].label]
    if banded:
        subtitle.append("mean over seeds, error bars: min–max")
    axes.set_title("\n".join([title, "; ".join(subtitle)]) if subtitle else title, fontsize=10)
    # The legend in drawing order (matplotlib lists plain lines before error-bar lines).
    handles, labels = axes.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: drawn.index(labels[i]))
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    if several:
        # Long labels would cover the lines: put them under the plot instead.
        axes.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    else:
        axes.legend(handles, labels, fontsize=8, loc="best")
    return figure


def _height(legend_lines: int) -> float:
    """The figure's height in inches: the plot, and a legend of ``legend_lines`` lines under
    it (long configuration labels would otherwise squeeze the plot to nothing)."""
    return 4.8 + 0.2 * legend_lines


def _line_label(
    configuration: Configuration, branch: str, summaries: list[LevelSummary], several: bool
) -> str:
    label = BRANCH_LABELS[branch]
    if several:
        label = f"{configuration.label}: {label}"
    seeds = max(summary.n_seeds for summary in summaries)
    return f"{label} ({seeds} seeds)" if seeds > 1 else label


def _density_axis(axes, percents: list[float]) -> None:
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    ticks = density_ticks(percents)
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_major_formatter(FixedFormatter([format_percent(t) for t in ticks]))
    # The log axis' own minor ticks would label 2x10^1 and the like between ours.
    axes.xaxis.set_minor_locator(NullLocator())
    high, low = max(percents), min(percents)
    margin = (high / low) ** 0.04 if high > low else 1.25
    axes.set_xlim(high * margin, low / margin)  # reversed: density falls left to right
    axes.set_xlabel("weights remaining (%)")


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "the report's plots need matplotlib; install it with `pip install matplotlib`"
        ) from None
    return Figure, FigureCanvasAgg


def one_shot_png(configurations: Sequence[Configuration]) -> bytes:
    return png_bytes(one_shot_figure(configurations))


def instability_png(configurations: Sequence[Configuration]) -> bytes:
    return png_bytes(instability_figure(configurations))


def one_shot_figure(configurations: Sequence[Configuration]):
    """Test accuracy at early stop against percent remaining: the IMP tickets as lines, each
    one-shot method (pruning at initialisation, or one-shot magnitude) as a line through its
    runs' densities."""
    from .comparison import imp_label, is_imp, one_shot_curves

    figure_class, canvas_class = _matplotlib()
    lines = len(list(filter(is_imp, configurations))) + len(one_shot_curves(configurations))
    figure = figure_class(figsize=(7.0, _height(lines)), dpi=DPI, layout="constrained")
    canvas_class(figure)
    axes = figure.add_subplot()
    percents, color = [], 0
    for configuration in filter(is_imp, configurations):
        summaries = list(configuration.summaries["main"].values())
        x = [summary.percent_remaining for summary in summaries]
        axes.plot(
            x,
            [100 * s.early_stop_test_accuracy.mean for s in summaries],
            color=f"C{color % 10}",
            marker="o",
            markersize=5,
            label=imp_label(configuration, configurations),
        )
        percents += x
        color += 1
    for label, summaries in one_shot_curves(configurations).items():
        x = [summary.percent_remaining for summary in summaries]
        # Hollow and larger than the IMP markers: a one-shot point at an IMP density shows
        # around the IMP point instead of hiding it.
        axes.plot(
            x,
            [100 * s.early_stop_test_accuracy.mean for s in summaries],
            color=f"C{color % 10}",
            marker="s",
            markersize=9,
            markerfacecolor="none",
            markeredgewidth=1.5,
            linestyle="--",
            label=f"one-shot {label}",
        )
        percents += x
        color += 1
    _density_axis(axes, percents)
    axes.set_ylabel("test accuracy at early stop (%)")
    axes.grid(alpha=0.3)
    axes.set_title("One-shot pruning against IMP at equal density\n(mean over seeds)", fontsize=10)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    return figure


def instability_figure(configurations: Sequence[Configuration]):
    """Left: the test error along the linear path between the two copies, a line per analysed
    level and spawn iteration K. Right: the test error barrier against percent remaining, a
    line per K (Frankle et al., ICML 2020, figures 3 and 5)."""
    figure_class, canvas_class = _matplotlib()
    figure = figure_class(figsize=(11.0, 4.8), dpi=DPI, layout="constrained")
    canvas_class(figure)
    path_axes, barrier_axes = figure.subplots(1, 2)
    several = len([c for c in configurations if c.instability]) > 1
    percents, line = [], 0
    for configuration in configurations:
        by_iteration: dict[tuple, list] = {}
        for summary in configuration.instability:
            label = (
                f"{BRANCH_LABELS[summary.branch]} {summary.percent_remaining:.3g}%"
                f", K={summary.iteration}"
            )
            if several:
                label = f"{configuration.label}: {label}"
            path_axes.plot(
                summary.alphas,
                [100 * e for e in summary.test_error],
                color=f"C{line % 10}",
                marker=".",
                label=label,
            )
            line += 1
            by_iteration.setdefault((summary.branch, summary.iteration), []).append(summary)
        for (branch, iteration), summaries in by_iteration.items():
            summaries.sort(key=lambda s: -s.percent_remaining)
            x = [s.percent_remaining for s in summaries]
            label = f"{BRANCH_LABELS[branch]}, K={iteration}"
            if several:
                label = f"{configuration.label}: {label}"
            barrier_axes.plot(
                x, [100 * s.test_barrier.mean for s in summaries], marker="o", label=label
            )
            if any(s.n_seeds > 1 for s in summaries):
                barrier_axes.fill_between(
                    x,
                    [100 * s.test_barrier.minimum for s in summaries],
                    [100 * s.test_barrier.maximum for s in summaries],
                    alpha=0.15,
                    linewidth=0,
                )
            percents += x
    path_axes.set_xlabel("interpolation α (0: copy 0, 1: copy 1)")
    path_axes.set_ylabel("test error (%)")
    path_axes.set_title("Test error along the linear path", fontsize=10)
    path_axes.grid(alpha=0.3)
    path_axes.legend(fontsize=7, loc="best")
    _density_axis(barrier_axes, percents)
    barrier_axes.set_ylabel("test error barrier (percentage points)")
    barrier_axes.set_title("Instability: max error on the path − mean of its ends", fontsize=10)
    barrier_axes.grid(alpha=0.3)
    barrier_axes.legend(fontsize=7, loc="best")
    return figure


def training_curves_png(configurations: Sequence[Configuration]) -> bytes:
    return png_bytes(training_curves_figure(configurations))


def training_curves_figure(configurations: Sequence[Configuration]):
    """Test accuracy against training iteration, a line per level of the main branch (at
    most :data:`MAX_CURVES`, spread over the densities), the mean over seeds; a panel per
    configuration (the first :data:`MAX_CURVE_PANELS`). Frankle & Carbin's Figure 3."""
    figure_class, canvas_class = _matplotlib()
    shown = [c for c in configurations if c.summaries.get("main")][:MAX_CURVE_PANELS]
    columns = min(len(shown), 2) or 1
    rows = max(1, math.ceil(len(shown) / columns))
    figure = figure_class(figsize=(6.0 * columns, 4.2 * rows), dpi=DPI, layout="constrained")
    canvas_class(figure)
    panels = figure.subplots(rows, columns, squeeze=False).ravel()
    for axes, configuration in zip(panels, shown):
        levels = list(configuration.summaries["main"].values())
        wanted = set(density_ticks([s.percent_remaining for s in levels], MAX_CURVES))
        chosen = [s for s in levels if s.percent_remaining in wanted and s.curve]
        for index, summary in enumerate(chosen):
            iterations = [iteration for iteration, _ in summary.curve]
            axes.plot(
                iterations,
                [100 * accuracy for _, accuracy in summary.curve],
                color=f"C{index % 10}",
                linewidth=1.3,
                label=f"{format_percent(summary.percent_remaining)}%"
                + (f" ({summary.n_seeds} seeds)" if summary.n_seeds > 1 else ""),
            )
        axes.set_xlabel("training iteration")
        axes.set_ylabel("test accuracy (%)")
        axes.set_title(configuration.label, fontsize=9)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="lower right", title="weights remaining", title_fontsize=7)
    for axes in panels[len(shown) :]:
        axes.set_visible(False)
    more = len([c for c in configurations if c.summaries.get("main")]) - len(shown)
    figure.suptitle(
        "Test accuracy during training, per level (mean over seeds)"
        + (f"; {more} more configuration(s) in report.md" if more > 0 else ""),
        fontsize=10,
    )
    return figure
