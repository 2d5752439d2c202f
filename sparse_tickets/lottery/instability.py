"""Instability analysis: is training still at the mercy of SGD noise after iteration K?

Frankle, Dziugaite, Roy & Carbin, "Linear mode connectivity and the lottery ticket
hypothesis", ICML 2020. From the weights a level has after ``K`` iterations (its *spawn point*),
two copies train to the end of the schedule with different data orders (and dropout draws).
The network is then evaluated at ``points`` evenly spaced points of the linear path between
them, ``θ(α) = (1 − α) θ_0 + α θ_1`` for ``α`` from 0 to 1, and the *error barrier* (the
paper's instability) is::

    max_α E(θ(α)) − (E(θ_0) + E(θ_1)) / 2

A barrier near 0 means the copies are linearly mode connected: from K on, the noise of SGD no
longer changes which basin training ends in. The paper finds IMP tickets at extreme sparsity
only when the level is stable, i.e. with rewinding to a K where the dense network already is.

Here:

- the spawn point is reached by training the level from its start with its own data order and
  dropout seed, so it is the weights the level itself had at K (K equal to the level's start
  iteration: the start itself, nothing trained);
- like a rewound level, each copy starts with a fresh optimizer state, and the learning rate
  follows the run's schedule from K;
- the two copies share the level's masks, so every point of the path has them; every floating
  tensor of the state_dict is interpolated, BatchNorm's running statistics included (as the
  paper does), integer buffers are taken from copy 0;
- the error is evaluated on the test set and on the whole training set (without
  augmentation), as ``1 − accuracy``; both barriers are recorded.

Every step is stored under ``<run>/instability/<branch>/level_<L>/iteration_<K>/`` and skipped
when done, so rerunning resumes, and asking for another number of points only re-evaluates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .. import files
from ..pruning import Masks
from . import distributed
from .artifacts import divergence_of
from .levels import LevelTrainer, derived_seed
from .runs import BRANCHES, Instability, RunError, redo_remedy
from .train import evaluate

COPIES = 2
# Seeds the copies' data orders apart from the main branch (0) and the controls (1, 2).
_INSTABILITY_ID = 3


def interpolate(
    state_0: Mapping[str, torch.Tensor], state_1: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 − alpha) · state_0 + alpha · state_1`` for every floating tensor; other tensors
    (masks, counters) must agree or are taken from ``state_0``: masks must be equal."""
    if list(state_0) != list(state_1):
        raise ValueError(
            "the two states hold different tensors; expected two copies of one network"
        )
    mixed = {}
    for name, first in state_0.items():
        second = state_1[name]
        if first.shape != second.shape:
            raise ValueError(
                f"{name!r} has shapes {tuple(first.shape)} and "
                f"{tuple(second.shape)}; expected two copies of one network"
            )
        if first.is_floating_point():
            mixed[name] = torch.lerp(first, second.to(first.dtype), float(alpha))
        elif first.dtype == torch.bool and not torch.equal(first, second):
            raise ValueError(
                f"{name!r} differs between the copies; expected the same masks at "
                f"both ends of the path"
            )
        else:
            mixed[name] = first.clone()
    return mixed


def error_barrier(errors: Sequence[float]) -> float:
    """The largest rise of the error along the path above the mean of its two ends."""
    if len(errors) < 2:
        raise ValueError(f"got {len(errors)} error(s); expected at least the two ends")
    return max(errors) - (errors[0] + errors[-1]) / 2


def alphas(points: int) -> list[float]:
    """``points`` evenly spaced interpolation weights from 0 to 1, both ends included."""
    if points < 2:
        raise ValueError(f"points is {points}; expected at least 2 (the two ends)")
    return [index / (points - 1) for index in range(points)]


class InstabilityAnalysis:
    """The instability analyses of one run, trained and evaluated by its
    :class:`~.levels.LevelTrainer`, a :class:`~.imp.LotteryRun` (the model, data, schedule,
    checkpointing and progress of the run)."""

    def __init__(self, lottery: LevelTrainer):
        self.lottery = lottery

    def execute(self, branch: str, level: int, iterations: Sequence[int], points: int) -> bool:
        """Analyse ``level`` of ``branch`` from each iteration in ``iterations``; False when
        everything was done already."""
        self.check(branch, level, iterations, points)
        did_work = False
        for iteration in iterations:
            did_work |= self.analyse(branch, level, iteration, points)
        return did_work

    def check(self, branch: str, level: int, iterations: Sequence[int], points: int) -> None:
        """Raise a one-line error for a request that cannot be carried out, before any work."""
        lottery = self.lottery
        if branch not in BRANCHES:
            raise RunError(f"unknown branch {branch!r}; expected one of {', '.join(BRANCHES)}")
        start, end = lottery.start_iteration(level), lottery.schedule.iterations
        for iteration in iterations:
            if not start <= iteration < end:
                raise ValueError(
                    f"instability iteration {iteration} of level {level}: "
                    f"expected from the level's start iteration {start} to before "
                    f"the end of training at {end}"
                )
        alphas(points)
        distributed.from_main(lambda: self._level_masks(branch, level) and None)

    def analyse(self, branch: str, level: int, iteration: int, points: int) -> bool:
        lottery = self.lottery
        run = lottery.run
        self.check(branch, level, [iteration], points)
        start = lottery.start_iteration(level)
        where = run.instability(branch, level, iteration)
        if distributed.from_main(lambda: self._path_evaluated(where.path(points))):
            return False
        masks = Masks(distributed.share_masks(lambda: self._level_masks(branch, level)))
        spawn_state = distributed.share_state(lambda: self._stored_start(branch, level, masks))
        if iteration > start:
            spawn = where.spawn
            if not distributed.from_main(
                lambda: lottery.finished(
                    spawn,
                    f"{branch} level {level} to iteration {iteration}",
                    self._same_masks(masks),
                )
            ):
                lottery.train_level(
                    spawn,
                    masks,
                    spawn_state,
                    start_iteration=start,
                    end_iteration=iteration,
                    seed_parts=lottery.seed_parts(branch, level),
                    label=f"{branch} level {level} to iteration {iteration}",
                    about={"branch": branch, "level": level, "spawn_iteration": iteration},
                )
            spawn_state = distributed.share_state(
                lambda: lottery.read_state(spawn.trained, redo_remedy(spawn), masks)
            )
        ends = [
            self._copy(where, index, branch, level, iteration, masks, spawn_state)
            for index in range(COPIES)
        ]
        result = self._linear_path(ends, points)
        result.update(
            branch=branch,
            level=level,
            iteration=iteration,
            points=points,
            density=masks.density,
            percent_remaining=100 * masks.density,
            data_seeds=[
                self._copy_data_seed(branch, level, iteration, index) for index in range(COPIES)
            ],
        )
        if distributed.is_main():
            files.write_json(where.path(points), result)
        lottery.progress.message(
            f"instability of {branch} level {level} from iteration {iteration}: test error "
            f"barrier {100 * result['test_barrier']:.2f} points, train "
            f"{100 * result['train_barrier']:.2f} ({points} points on the path)"
        )
        return True

    def _path_evaluated(self, path) -> bool:
        """Whether the path's evaluation is stored; one that cannot be read is evaluated
        again (it costs evaluations only)."""
        try:
            return files.read_json(path) is not None
        except files.DamagedArtifact as error:
            self.lottery.progress.message(f"{path}: {error.reason}; evaluating the path again")
            return False

    def _level_masks(self, branch: str, level: int) -> Masks:
        """The masks of the analysed level, checked; a level that diverged is refused."""
        lottery = self.lottery
        level_files = lottery.run.level(branch, level)
        metrics = level_files.read_metrics()
        if metrics is not None and divergence_of(metrics) is not None:
            raise lottery.diverged(f"{branch} level {level}", level_files, divergence_of(metrics))
        masks = lottery.read_masks(level_files.masks, redo_remedy(level_files))
        if masks is None:
            raise self._not_started(branch, level, level_files.masks)
        return masks

    def _stored_start(self, branch: str, level: int, masks: Masks) -> dict:
        level_files = self.lottery.run.level(branch, level)
        state = self.lottery.read_state(level_files.start, redo_remedy(level_files), masks)
        if state is None:
            raise self._not_started(branch, level, level_files.start)
        return state

    def _not_started(self, branch: str, level: int, path) -> RunError:
        return RunError(
            f"{branch} level {level} of {self.lottery.run.directory} has not "
            f"started: {path.name} is missing; expected a level that `imp` has "
            f"begun training"
        )

    @staticmethod
    def _same_masks(masks: Masks):
        return lambda stored: (
            None if stored == masks else ("are not the masks of the analysed level")
        )

    def _copy_data_seed(self, branch: str, level: int, iteration: int, index: int) -> int:
        return derived_seed(
            self.lottery.hp.data_seed,
            _INSTABILITY_ID,
            BRANCHES.index(branch),
            level,
            iteration,
            index,
        )

    def _copy(
        self,
        where: Instability,
        index: int,
        branch: str,
        level: int,
        iteration: int,
        masks: Masks,
        spawn_state: dict,
    ) -> dict:
        """The trained weights of copy ``index``, trained now unless done."""
        lottery = self.lottery
        files_of = where.copy(index)
        label = f"{branch} level {level} from {iteration}, copy {index}"
        if not distributed.from_main(
            lambda: lottery.finished(files_of, label, self._same_masks(masks))
        ):
            seed = self._copy_data_seed(branch, level, iteration, index)
            lottery.train_level(
                files_of,
                masks,
                spawn_state,
                start_iteration=iteration,
                seed_parts=(_INSTABILITY_ID, index),
                hp=lottery.hp.replace(data_seed=seed),
                label=label,
                about={
                    "branch": branch,
                    "level": level,
                    "spawn_iteration": iteration,
                    "copy": index,
                },
            )
        return distributed.share_state(
            lambda: lottery.read_state(files_of.trained, redo_remedy(files_of), masks)
        )

    def _linear_path(self, ends: list[dict], points: int) -> dict:
        lottery = self.lottery
        model, splits, device = lottery.model, lottery.splits, lottery.device
        curves = {
            "alphas": alphas(points),
            "test_error": [],
            "test_loss": [],
            "train_error": [],
            "train_loss": [],
        }
        for alpha in curves["alphas"]:
            model.load_state_dict(interpolate(ends[0], ends[1], alpha))
            for name, split in (("test", splits.test), ("train", splits.train)):
                loss, accuracy = evaluate(model, split, device)
                curves[f"{name}_loss"].append(loss)
                curves[f"{name}_error"].append(1.0 - accuracy)
        curves["test_barrier"] = error_barrier(curves["test_error"])
        curves["train_barrier"] = error_barrier(curves["train_error"])
        return curves
