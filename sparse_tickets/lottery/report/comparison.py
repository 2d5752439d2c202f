"""One-shot runs (pruning at initialisation with SNIP, GraSP or SynFlow, or one-shot magnitude
pruning) set against IMP tickets of the same model and dataset at equal density."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ...pruning.magnitude import Magnitude
from ..runs import MAIN
from .results import Configuration, LevelSummary

# Hyperparameters that do not make two one-shot configurations different methods: the points
# of one method's curve differ in these.
_CURVE_FIELDS = ("one_shot_density",)
# Hyperparameters of the other branches only: the main branch's numbers do not depend on them,
# so they do not tell its curves apart.
_OTHER_BRANCH_FIELDS = (
    "controls",
    "control_levels",
    "control_seed",
    "instability_levels",
    "instability_iterations",
    "instability_points",
)


@dataclass(frozen=True)
class OneShotComparison:
    """The pruned level of a one-shot configuration, and the IMP level nearest to it in
    density among the iterative configurations of the same model, dataset and N:M pattern
    (None when there is none)."""

    one_shot: Configuration
    pruned: LevelSummary
    imp: Configuration | None
    imp_level: LevelSummary | None

    @property
    def method(self) -> str:
        hparams = self.one_shot.hparams
        return hparams["strategy"] + (f" {hparams['nm']}" if hparams.get("nm") else "")


def is_one_shot(configuration: Configuration) -> bool:
    return configuration.hparams.get(
        "one_shot_density"
    ) is not None and 1 in configuration.summaries.get(MAIN, {})


def is_imp(configuration: Configuration) -> bool:
    return (
        configuration.hparams.get("one_shot_density") is None
        and configuration.hparams.get("strategy") == Magnitude.name
        and len(configuration.summaries.get(MAIN, {})) > 1
    )


def one_shot_comparisons(configurations: Sequence[Configuration]) -> list[OneShotComparison]:
    """A row per one-shot configuration, in the order of the configurations: its pruned level
    against the IMP level nearest in density (on a log scale) among the IMP configurations of
    the same model, dataset and N:M pattern; on a tie, the first configuration's, then the
    lower level."""
    rows = []
    for one_shot in filter(is_one_shot, configurations):
        pruned = one_shot.summaries[MAIN][1]
        candidates = [
            (
                abs(math.log(level.percent_remaining / pruned.percent_remaining)),
                index,
                level.level,
                imp,
                level,
            )
            for index, imp in enumerate(configurations)
            if is_imp(imp) and _same_task(imp, one_shot)
            for level in imp.summaries[MAIN].values()
        ]
        if not candidates:
            rows.append(OneShotComparison(one_shot, pruned, None, None))
            continue
        *_, imp, level = min(candidates, key=lambda candidate: candidate[:3])
        rows.append(OneShotComparison(one_shot, pruned, imp, level))
    return rows


def one_shot_curves(configurations: Sequence[Configuration]) -> dict[str, list[LevelSummary]]:
    """One-shot configurations that differ only in their density, as one curve each: a label
    (the method, and what else sets it apart) -> its pruned levels, densest first."""
    curves: dict[str, list[LevelSummary]] = {}
    for configuration in filter(is_one_shot, configurations):
        label = _curve_label(configuration, configurations)
        curves.setdefault(label, []).append(configuration.summaries[MAIN][1])
    return {
        label: sorted(levels, key=lambda s: -s.percent_remaining)
        for label, levels in curves.items()
    }


def _same_task(first: Configuration, second: Configuration) -> bool:
    return all(
        first.hparams.get(name) == second.hparams.get(name) for name in ("model", "dataset", "nm")
    )


def imp_label(configuration: Configuration, configurations: Sequence[Configuration]) -> str:
    """``IMP``, then the fields in which the IMP configurations of the same task differ (those
    that shape the main branch), and the task when there are several."""
    return _short_label(configuration, list(filter(is_imp, configurations)), "IMP", ())


def _curve_label(configuration: Configuration, configurations: Sequence[Configuration]) -> str:
    """The strategy, then every other field in which one-shot configurations of the same task
    differ (besides their density), and the task when there are several."""
    return _short_label(
        configuration,
        list(filter(is_one_shot, configurations)),
        configuration.hparams["strategy"],
        ("strategy", *_CURVE_FIELDS),
    )


def _short_label(
    configuration: Configuration, siblings: Sequence[Configuration], name: str, ignored: tuple
) -> str:
    hparams = configuration.hparams
    task_of = lambda values: (values["model"], values["dataset"])  # noqa: E731
    same_task = [c.hparams for c in siblings if task_of(c.hparams) == task_of(hparams)]
    differing = [
        f"{field}={value if value != '' else 'none'}"
        for field, value in hparams.items()
        if field not in ("model", "dataset", *ignored, *_OTHER_BRANCH_FIELDS)
        and any(other.get(field) != value for other in same_task)
    ]
    tasks = {task_of(c.hparams) for c in siblings}
    task = [f"{hparams['model']}/{hparams['dataset']}"] if len(tasks) > 1 else []
    return " ".join([*task, name, *differing])
