"""Training one level of a run into its files: what the IMP loop (:mod:`.imp`) and the
instability analysis (:mod:`.instability`) share, so that neither imports the other for it.

A level trains from given weights with given masks, resuming its checkpoint, and stores its
masks, start and trained weights and metrics. Its dropout seed is :func:`derived_seed` of the
data seed and the parts that name the level (branch and level, or an instability copy), so a
level's numbers do not depend on what ran before it in the process.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from .. import files
from ..data import DatasetSplits
from ..progress import LogLines
from ..pruning import Masks
from . import distributed
from .hparams import Hparams
from .runs import MAIN, Level, Run
from .train import CHECKPOINT, Schedule, train

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

    def train_level(self, files_of: Level, masks: Masks, start_state: dict, *,
                    start_iteration: int, seed_parts: tuple, label: str, about: dict,
                    hp: Hparams = None, end_iteration: int = None,
                    record_rewind_point: bool = False) -> dict:
        """Train from ``start_state`` with ``masks`` into the files of ``files_of``, resuming
        its checkpoint; return the metrics (also written). ``hp`` replaces the run's
        hyperparameters (e.g. another data seed); ``end_iteration`` stops training early (the
        learning rate is still the full schedule's); ``about`` is added to the metrics."""
        hp = hp or self.hp
        schedule = self.schedule if end_iteration is None else dataclasses.replace(
            self.schedule, iterations=end_iteration)
        main = distributed.is_main()
        if main:
            files.remove_temporaries(files_of.directory)  # left by a writer that was killed
        self.model.load_state_dict(start_state)
        masks.apply_to(self.model)
        if main:
            if files.read_tensors(files_of.masks) is None:
                files.write_tensors(files_of.masks, dict(masks))
            files.write_tensors(files_of.start, self.model.state_dict())
        # Dropout draws from torch's global generator: seed it per level and branch, so a
        # level's numbers do not depend on what ran before it in this process; and per rank,
        # so the ranks of a torchrun job draw independent dropout masks (rank 0 as one process).
        rank = (distributed.rank(),) if distributed.rank() else ()
        torch.manual_seed(derived_seed(hp.data_seed, *seed_parts, *rank))
        snapshot = self.schedule.rewind_iteration if record_rewind_point else None
        metrics = train(self.model, self.splits, hp, schedule, files_of.directory,
                        start_iteration, checkpoint_every=self.checkpoint_every,
                        snapshot_iteration=snapshot,
                        on_snapshot=lambda state: files.write_tensors(self.run.rewind_point,
                                                                      state),
                        progress=self.progress, label=f"{label} ({100 * masks.density:.1f}%)")
        metrics.update(
            **about, density=masks.density, percent_remaining=100 * masks.density,
            layers=[row.as_dict() for row in masks.density_rows()],
            seeds={"model": self.hp.model_seed, "data": hp.data_seed,
                   "control": self.hp.control_seed})
        if main:
            files.write_tensors(files_of.trained, self.model.state_dict())
            files_of.write_metrics(metrics)
            files.remove_artifact(files_of.directory / CHECKPOINT)
        self.progress.end_level(metrics)
        return metrics
