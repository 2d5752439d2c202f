"""``--executor stacked``: the trials of one experiment level by level, each level trained
stacked in this process (:mod:`.stacked`) where that is measured to be faster than processes.

Step by step (the main levels in order, then each control's levels), the trials that have the
step still to do are found, their masks made. Stacking is chosen for a step by measuring, on
this machine, a stacked training step of those trials against one trial's step on the threads a
process of its own would get (:func:`~.stacked.measure`), and comparing the whole step's
estimates: stacked, its iterations at the stacked step time; as processes, in waves of
``parallel`` at a time, each wave a process start-up (this process's own, measured before its first
step) and the iterations at the single step time. No
threshold is written down: a dense level usually runs faster as processes (they use the cores
side by side); a sparse one, whose step is mostly fixed cost, stacked. Once stacking wins at
a density it is used for every later step at that density or below without measuring again.

A step not stacked runs as the trials' ordinary processes, stopped after that level
(``--until-level``). Whatever the steps leave (the instability analyses, the steps after one
that ran as processes) the trials' ordinary commands finish at the end, resuming what is
done. Each trial stays an
ordinary run directory: any mix of stacked and process levels resumes either way. A network
that does not stack (see :mod:`sparse_tickets.nn.stacking`) runs as processes throughout, and
the reason is said.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..nn.stacking import NotStackable, stack
from ..progress import LogLines
from . import locking, stacked
from .imp import LotteryRun, PendingLevel
from .runs import MAIN, Diverged
from .trials import Outcome, Trial, run_local


class TrialLines(LogLines):
    """One trial's lines in the stacked process's output, named by its seed offset."""

    def __init__(self, offset: int, stream=None):
        super().__init__(stream)
        self.offset = offset

    def message(self, text: str) -> None:
        super().message(f"trial +{self.offset}: {text}")


@dataclass
class StackedTrials:
    """The trials and their runs, and how to run some of them as processes instead."""

    trials: Sequence[Trial]
    runs: Sequence[LotteryRun]
    progress: LogLines
    parallel: int
    threads: int
    # A trial process's start-up (imports, data, checks): see own_startup_seconds.
    startup_seconds: float
    # The trial's command line stopped after a main level; None when the command has no such
    # option (`train` has only level 0).
    until_level_argv: Callable[[Trial, int], Sequence[str]] | None
    run_processes: Callable[[Sequence[Trial]], list[Outcome]] = None
    command: str = ""
    # Whether a step's pending trials train stacked; None: measured (:meth:`stacking_pays`).
    chooser: Callable[[list[tuple[int, PendingLevel]]], bool] | None = None

    def __post_init__(self):
        if self.run_processes is None:
            self.run_processes = lambda trials: run_local(trials, self.parallel, self.threads)
        self.stopped: dict[int, str] = {}  # trial offset -> why it stopped (diverged, failed)
        self.stacked_from: float = -1.0  # stacking won at this density: stack at or below it

    def execute(self) -> list[Outcome]:
        """Run every step; then the trials' ordinary commands for what is left. Their outcomes
        in trial order (a trial that diverged in a stacked step failed)."""
        reason = self._not_stackable()
        if reason is not None:
            self.progress.message(f"the trials run as processes: {reason}")
            return self.run_processes(list(self.trials))
        finished = all(self._stacked_step(step) for step in self._steps())
        if not finished or self.runs[0].hp.instability_level_numbers():
            return self.run_processes(list(self.trials))
        return [self._outcome(trial) for trial in self.trials]

    def _outcome(self, trial: Trial) -> Outcome:
        """A trial all of whose steps were taken here: done, or failed with its reason (also
        written into its log, where a failed process's last line would be)."""
        why = self.stopped.get(trial.offset)
        if why is not None:
            trial.directory.mkdir(parents=True, exist_ok=True)
            with open(trial.log, "a") as log:
                log.write(f"{why}\n")
        return Outcome(trial, 0 if why is None else 1, 0.0)

    def _not_stackable(self) -> str | None:
        first = self.runs[0]
        try:
            stack([first.model, copy.deepcopy(first.model)], first.splits.input_shape)
        except NotStackable as error:
            return f"{first.hp.model} does not stack ({error})"
        return None

    def _steps(self) -> list[tuple[str, int]]:
        run = self.runs[0]
        steps = [
            (MAIN, level) for level in range(run.last_level + 1) if not run.stops_before(level)
        ]
        if run.stops_before(run.last_level):
            return steps  # the controls need every level
        # The controls' levels sparsest first: once one is left to processes, so are the
        # rest, and the denser ones are those processes win.
        for control in run.hp.control_names():
            steps += [(control, level) for level in sorted(run.hp.control_level_numbers())[::-1]]
        return steps

    def _stacked_step(self, step: tuple[str, int]) -> bool:
        """One step, stacked or as processes; False when the steps after it are left to the
        trials' ordinary commands."""
        branch, level = step
        indices = [i for i, trial in enumerate(self.trials) if trial.offset not in self.stopped]
        with contextlib.ExitStack() as locks:
            for i in indices:
                locks.enter_context(locking.held(self.trials[i].directory, command=self.command))
            pending = self._pending(indices, branch, level)
            if not pending:
                return True
            choose = self.chooser or self.stacking_pays
            if len(pending) >= 2 and choose(pending):
                self._train(pending)
                return True
        # As processes: a main level with the trials stopped after it, else the rest at once.
        if branch != MAIN or self.until_level_argv is None:
            return False
        outcomes = self.run_processes(
            [
                _until(self.trials[i], self.until_level_argv(self.trials[i], level))
                for i, _ in pending
            ]
        )
        for outcome in outcomes:
            if outcome.returncode:
                self.stopped[outcome.trial.offset] = outcome.last_line()
        return True

    def _pending(self, indices, branch: str, level: int) -> list[tuple[int, PendingLevel]]:
        pending = []
        for i in indices:
            run = self.runs[i]
            try:
                found = (
                    run.pending_main_level(level)
                    if branch == MAIN
                    else run.pending_control_level(branch, level)
                )
            except Diverged as error:  # an earlier level of it diverged: it stops there
                self._stop(i, str(error))
                continue
            if found is not None:
                pending.append((i, found))
        return pending

    def stacking_pays(self, pending: list[tuple[int, PendingLevel]]) -> bool:
        density = pending[0][1].masks.density
        if density <= self.stacked_from:
            return True
        models = []
        for i, level in pending:
            model = copy.deepcopy(self.runs[i].model)
            model.load_state_dict(level.start_state)
            level.masks.apply_to(model)
            models.append(model)
        run = self.runs[pending[0][0]]
        at_once = min(len(pending), self.parallel)
        stacked_step, single_step = stacked.measure(
            models,
            run.splits.input_shape,
            min(run.hp.batch_size, len(run.splits.train)),
            run.splits.num_classes,
            run.hp,
            self.threads,
        )
        iterations = run.schedule.iterations - pending[0][1].start_iteration
        as_stacked = iterations * stacked_step
        waves = math.ceil(len(pending) / at_once)
        as_processes = waves * (self.startup_seconds + iterations * single_step)
        pays = as_stacked < as_processes
        self.progress.message(
            f"{pending[0][1].label} ({100 * density:.1f}%): {len(pending)} trials stacked "
            f"{as_stacked:.1f} s ({1000 * stacked_step:.2f} ms a step) against "
            f"{as_processes:.1f} s as processes ({waves} wave(s) of "
            f"{self.startup_seconds:.1f} s start-up and "
            f"{1000 * single_step:.2f} ms a step, {self.threads} thread(s) each), measured: "
            f"{'stacked' if pays else 'as processes'}"
        )
        if pays:
            self.stacked_from = density
        return pays

    def _train(self, pending: list[tuple[int, PendingLevel]]) -> None:
        outcomes = stacked.train_level(
            [(self.runs[i], level) for i, level in pending], self.progress
        )
        for (i, _), outcome in zip(pending, outcomes):
            if outcome.diverged is not None:
                self._stop(i, str(outcome.diverged))

    def _stop(self, index: int, why: str) -> None:
        self.stopped[self.trials[index].offset] = why
        self.runs[index].progress.message(why)


def own_startup_seconds() -> float:
    """Seconds since this process started: called once it has done what a trial process does
    before its first step (imports, data, checks), that start-up's length. From ``/proc``
    where there is one, else this process's CPU time (the start-up is mostly computation)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, in ticks
        return max(0.0, float(Path("/proc/uptime").read_text().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return time.process_time()


def _until(trial: Trial, argv: Sequence[str]) -> Trial:
    return Trial(trial.offset, trial.directory, tuple(argv))
