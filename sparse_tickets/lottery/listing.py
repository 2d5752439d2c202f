"""Every run under a directory, with its name, configuration, state and progress
(``sparse-tickets runs DIR``).

A run's state is read from its files alone, without loading a tensor: the levels whose
metrics.json is valid are done; a level whose metrics record a divergence is diverged; a live
holder of the run's lock (see :mod:`.locking`) means a command is working in it now. Nothing
is written, so listing is safe while runs train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import files
from . import locking
from .artifacts import divergence_of
from .hparams import BRANCH_FIELDS, SEED_FIELDS, Hparams
from .runs import BRANCHES, HPARAMS, MAIN, Run

# Fields never worth a column of their own: model, dataset and seeds have theirs, the branches
# show in the progress, and the digest of a masks file says nothing to a reader.
_NOT_SHOWN = ("model", "dataset", *SEED_FIELDS, *BRANCH_FIELDS, "masks_sha256")


@dataclass(frozen=True)
class RunState:
    directory: Path
    hparams: Hparams | None  # None: hparams.json unreadable
    name: str
    levels_done: dict  # branch -> finished levels
    levels_planned: dict  # branch -> levels the run's command asks for
    diverged: tuple  # (branch, level, iteration, cause)
    holder: str | None  # who works in it now, in words
    problem: str = ""  # why its files could not be read

    @property
    def state(self) -> str:
        if self.problem:
            return f"unreadable: {self.problem}"
        if self.hparams is None:
            return "unreadable hparams.json"
        if self.diverged:
            branch, level, iteration, _ = self.diverged[0]
            return f"diverged ({branch} level {level}, iteration {iteration})"
        if self.holder is not None:
            return f"running ({self.holder})"
        planned = sum(self.levels_planned.values())
        done = sum(min(self.levels_done.get(b, 0), n) for b, n in self.levels_planned.items())
        return "done" if done >= planned else "stopped"

    @property
    def progress(self) -> str:
        return ", ".join(
            f"{_BRANCH_SHORT[branch]} {self.levels_done.get(branch, 0)}/{planned}"
            for branch, planned in self.levels_planned.items()
        )


_BRANCH_SHORT = {"main": "levels", "reinit": "reinit", "random_pruning": "random"}


def planned_levels(hp: Hparams) -> dict:
    """branch -> how many levels the run's command trains on it."""
    main = 2 if hp.one_shot_density is not None else hp.levels + 1
    planned = {MAIN: main}
    for control in hp.control_names():
        planned[control] = len(hp.control_level_numbers())
    return planned


def read_state(directory: Path) -> RunState:
    """The state of one run; a run whose files cannot be read says so in its state."""
    try:
        return _read_state(Path(directory))
    except (ValueError, KeyError, TypeError, OSError) as error:  # damaged or hand-edited files
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return RunState(Path(directory), None, "", {}, {}, (), None, problem=message)


def _read_state(directory: Path) -> RunState:
    run = Run(Path(directory))
    stored = files.read_json(run.directory / HPARAMS)
    try:
        hp = Hparams.from_dict(stored) if isinstance(stored, dict) else None
    except (TypeError, ValueError):
        hp = None
    done, diverged = {}, []
    for branch in BRANCHES:
        finished = run.finished_levels(branch)
        clean = {level: m for level, m in finished.items() if divergence_of(m) is None}
        if clean:
            done[branch] = len(clean)
        for level, metrics in finished.items():
            divergence = divergence_of(metrics)
            if divergence is not None:
                diverged.append(
                    (branch, level, divergence.get("iteration"), divergence.get("cause", ""))
                )
    return RunState(
        run.directory,
        hp,
        run.name or "",
        done,
        planned_levels(hp) if hp is not None else {},
        tuple(diverged),
        locking.current_holder(run.directory),
    )


def find_runs(directory: Path) -> list[Path]:
    """Every run directory at or under ``directory`` (a directory holding hparams.json),
    without descending into runs (their instability analyses are not runs)."""
    directory = Path(directory)
    if (directory / HPARAMS).is_file():
        return [directory]
    found = []
    for child in sorted(p for p in directory.iterdir() if p.is_dir()):
        found += find_runs(child)
    return found


def differing_fields(states: list[RunState]) -> list[str]:
    """The hyperparameters that differ between the runs, seeds and branch fields aside."""
    dicts = [s.hparams.as_dict() for s in states if s.hparams is not None]
    if len(dicts) < 2:
        return []
    return [
        name
        for name in dicts[0]
        if name not in _NOT_SHOWN and len({repr(d[name]) for d in dicts}) > 1
    ]


def table(states: list[RunState], root: Path) -> str:
    """The listing as aligned text columns, one run per line."""
    shown = differing_fields(states)
    header = ["run", "name", "model/dataset", "seeds", *shown, "state", "progress"]
    rows = []
    for s in states:
        hp = s.hparams
        where = str(s.directory.relative_to(root)) if s.directory != root else s.directory.name
        if hp is None:
            rows.append([where, s.name, "?", "?", *["?" for _ in shown], s.state, ""])
            continue
        seeds = "/".join(str(getattr(hp, name)) for name in SEED_FIELDS)
        values = [str(getattr(hp, name)) for name in shown]
        rows.append(
            [where, s.name or "-", f"{hp.model}/{hp.dataset}", seeds, *values, s.state, s.progress]
        )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [header, *rows]
    )
