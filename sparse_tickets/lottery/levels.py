"""Training one level of a run into its files: what the IMP loop (:mod:`.imp`) and the
instability analysis (:mod:`.instability`) share, so that neither imports the other for it.

A level trains from given weights with given masks, resuming its checkpoint, and stores its
masks, start and trained weights and metrics. Its dropout seed is :func:`derived_seed` of the
data seed and the parts that name the level (branch and level, or an instability copy), so a
level's numbers do not depend on what ran before it in the process.

A finished level counts as done only when its files make sense (:mod:`.artifacts`); one that
does not is refused with the file named. A level whose training diverged is recorded as such
(its metrics say where and why; it has no trained weights) and stops the run with
:class:`~.runs.Diverged`, now and at every rerun: nothing may be pruned from it or rewound to
it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import files
from ..data import DatasetSplits
from ..progress import LogLines
from ..pruning import Masks
from . import distributed
from .artifacts import Reference, divergence_of, metrics_problem, read_checked
from .hparams import Hparams
from .runs import MAIN, BadArtifact, Diverged, Level, Run, redo_remedy
from .train import CHECKPOINT, Schedule, explosion, train

# Checks a level's masks against what they must be (a subset of the level before, equal to
# the main branch's...): None when they are right, else what is wrong.
MasksCheck = Callable[[Masks], str | None]

# Seeds the controls' levels apart from the main branch (0): a control's parts are 1 + its id.
CONTROL_IDS = {"reinit": 1, "random_pruning": 2}


def derived_seed(*parts: int) -> int:
    """A seed for one purpose (e.g. one control at one level) from several integers."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class LevelTrainer:
    """Trains the levels of one run: the base of :class:`~.imp.LotteryRun`, which sets what
    training needs (below) before any level trains; the instability analysis trains its spawn
    points and copies through it."""

    hp: Hparams
    splits: DatasetSplits
    device: torch.device
    checkpoint_every: int
    progress: LogLines
    schedule: Schedule
    model: nn.Module
    run: Run

    def _start_iteration(self, level: int) -> int:
        if level == 0 or self.hp.rewind == "init":
            return 0
        return self.schedule.rewind_iteration

    def seed_parts(self, branch: str, level: int) -> tuple:
        """What a level's dropout seed derives from, with the data seed: one per branch and
        level, so a level's numbers do not depend on what ran before it in this process."""
        return (0, level) if branch == MAIN else (1 + CONTROL_IDS[branch], level)

    def start_iteration(self, level: int) -> int:
        """The iteration a level of any branch starts training from."""
        return self._start_iteration(level)

    # Reading what is stored, checked.

    @cached_property
    def reference(self) -> Reference:
        return Reference(self.model)

    def read_state(self, path: Path, remedy: str, masks: Masks | None = None) -> dict | None:
        """The weights stored at ``path`` (None when absent), checked against the model (and
        ``masks``); :class:`~.runs.BadArtifact` with ``remedy`` when they make no sense."""
        return read_checked(
            path,
            files.read_tensors,
            lambda state: self.reference.state_problem(state, masks),
            remedy,
        )

    def read_masks(self, path: Path, remedy: str, check: MasksCheck | None = None) -> Masks | None:
        """The masks stored at ``path`` (None when absent), checked against the model and by
        ``check``; :class:`~.runs.BadArtifact` with ``remedy`` when they make no sense."""

        def problem(stored: dict) -> str | None:
            return self.reference.masks_problem(stored) or (check and check(Masks(stored)))

        stored = read_checked(path, files.read_tensors, problem, remedy)
        return None if stored is None else Masks(stored)

    def redo(self, error: BadArtifact, action: str) -> None:
        """Say that a file that can be made again is discarded, and remove it."""
        self.progress.message(f"{error.path}: {error.problem}; discarded, {action}")
        files.remove_artifact(error.path)

    def finished(self, files_of: Level, label: str, masks_check: MasksCheck | None = None) -> bool:
        """Whether the level in ``files_of`` is finished, its files checked: masks against the
        model and ``masks_check``, weights against the model and the masks, metrics against
        the masks. A finished file that makes no sense raises :class:`~.runs.BadArtifact`,
        naming it; a level that diverged raises :class:`~.runs.Diverged`."""
        remedy = redo_remedy(files_of)
        metrics = files_of.read_metrics()
        if metrics is None:
            return False
        problem = metrics_problem(metrics, files_of)
        if problem:
            raise BadArtifact(files_of.metrics, problem, remedy)
        divergence = divergence_of(metrics)
        if divergence is not None:
            raise self.diverged(label, files_of, divergence)
        if not files_of.done():
            return False  # a file of it is missing: the level trains again
        masks = self.read_masks(files_of.masks, remedy, masks_check)
        problem = metrics_problem(metrics, masks=masks)
        if problem:
            raise BadArtifact(files_of.masks, problem, remedy)
        self.read_state(files_of.start, remedy, masks)
        self.read_state(files_of.trained, remedy, masks)
        return True

    def diverged(self, label: str, files_of: Level, divergence: dict) -> Diverged:
        return Diverged(
            f"{label} diverged at iteration {divergence['iteration']}: {divergence['cause']} "
            f"(recorded in {files_of.metrics}); nothing can be pruned from it or rewound to "
            f"it, so the run stops here: lower --lr (it is {self.hp.lr:g}), or add --warmup, "
            f"and run again"
        )

    def _write_masks(self, files_of: Level, masks: Masks) -> None:
        """The masks file of a level about to train: written unless it holds ``masks``."""
        try:
            stored = files.read_tensors(files_of.masks)
        except files.DamagedArtifact as error:
            stored, problem = None, error.reason
        else:
            problem = (
                None
                if stored is None
                else (
                    self.reference.masks_problem(stored)
                    or (
                        None
                        if Masks(stored) == masks
                        else "holds other masks than the ones this level trains with"
                    )
                )
            )
        if stored is not None and problem is None:
            return
        if problem is not None:
            self.progress.message(f"{files_of.masks}: {problem}; written again")
        files.write_tensors(files_of.masks, dict(masks))

    def train_level(
        self,
        files_of: Level,
        masks: Masks,
        start_state: dict,
        *,
        start_iteration: int,
        seed_parts: tuple,
        label: str,
        about: dict,
        hp: Hparams = None,
        end_iteration: int = None,
        record_rewind_point: bool = False,
    ) -> dict:
        """Train from ``start_state`` with ``masks`` into the files of ``files_of``, resuming
        its checkpoint; return the metrics (also written). ``hp`` replaces the run's
        hyperparameters (e.g. another data seed); ``end_iteration`` stops training early (the
        learning rate is still the full schedule's); ``about`` is added to the metrics."""
        hp = hp or self.hp
        schedule = (
            self.schedule
            if end_iteration is None
            else dataclasses.replace(self.schedule, iterations=end_iteration)
        )
        self.begin_level(files_of, masks, start_state, hp=hp, seed_parts=seed_parts)
        snapshot = self.schedule.rewind_iteration if record_rewind_point else None
        metrics = train(
            self.model,
            self.splits,
            hp,
            schedule,
            files_of.directory,
            start_iteration,
            checkpoint_every=self.checkpoint_every,
            snapshot_iteration=snapshot,
            on_snapshot=lambda state: files.write_tensors(self.run.rewind_point, state),
            progress=self.progress,
            label=f"{label} ({100 * masks.density:.1f}%)",
            reference=self.reference,
        )
        return self.finish_level(files_of, masks, metrics, hp=hp, label=label, about=about)

    def begin_level(
        self, files_of: Level, masks: Masks, start_state: dict, *, hp: Hparams, seed_parts: tuple
    ) -> None:
        """Before a level trains: the model at ``start_state`` with ``masks``, both stored, and
        torch's generator seeded for the level."""
        main = distributed.is_main()
        if main:
            files.remove_temporaries(files_of.directory)  # left by a writer that was killed
        self.model.load_state_dict(start_state)
        masks.apply_to(self.model)
        if main:
            self._write_masks(files_of, masks)
            files.write_tensors(files_of.start, self.model.state_dict())
        # Dropout draws from torch's global generator: seed it per level and branch, so a
        # level's numbers do not depend on what ran before it in this process; and per rank,
        # so the ranks of a torchrun job draw independent dropout masks (rank 0 as one process).
        rank = (distributed.rank(),) if distributed.rank() else ()
        torch.manual_seed(derived_seed(hp.data_seed, *seed_parts, *rank))

    def finish_level(
        self, files_of: Level, masks: Masks, metrics: dict, *, hp: Hparams, label: str, about: dict
    ) -> dict:
        """After a level trained (``self.model`` holds its weights): its metrics completed and
        written with its trained weights, its checkpoint removed; :class:`~.runs.Diverged` when
        it diverged."""
        metrics.update(
            **about,
            density=masks.density,
            percent_remaining=100 * masks.density,
            layers=[row.as_dict() for row in masks.density_rows()],
            seeds={
                "model": self.hp.model_seed,
                "data": hp.data_seed,
                "control": self.hp.control_seed,
            },
            warning=explosion(metrics, self.splits.num_classes),
        )
        if distributed.is_main():
            if metrics["diverged"]:
                # Diverged weights are never read: none are kept, so none can be used.
                files.remove_artifact(files_of.trained)
            else:
                files.write_tensors(files_of.trained, self.model.state_dict())
            files_of.write_metrics(metrics)
            files.remove_artifact(files_of.directory / CHECKPOINT)
        if metrics["diverged"]:
            raise self.diverged(label, files_of, metrics["divergence"])
        self.progress.end_level(metrics)
        if metrics["warning"]:
            self.progress.message(
                f"warning: {label}: {metrics['warning']}: training is "
                f"unstable; consider a lower --lr (it is {hp.lr:g}) or "
                f"--warmup"
            )
        return metrics
