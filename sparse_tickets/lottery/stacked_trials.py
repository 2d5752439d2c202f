"""``--executor stacked``: the trials of one experiment trained stacked in this process
(:mod:`.stacked`) from the level on where that is measured to be faster than processes, the
levels before it as the trials' own processes.

What is compared is the cost of a training iteration of the pending trials at a level's
density, evaluations included (:class:`Costs`): stacked, one stacked step; as processes, one
step of a trial on the threads a process of its own gets, times the waves of ``parallel``
processes the trials need. Both are measured on this machine (:func:`~.stacked.measure`); no
threshold is written down, and stacking must win by a margin (:data:`STACKING_MARGIN`). A
dense level usually runs faster as processes (they use the cores side by side); a sparse one,
whose step is mostly fixed cost, stacked.

The plan, made once, at the first main level still to train: if stacking pays there, every
level is stacked. If not, the later levels are measured on masks projected from that level's
(each layer pruned at the run's rates, at random positions: the same number of weights per
layer) to find the first level where stacking pays, taking the cost to grow with density
(a binary search). The trials' processes then train the levels before it in one go
(``--until-level``), and the rest is stacked, unless the extra cost of stacking those levels
too (interpolated in log density between the measured ones) is less than the processes'
start-up, which is this process's own (measured before its first step). If stacking pays at no
level, the trials run as processes throughout.

The controls' levels follow, sparsest first: stacked at or below the density from which
stacking paid; the denser rest is stacked or left to the trials' ordinary commands, whichever
the estimates, start-up included, say is faster. Whatever is left (the instability analyses,
failed trials) the trials' ordinary commands finish at the end, resuming what is done. Each trial
stays an ordinary run directory: any mix of stacked and process levels resumes either way. A
network that does not stack (see :mod:`sparse_tickets.nn.stacking`) runs as processes
throughout, and the reason is said.
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
from ..pruning import Masks, prune, prune_to_density, weights_of
from . import locking, stacked
from .imp import LotteryRun, PendingLevel, pruning_plan
from .runs import MAIN, Diverged
from .trials import Outcome, Trial, run_local

# Masks projected for a level not yet reached: random positions, from this seed.
_PROJECTION_SEED = 0

# Stacking is chosen only when its estimate is this much below the processes' (a fraction of
# theirs): the two are timed in one process over a few dozen steps, while the real processes
# run side by side for minutes, and a stacked level pays a little more per level (stacking,
# unstacking at checkpoints) than its steps show. A doubt leaves the trials as processes, as
# --executor local would run them. A margin on a ratio, not a time: it moves with the machine.
STACKING_MARGIN = 0.10


@dataclass(frozen=True)
class Costs:
    """Seconds per training iteration of the pending trials at one density, evaluations
    included: stacked in this process, and as processes (in waves)."""

    density: float
    stacked: float
    processes: float

    @property
    def extra(self) -> float:
        """Seconds per iteration that stacking costs more than processes, margin included
        (below 0: stacking pays)."""
        return self.stacked - (1 - STACKING_MARGIN) * self.processes

    @property
    def stacking_pays(self) -> bool:
        return self.extra < 0


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
    # The costs at (label, density); None: measured. Tests give their own.
    costs: Callable[[str, float], Costs] | None = None

    def __post_init__(self):
        if self.run_processes is None:
            self.run_processes = lambda trials: run_local(trials, self.parallel, self.threads)
        self.stopped: dict[int, str] = {}  # trial offset -> why it stopped (diverged, failed)
        self.stacked_from: float | None = None  # stacking pays at or below this density
        self.measured: dict[float, Costs] = {}  # density -> its costs

    def execute(self) -> list[Outcome]:
        """Run the levels; then the trials' ordinary commands for what is left. Their outcomes
        in trial order (a trial that diverged in a stacked step failed)."""
        reason = self._not_stackable()
        if reason is not None:
            self.progress.message(f"the trials run as processes: {reason}")
            return self.run_processes(list(self.trials))
        finished = self._main_levels() and self._controls()
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

    # The main levels.

    def _main_levels(self) -> bool:
        """The main levels, planned at the first one still to train; False when the rest is
        left to the trials' ordinary commands."""
        run = self.runs[0]
        levels = [level for level in range(run.last_level + 1) if not run.stops_before(level)]
        for position, level in enumerate(levels):
            with self._locked() as indices:
                pending = self._pending(indices, MAIN, level)
                if not pending:
                    continue
                if len(pending) < 2:  # nothing to stack it with: its own command goes on
                    return False
                first = level
                if self.stacked_from is None:
                    first = self._plan(pending, levels[position:])
                if first == level:
                    self._train(pending)
                    continue
            if first is None or self.until_level_argv is None:
                return False
            self._processes_until(pending, first - 1)
        return True

    def _plan(self, pending: list[tuple[int, PendingLevel]], levels: list[int]) -> int | None:
        """The first of ``levels`` (``pending``'s level first) to stack, or None for none."""
        level, current = levels[0], pending[0][1]
        if self._costs_of(current.label, current.masks, pending).stacking_pays:
            return level
        run = self.runs[pending[0][0]]
        projected = _projected_masks(run, current, len(levels))
        # Binary search for the first level that pays, cost taken to grow with density.
        if not self._costs_of(f"level {levels[-1]}", projected[-1], pending).stacking_pays:
            first = None
        else:
            low, high = 0, len(levels) - 1  # low does not pay, high does
            while high - low > 1:
                middle = (low + high) // 2
                if self._costs_of(
                    f"level {levels[middle]}", projected[middle], pending
                ).stacking_pays:
                    high = middle
                else:
                    low = middle
            first = high
        # Stacking the levels before it too saves the processes' start-up: worth it when
        # that costs less extra than the start-up would.
        before = levels if first is None else levels[:first]
        extra = sum(
            (run.schedule.iterations - run._start_iteration(at)) * self._extra(masks.density)
            for at, masks in zip(before, projected)
        )
        startup = self._waves(len(pending)) * self.startup_seconds
        if extra < startup:
            self.progress.message(
                f"plan: every level stacked: stacking {_levels(before)} too costs "
                f"{extra:.1f} s more than processes, less than their start-up ({startup:.1f} s)"
            )
            return level
        self.progress.message(
            f"plan: {_levels(before)} as processes"
            + ("" if first is None else f", then stacked from level {levels[first]}")
            + f" (stacking them would cost {extra:.1f} s more, start-up {startup:.1f} s)"
        )
        return None if first is None else levels[first]

    def _processes_until(self, pending: list[tuple[int, PendingLevel]], level: int) -> None:
        """The pending trials' own processes, stopped after main level ``level``."""
        outcomes = self.run_processes(
            [
                _until(self.trials[i], self.until_level_argv(self.trials[i], level))
                for i, _ in pending
            ]
        )
        for outcome in outcomes:
            if outcome.returncode:
                self.stopped[outcome.trial.offset] = outcome.last_line()

    # The controls.

    def _controls(self) -> bool:
        """The controls' levels, sparsest first; False when the denser rest is left to the
        trials' ordinary commands."""
        going = [
            run for run, trial in zip(self.runs, self.trials) if trial.offset not in self.stopped
        ]
        if not going or going[0].stops_before(going[0].last_level):
            return True  # nothing left, or the controls need every level
        run = going[0]
        steps = [
            (control, level)
            for control in run.hp.control_names()
            for level in run.hp.control_level_numbers()
        ]
        density = {step: run.main_masks(step[1]).density for step in steps}
        steps.sort(key=lambda step: density[step])
        for position, (control, level) in enumerate(steps):
            with self._locked() as indices:
                pending = self._pending(indices, control, level)
                if not pending:
                    continue
                if len(pending) < 2:
                    return False
                if self._stacking_pays(pending) or self._stack_the_rest(
                    pending, [density[step] for step in steps[position:]]
                ):
                    self._train(pending)
                    continue
            return False
        return True

    def _stacking_pays(self, pending: list[tuple[int, PendingLevel]]) -> bool:
        level = pending[0][1]
        if self.stacked_from is not None and level.masks.density <= self.stacked_from:
            return True
        return self._costs_of(level.label, level.masks, pending).stacking_pays

    def _stack_the_rest(self, pending: list[tuple[int, PendingLevel]], densities) -> bool:
        """Whether to stack the rest of the controls' levels (of ``densities``), where stacking
        does not pay per iteration, rather than start the trials' processes for them."""
        level = pending[0][1]
        iterations = self.runs[pending[0][0]].schedule.iterations - level.start_iteration
        extra = sum(iterations * self._extra(density) for density in densities)
        startup = self._waves(len(pending)) * self.startup_seconds
        stack_them = extra < startup
        self.progress.message(
            f"plan: the controls from {level.label} on "
            + ("stacked" if stack_them else "as processes")
            + f": stacking them costs {extra:.1f} s more than processes, start-up {startup:.1f} s"
        )
        if stack_them:
            self.stacked_from = max(densities)
        return stack_them

    # Costs.

    def _costs_of(self, label: str, masks: Masks, pending) -> Costs:
        """The costs at ``masks``' density: given, or measured on the pending trials' start
        weights with ``masks``; remembered, and the density stacked from when stacking pays."""
        density = masks.density
        if self.costs is not None:
            costs = self.costs(label, density)
        else:
            costs = self._measure(masks, pending)
            self.progress.message(
                f"{label} ({100 * density:.1f}%): {len(pending)} trials stacked "
                f"{1000 * costs.stacked:.2f} ms an iteration against {1000 * costs.processes:.2f}"
                f" ms as processes ({self._waves(len(pending))} wave(s), {self.threads} "
                f"thread(s) each), measured: {'stacked' if costs.stacking_pays else 'processes'}"
            )
        self.measured[density] = costs
        if costs.stacking_pays and (self.stacked_from is None or density > self.stacked_from):
            self.stacked_from = density
        return costs

    def _measure(self, masks: Masks, pending) -> Costs:
        models = []
        for i, level in pending:
            model = copy.deepcopy(self.runs[i].model)
            model.load_state_dict(level.start_state)
            masks.apply_to(model)
            models.append(model)
        run = self.runs[pending[0][0]]
        times = stacked.measure(
            models, run.splits, min(run.hp.batch_size, len(run.splits.train)), run.hp, self.threads
        )
        every = run.hp.eval_every
        return Costs(
            masks.density,
            stacked=times.stacked_step + times.stacked_evaluation / every,
            processes=self._waves(len(pending))
            * (times.single_step + times.single_evaluation / every),
        )

    def _extra(self, density: float) -> float:
        """:attr:`Costs.extra` at ``density``, interpolated in log density between the measured
        densities (outside them, the nearest one's)."""
        points = [(math.log(d), c.extra) for d, c in sorted(self.measured.items())]
        x = math.log(density)
        if x <= points[0][0]:
            return points[0][1]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            if x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        return points[-1][1]

    def _waves(self, count: int) -> int:
        return math.ceil(count / min(count, self.parallel))

    # Shared by the branches.

    @contextlib.contextmanager
    def _locked(self):
        """The indices of the trials still going, each trial's directory locked meanwhile."""
        indices = [i for i, trial in enumerate(self.trials) if trial.offset not in self.stopped]
        with contextlib.ExitStack() as locks:
            for i in indices:
                locks.enter_context(locking.held(self.trials[i].directory, command=self.command))
            yield indices

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


def _projected_masks(run: LotteryRun, level: PendingLevel, count: int) -> list[Masks]:
    """Masks for ``level`` and the ``count - 1`` levels after it, before those exist: each
    layer pruned at the run's rates level after level, at random positions (as many weights
    per layer as the run keeps there, under layerwise scope; global scope's split between
    layers is approximated)."""
    model = copy.deepcopy(run.model)
    model.load_state_dict(level.start_state)
    weights, plan, masks = weights_of(model), pruning_plan(model, run.hp), level.masks
    fraction = plan.pop("fraction")
    projected = [masks]
    for _ in range(1, count):
        if run.hp.one_shot_density is not None:
            masks = prune_to_density(
                weights,
                masks,
                run.hp.one_shot_density,
                strategy="random",
                scope=run.hp.scope,
                exclude=plan["exclude"],
                seed=_PROJECTION_SEED,
                nm=run.nm,
            )
        else:
            masks = prune(
                weights,
                masks,
                fraction,
                strategy="random",
                seed=_PROJECTION_SEED,
                nm=run.nm,
                **plan,
            )
        projected.append(masks)
    return projected


def _levels(levels: list[int]) -> str:
    if len(levels) == 1:
        return f"level {levels[0]}"
    return f"levels {levels[0]}-{levels[-1]}"


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
