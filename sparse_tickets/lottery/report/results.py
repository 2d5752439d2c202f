"""The results of lottery-ticket runs, gathered for a report.

Runs whose hyperparameters agree in everything but the seeds (``model_seed``, ``data_seed``,
``control_seed``) form one configuration; for each configuration, branch and level the report
shows statistics over the seeds that finished that level. A run that has not finished every
level still counts for the levels it has, so ``n_seeds`` can differ from level to level.

A level whose training diverged is kept apart: its numbers are in no statistic, and the report
lists it (:class:`DivergedLevel`). Every metrics.json is checked before use; one that lacks a
number or holds one that cannot be (:func:`~..artifacts.metrics_problem`) is refused, named.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import divergence_of, metrics_problem
from ..hparams import BRANCH_FIELDS
from ..runs import BRANCHES, BadArtifact, Level, Run, RunError, redo_remedy

SEED_FIELDS = ("model_seed", "data_seed", "control_seed")
BRANCH_LABELS = {"main": "ticket", "reinit": "random reinit", "random_pruning": "random pruning"}
# The numbers of a level's metrics.json that the report reads.
REPORTED_METRICS = (
    "percent_remaining",
    "early_stop_test_accuracy",
    "early_stop_iteration",
    "final_test_accuracy",
    "wall_time_seconds",
)


@dataclass(frozen=True)
class RunResults:
    """The hyperparameters and the finished levels of one run directory."""

    directory: Path
    hparams: dict
    levels: dict[str, dict[int, dict]]  # branch -> level -> metrics; branches with a level only
    instability: tuple = ()  # the run's linear-path evaluations (runs.Run.instability_results)
    diverged: tuple = ()  # DivergedLevel, in branch and level order
    name: str = ""  # the run's --name, if any

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.hparams[name] for name in SEED_FIELDS)

    @property
    def configuration_hparams(self) -> dict:
        """What makes runs one configuration: every hyperparameter but the seeds and the
        branch fields (which branches a command asked for; the branches found on disk are
        what is reported)."""
        return {
            name: value
            for name, value in self.hparams.items()
            if name not in SEED_FIELDS and name not in BRANCH_FIELDS
        }


@dataclass(frozen=True)
class Spread:
    """One quantity over seeds: its mean, sample standard deviation (None for a single seed)
    and range."""

    mean: float
    std: float | None
    minimum: float
    maximum: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        values = [float(value) for value in values]
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, min(values), max(values))


@dataclass(frozen=True)
class DivergedLevel:
    """A level of a run whose training diverged: where, when and why."""

    directory: Path
    branch: str
    level: int
    percent_remaining: float
    iteration: int
    cause: str


@dataclass(frozen=True)
class LevelSummary:
    """One level of one branch of a configuration, over the seeds that finished it."""

    branch: str
    level: int
    n_seeds: int
    percent_remaining: float  # a mean, though pruning keeps the same count for every seed
    early_stop_test_accuracy: Spread  # a fraction, as in metrics.json
    early_stop_iteration: Spread
    final_test_accuracy: Spread
    wall_time_seconds: Spread
    # The mean test accuracy over the seeds at each evaluated iteration: (iteration, mean).
    curve: tuple = ()


@dataclass(frozen=True)
class Configuration:
    """Runs that differ only in their seeds, and their statistics per branch and level."""

    label: str
    hparams: dict  # every hyperparameter but the seeds
    runs: tuple[RunResults, ...]
    summaries: dict[str, dict[int, LevelSummary]]  # branch -> level -> summary, in order
    instability: tuple = ()  # InstabilitySummary, in branch, level, iteration order

    @property
    def levels(self) -> list[int]:
        """Every level that some branch finished or diverged at, in order."""
        return sorted(
            {level for by_level in self.summaries.values() for level in by_level}
            | {diverged.level for diverged in self.diverged}
        )

    @property
    def diverged(self) -> list[DivergedLevel]:
        """The diverged levels of the configuration's runs."""
        return [diverged for run in self.runs for diverged in run.diverged]

    def diverged_at(self, branch: str, level: int) -> list[DivergedLevel]:
        return [d for d in self.diverged if (d.branch, d.level) == (branch, level)]


def load_configurations(
    run_directories: Iterable, on_skip: Callable[[str], None] = lambda line: None
) -> list[Configuration]:
    """The runs in ``run_directories`` grouped into configurations, in order of first
    appearance, each with a label that tells it apart from the others. A run with no finished
    level yet is left out, with one line to ``on_skip``."""
    groups: dict[str, list[RunResults]] = {}
    for run in load_runs(run_directories, on_skip):
        groups.setdefault(_key(run.configuration_hparams), []).append(run)
    if not any(run.levels for runs in groups.values() for run in runs):
        first = next(iter(groups.values()))[0].diverged[0]
        raise RunError(
            f"every finished level diverged (e.g. {first.branch} level "
            f"{first.level} of {first.directory} at iteration {first.iteration}: "
            f"{first.cause}); nothing to report: rerun with a lower --lr"
        )
    hparams = [runs[0].configuration_hparams for runs in groups.values()]
    names = [_shared_name(runs) for runs in groups.values()]
    return [
        Configuration(label, values, tuple(runs), summarize(runs), summarize_instability(runs))
        for label, values, runs in zip(
            configuration_labels(hparams, names), hparams, groups.values()
        )
    ]


def _shared_name(runs: Sequence[RunResults]) -> str:
    """The --name all of a configuration's runs were given, or ''."""
    names = {run.name for run in runs}
    return names.pop() if len(names) == 1 else ""


def load_runs(
    run_directories: Iterable, on_skip: Callable[[str], None] = lambda line: None
) -> list[RunResults]:
    """The hyperparameters and finished levels of each run directory; a directory named twice
    counts once; a run with no finished (or diverged) level yet is left out, said in one line
    to ``on_skip``; when every run is, RunError."""
    if isinstance(run_directories, (str, bytes, os.PathLike)):
        raise TypeError(
            f"run_directories is the single path {run_directories!r}; expected a "
            f"list of run directories"
        )
    directories = list({Path(d).resolve(): Path(d) for d in run_directories}.values())
    if not directories:
        raise ValueError("no run directories given; expected at least one")
    results, seen, unfinished = [], {}, []
    for directory in directories:
        result = _load_run(directory)
        if result is None:
            unfinished.append(directory)
            on_skip(f"left out: {directory} has no finished level yet")
            continue
        key = _key(result.hparams)
        if key in seen:
            raise RunError(
                f"{seen[key]} and {directory} hold the same hyperparameters and seeds; "
                f"expected each seed's run once"
            )
        seen[key] = directory
        results.append(result)
    if not results:
        raise RunError(
            f"{unfinished[0]} has no finished level in any branch"
            + (f" (nor have the {len(unfinished) - 1} other runs)" if len(unfinished) > 1 else "")
            + "; expected at least one <branch>/level_<L>/metrics.json (run "
            "`sparse-tickets imp` first)"
        )
    return results


def summarize(runs: Sequence[RunResults]) -> dict[str, dict[int, LevelSummary]]:
    """branch -> level -> statistics over the runs that finished that level of that branch."""
    summaries = {}
    for branch in BRANCHES:
        levels = sorted({level for run in runs for level in run.levels.get(branch, {})})
        if levels:
            summaries[branch] = {
                level: _summarize_level(
                    branch,
                    level,
                    [
                        run.levels[branch][level]
                        for run in runs
                        if level in run.levels.get(branch, {})
                    ],
                )
                for level in levels
            }
    return summaries


@dataclass(frozen=True)
class InstabilitySummary:
    """One instability analysis (branch, level, spawn iteration, points on the path) of a
    configuration, over the seeds that finished it: the barriers and the mean error curves."""

    branch: str
    level: int
    iteration: int
    points: int
    n_seeds: int
    percent_remaining: float
    test_barrier: Spread  # fractions of the error, as in path_<N>.json
    train_barrier: Spread
    alphas: tuple
    test_error: tuple  # the mean over seeds at each alpha
    train_error: tuple


INSTABILITY_FIELDS = (
    "branch",
    "level",
    "iteration",
    "points",
    "percent_remaining",
    "alphas",
    "test_error",
    "train_error",
    "test_barrier",
    "train_barrier",
)


def summarize_instability(runs: Sequence[RunResults]) -> tuple:
    """The instability analyses of ``runs``, one summary per (branch, level, iteration,
    points), averaged over the runs that finished it."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        for result in run.instability:
            key = (result["branch"], result["level"], result["iteration"], result["points"])
            groups.setdefault(key, []).append(result)
    summaries = []
    for (branch, level, iteration, points), results in sorted(
        groups.items(), key=lambda item: (BRANCHES.index(item[0][0]), *item[0][1:])
    ):
        summaries.append(
            InstabilitySummary(
                branch=branch,
                level=level,
                iteration=iteration,
                points=points,
                n_seeds=len(results),
                percent_remaining=statistics.fmean(r["percent_remaining"] for r in results),
                test_barrier=Spread.of([r["test_barrier"] for r in results]),
                train_barrier=Spread.of([r["train_barrier"] for r in results]),
                alphas=tuple(results[0]["alphas"]),
                test_error=tuple(
                    statistics.fmean(values) for values in zip(*(r["test_error"] for r in results))
                ),
                train_error=tuple(
                    statistics.fmean(values) for values in zip(*(r["train_error"] for r in results))
                ),
            )
        )
    return tuple(summaries)


def configuration_labels(
    configurations: Sequence[dict], names: Sequence[str] | None = None
) -> list[str]:
    """A configuration's name (``--name``) when its runs share one that no other
    configuration has; else ``model/dataset``, then each setting in which it differs from
    another configuration of the same model and dataset, in words (``lenet_300_100/mnist5k,
    rewind iteration, lr 0.01``): short, and still unique, since two configurations differ in
    at least one field."""
    names = list(names) if names is not None else [""] * len(configurations)
    labels = []
    for hparams, name in zip(configurations, names):
        if name and names.count(name) == 1:
            labels.append(name)
            continue
        siblings = [
            other
            for other in configurations
            if (other["model"], other["dataset"]) == (hparams["model"], hparams["dataset"])
        ]
        differing = [
            readable_setting(field, value)
            for field, value in hparams.items()
            if field not in ("model", "dataset")
            and any(other.get(field) != value for other in siblings)
        ]
        labels.append(", ".join([f"{hparams['model']}/{hparams['dataset']}", *differing]))
    return labels


# Settings whose field name or value reads badly in a legend.
_SETTING_WORDS = {
    "masks_sha256": "masks",
    "one_shot_density": "one-shot density",
    "fc_fraction": "fc rate",
    "conv_fraction": "conv rate",
    "output_fraction": "output rate",
    "nm": "N:M",
}


def readable_setting(field: str, value) -> str:
    """One setting in words: ``lr 0.01``, ``rewind iteration``, ``masks 3f2a9c1e``,
    ``N:M none``."""
    words = _SETTING_WORDS.get(field, field.replace("_", " "))
    if field == "masks_sha256":
        value = value[:8] if value else "none (dense start)"
    elif value in ("", None):
        value = "none"
    elif isinstance(value, float):
        value = f"{value:g}"
    return f"{words} {value}"


def _load_run(directory: Path) -> RunResults | None:
    run = Run.open(directory)
    levels, diverged = {}, []
    for branch in BRANCHES:
        finished = {}
        for level, metrics in run.finished_levels(branch).items():
            _check_metrics(run.level(branch, level), metrics)
            divergence = divergence_of(metrics)
            if divergence is None:
                finished[level] = metrics
            else:
                diverged.append(
                    DivergedLevel(
                        run.directory,
                        branch,
                        level,
                        metrics["percent_remaining"],
                        divergence["iteration"],
                        divergence["cause"],
                    )
                )
        if finished:
            levels[branch] = finished
    if not levels and not diverged:
        return None
    instability = tuple(
        _checked_instability(run.directory, result) for result in run.instability_results()
    )
    return RunResults(
        run.directory, run.hparams.as_dict(), levels, instability, tuple(diverged), run.name or ""
    )


def _checked_instability(directory: Path, result: dict) -> dict:
    missing = [name for name in INSTABILITY_FIELDS if name not in result]
    lengths = {len(result.get(name) or ()) for name in ("alphas", "test_error", "train_error")}
    if missing or len(lengths) != 1 or result.get("branch") not in BRANCHES:
        raise RunError(
            f"an instability result in {directory / 'instability'} lacks "
            f"{', '.join(missing) or 'equal-length curves'}; expected a path_<N>.json "
            f"written by `sparse-tickets instability`"
        )
    return result


def _check_metrics(level: Level, metrics: dict) -> None:
    # Old or hand-edited metrics would otherwise fail later with a bare KeyError.
    missing = [
        name
        for name in REPORTED_METRICS
        if isinstance(metrics.get(name), bool) or not isinstance(metrics.get(name), (int, float))
    ]
    diverged = metrics.get("diverged") is True
    if missing and not (
        diverged and set(missing) <= {"early_stop_test_accuracy", "early_stop_iteration"}
    ):
        raise BadArtifact(
            level.metrics, f"lacks the number(s) {', '.join(missing)}", redo_remedy(level)
        )
    problem = metrics_problem(metrics, level)
    if problem:
        raise BadArtifact(level.metrics, problem, redo_remedy(level))


def _summarize_level(branch: str, level: int, metrics: list[dict]) -> LevelSummary:
    def spread(name: str) -> Spread:
        return Spread.of([values[name] for values in metrics])

    return LevelSummary(
        branch=branch,
        level=level,
        n_seeds=len(metrics),
        percent_remaining=statistics.fmean(values["percent_remaining"] for values in metrics),
        early_stop_test_accuracy=spread("early_stop_test_accuracy"),
        early_stop_iteration=spread("early_stop_iteration"),
        final_test_accuracy=spread("final_test_accuracy"),
        wall_time_seconds=spread("wall_time_seconds"),
        curve=_mean_curve(metrics),
    )


def _mean_curve(metrics: list[dict]) -> tuple:
    """(iteration, mean test accuracy) at the iterations every seed evaluated."""
    per_seed = [
        {
            row["iteration"]: row["test_accuracy"]
            for row in values.get("evaluations", ())
            if isinstance(row.get("test_accuracy"), (int, float))
        }
        for values in metrics
    ]
    common = sorted(set.intersection(*(set(seed) for seed in per_seed))) if per_seed else []
    return tuple(
        (iteration, statistics.fmean(seed[iteration] for seed in per_seed)) for iteration in common
    )


def _key(hparams: dict) -> str:
    return json.dumps(hparams, sort_keys=True)
