"""The report's tables: ``report.md`` (a markdown table per configuration, for people) and
``summary.csv`` (every number at full precision, in the units of metrics.json, for checking
and for other tools)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from ..hparams import Hparams
from .results import BRANCH_LABELS, SEED_FIELDS, Configuration, LevelSummary, Spread

CSV_COLUMNS = (
    "configuration",
    "branch",
    "level",
    "percent_remaining",
    "n_seeds",
    "early_stop_test_accuracy_mean",
    "early_stop_test_accuracy_std",
    "early_stop_test_accuracy_min",
    "early_stop_test_accuracy_max",
    "early_stop_iteration_mean",
    "final_test_accuracy_mean",
    "wall_time_seconds_mean",
    "n_diverged",
)
# Shown in each configuration's header whatever their value; the other fields only when they
# differ from their default, so the header stays short and still names what matters.
ALWAYS_SHOWN = (
    "optimizer",
    "lr",
    "batch_size",
    "iterations",
    "levels",
    "scope",
    "rewind",
    "controls",
)
MISSING = "—"


def summary_csv(configurations: Sequence[Configuration]) -> str:
    """One row per configuration, branch and level. Accuracies are fractions and
    percent_remaining a percentage, as in metrics.json; the std is the sample standard
    deviation over seeds, empty for a single seed, and min and max the range over seeds.
    ``n_diverged`` counts the seeds whose training diverged at that level, which no other
    column includes; a level where every seed diverged has only that count."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for configuration in configurations:
        for branch, level in _branch_levels(configuration):
            summary = configuration.summaries.get(branch, {}).get(level)
            diverged = configuration.diverged_at(branch, level)
            if summary is None:
                writer.writerow(
                    [
                        configuration.label,
                        branch,
                        level,
                        diverged[0].percent_remaining,
                        0,
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        len(diverged),
                    ]
                )
                continue
            accuracy_std = summary.early_stop_test_accuracy.std
            writer.writerow(
                [
                    configuration.label,
                    branch,
                    level,
                    summary.percent_remaining,
                    summary.n_seeds,
                    summary.early_stop_test_accuracy.mean,
                    "" if accuracy_std is None else accuracy_std,
                    summary.early_stop_test_accuracy.minimum,
                    summary.early_stop_test_accuracy.maximum,
                    summary.early_stop_iteration.mean,
                    summary.final_test_accuracy.mean,
                    summary.wall_time_seconds.mean,
                    len(diverged),
                ]
            )
    return buffer.getvalue()


def _branch_levels(configuration: Configuration) -> list[tuple[str, int]]:
    """(branch, level) of every summary and diverged level, in branch and level order."""
    from ..runs import BRANCHES

    pairs = {
        (branch, level)
        for branch, by_level in configuration.summaries.items()
        for level in by_level
    }
    pairs |= {(diverged.branch, diverged.level) for diverged in configuration.diverged}
    return sorted(pairs, key=lambda pair: (BRANCHES.index(pair[0]), pair[1]))


def markdown_report(configurations: Sequence[Configuration]) -> str:
    """A section per configuration: its label, key hyperparameters, runs and a table with a row
    per level."""
    lines = [
        "# Lottery-ticket report",
        "",
        "Accuracies are on the test set, in percent: at early stopping (the iteration of "
        "minimum validation loss) and at the end of training. With several seeds a cell "
        "holds the mean and, in brackets, the lowest and highest seed (the error bars of "
        "the plots); iterations and wall times are means. A branch that fewer seeds "
        "finished at a level says how many (n=...).",
        "",
    ]
    for configuration in configurations:
        lines += configuration_section(configuration)
    lines += diverged_section(configurations)
    lines += one_shot_section(configurations)
    lines += instability_section(configurations)
    return "\n".join(lines)


def diverged_section(configurations: Sequence[Configuration]) -> list[str]:
    """Every level whose training diverged, with where and why; nothing when none did."""
    rows = [diverged for configuration in configurations for diverged in configuration.diverged]
    if not rows:
        return []
    lines = [
        "## Diverged levels",
        "",
        "These levels' training diverged (a loss or a weight became NaN or infinite): "
        "their numbers are in no table or plot, nothing was pruned from them or rewound "
        "to them, and their runs stopped there. Rerun with a lower learning rate.",
        "",
        _row(["run", "branch", "level", "% remaining", "diverged at iteration", "cause"]),
        _row(["---", "---", "---:", "---:", "---:", "---"]),
    ]
    for diverged in rows:
        lines.append(
            _row(
                [
                    f"`{diverged.directory}`",
                    BRANCH_LABELS[diverged.branch],
                    str(diverged.level),
                    f"{diverged.percent_remaining:.2f}",
                    str(diverged.iteration),
                    diverged.cause,
                ]
            )
        )
    return lines + [""]


def one_shot_section(configurations: Sequence[Configuration]) -> list[str]:
    """One-shot runs (pruning at initialisation, one-shot magnitude) against the IMP level of
    the same model and dataset nearest in density; nothing when there is no one-shot run."""
    from .comparison import one_shot_comparisons

    rows = one_shot_comparisons(configurations)
    if not rows:
        return []
    lines = [
        "## One-shot pruning against IMP at equal density",
        "",
        "Each one-shot run's pruned level against the IMP level nearest in density, among "
        "the IMP runs of the same model, dataset and N:M pattern (run the one-shot runs "
        "at the IMP levels' densities for an exact match). Test accuracy at early stop, "
        "in percent; the difference is one-shot minus IMP.",
        "",
        _row(
            [
                "method",
                "one-shot configuration",
                "% remaining",
                "test acc. (%)",
                "IMP configuration",
                "IMP level",
                "IMP % remaining",
                "IMP test acc. (%)",
                "difference",
            ]
        ),
        _row(["---"] * 2 + ["---:"] * 2 + ["---"] + ["---:"] * 4),
    ]
    for row in rows:
        cells = [
            row.method,
            row.one_shot.label,
            f"{row.pruned.percent_remaining:.2f}",
            format_accuracy(row.pruned.early_stop_test_accuracy),
        ]
        if row.imp is None:
            cells += ["(no IMP run of this model, dataset and N:M pattern)"] + [MISSING] * 4
        else:
            difference = (
                row.pruned.early_stop_test_accuracy.mean
                - row.imp_level.early_stop_test_accuracy.mean
            )
            cells += [
                row.imp.label,
                str(row.imp_level.level),
                f"{row.imp_level.percent_remaining:.2f}",
                format_accuracy(row.imp_level.early_stop_test_accuracy),
                f"{100 * difference:+.2f}",
            ]
        lines.append(_row(cells))
    return lines + [""]


def instability_section(configurations: Sequence[Configuration]) -> list[str]:
    """The instability analyses: a row per configuration, branch, level and spawn iteration K;
    nothing when there is none."""
    rows = [
        (configuration, summary)
        for configuration in configurations
        for summary in configuration.instability
    ]
    if not rows:
        return []
    lines = [
        "## Instability (linear mode connectivity)",
        "",
        "Two copies trained from iteration K with different data orders, evaluated along "
        "the linear path between them (Frankle et al., ICML 2020). The barrier is the "
        "largest error on the path minus the mean error of its two ends, in percentage "
        "points: near 0, the level is stable from K on.",
        "",
        _row(
            [
                "configuration",
                "branch",
                "level",
                "% remaining",
                "K",
                "points",
                "test error at the ends (%)",
                "max test error (%)",
                "test barrier",
                "train barrier",
                "seeds",
            ]
        ),
        _row(["---", "---"] + ["---:"] * 9),
    ]
    for configuration, summary in rows:
        ends = f"{100 * summary.test_error[0]:.2f} / {100 * summary.test_error[-1]:.2f}"
        lines.append(
            _row(
                [
                    configuration.label,
                    BRANCH_LABELS[summary.branch],
                    str(summary.level),
                    f"{summary.percent_remaining:.2f}",
                    str(summary.iteration),
                    str(summary.points),
                    ends,
                    f"{100 * max(summary.test_error):.2f}",
                    format_accuracy(summary.test_barrier),
                    format_accuracy(summary.train_barrier),
                    str(summary.n_seeds),
                ]
            )
        )
    return lines + [""]


INSTABILITY_CSV_COLUMNS = (
    "configuration",
    "branch",
    "level",
    "percent_remaining",
    "iteration",
    "points",
    "n_seeds",
    "test_barrier_mean",
    "test_barrier_std",
    "train_barrier_mean",
    "alphas",
    "test_error_mean",
    "train_error_mean",
)


def instability_csv(configurations: Sequence[Configuration]) -> str:
    """The instability analyses at full precision: errors and barriers as fractions, the
    curves as space-separated values."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(INSTABILITY_CSV_COLUMNS)
    for configuration in configurations:
        for summary in configuration.instability:
            std = summary.test_barrier.std
            writer.writerow(
                [
                    configuration.label,
                    summary.branch,
                    summary.level,
                    summary.percent_remaining,
                    summary.iteration,
                    summary.points,
                    summary.n_seeds,
                    summary.test_barrier.mean,
                    "" if std is None else std,
                    summary.train_barrier.mean,
                    " ".join(map(repr, summary.alphas)),
                    " ".join(map(repr, summary.test_error)),
                    " ".join(map(repr, summary.train_error)),
                ]
            )
    return buffer.getvalue()


def configuration_section(configuration: Configuration) -> list[str]:
    """The markdown lines of one configuration."""
    seeds = ", ".join(
        f"`{run.directory}` ({'/'.join(str(seed) for seed in run.seeds)})"
        for run in configuration.runs
    )
    return [
        f"## {configuration.label}",
        "",
        f"Hyperparameters: {key_hyperparameters(configuration.hparams)}",
        "",
        f"Runs (seeds {'/'.join(SEED_FIELDS)}): {seeds}",
        "",
        *level_table(configuration),
        "",
    ]


def key_hyperparameters(hparams: dict) -> str:
    """``name=value`` for the fields that characterise a configuration (model and dataset are
    in its label, seeds are per run)."""
    defaults = Hparams().as_dict()
    return ", ".join(
        f"{name}={value}"
        for name, value in hparams.items()
        if name not in ("model", "dataset", *SEED_FIELDS)
        and (name in ALWAYS_SHOWN or value != defaults.get(name))
    )


def level_table(configuration: Configuration) -> list[str]:
    """A markdown table: level and percent remaining, four columns per branch, then seeds."""
    branches = [
        branch for branch in dict.fromkeys(branch for branch, _ in _branch_levels(configuration))
    ]
    header = ["level", "% remaining"]
    for branch in branches:
        label = BRANCH_LABELS[branch]
        header += [
            f"{label}: test acc. at early stop (%)",
            f"{label}: early-stop iteration",
            f"{label}: final test acc. (%)",
            f"{label}: wall time (s)",
        ]
    header.append("seeds")
    rows = [_row(header), _row(["---:"] * len(header))]
    for level in configuration.levels:
        summaries = {
            branch: configuration.summaries.get(branch, {}).get(level) for branch in branches
        }
        present = [summary for summary in summaries.values() if summary is not None]
        diverged = {branch: configuration.diverged_at(branch, level) for branch in branches}
        seeds = max(
            [summary.n_seeds + len(diverged[summary.branch]) for summary in present]
            + [len(found) for found in diverged.values()]
        )
        # Controls run at the main level's densities, so the ticket's figure stands for all.
        if present:
            remaining = (summaries.get("main") or present[0]).percent_remaining
        else:
            remaining = next(found for found in diverged.values() if found)[0].percent_remaining
        cells = [str(level), f"{remaining:.2f}"]
        for branch, summary in summaries.items():
            cells += _branch_cells(summary, seeds, len(diverged[branch]))
        cells.append(str(seeds))
        rows.append(_row(cells))
    return rows


def format_accuracy(spread: Spread) -> str:
    """A fraction as a percentage with two decimals, and ``[min, max]`` over the seeds when
    there are several (the plots' error bars)."""
    mean = f"{100 * spread.mean:.2f}"
    if spread.std is None:
        return mean
    return f"{mean} [{100 * spread.minimum:.2f}, {100 * spread.maximum:.2f}]"


def _branch_cells(summary: LevelSummary | None, row_seeds: int, diverged: int = 0) -> list[str]:
    if summary is None:
        return (
            [f"diverged (n={diverged})" if row_seeds > 1 else "diverged"] if diverged else [MISSING]
        ) + [MISSING] * 3
    accuracy = format_accuracy(summary.early_stop_test_accuracy)
    if summary.n_seeds < row_seeds:
        accuracy += f" (n={summary.n_seeds})"
    if diverged:
        accuracy += f", {diverged} diverged"
    return [
        accuracy,
        f"{summary.early_stop_iteration.mean:.0f}",
        format_accuracy(summary.final_test_accuracy),
        f"{summary.wall_time_seconds.mean:.1f}",
    ]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
