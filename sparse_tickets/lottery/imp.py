"""Iterative magnitude pruning with rewinding, and the control branches.

Level 0 trains the dense network. Each next level prunes the previous level's trained weights
(masks in, masks out), rewinds the survivors and trains again:

- ``rewind="init"``: to the weights at iteration 0, training from 0 (Frankle & Carbin 2019);
- ``rewind="iteration"``: to the weights level 0 had after K iterations, training from K
  (Frankle et al. 2020, "Linear mode connectivity and the lottery ticket hypothesis");
- ``rewind="lr"``: keeping the trained weights and replaying the learning-rate schedule from K
  (Renda et al. 2020, "Comparing rewinding and fine-tuning in neural network pruning").

With ``one_shot_density`` the run has one pruned level: the dense network's trained weights
pruned straight to that density, or with a pruning-at-initialisation strategy (``snip``,
``grasp``, ``synflow``; :mod:`sparse_tickets.pruning.at_init`) the weights that level starts
from, scored before any training. With ``nm`` every level's masks keep an N:M structure that
tightens as density falls (:mod:`sparse_tickets.pruning.nm`).

Controls are branches that reuse the main run's masks at chosen levels: ``reinit`` trains the
same masks from a fresh initialisation (same distribution, another seed); ``random_pruning``
trains masks with the same per-layer densities at random positions, from the weights the main
level starts from; with ``nm`` its random masks keep the same structure. After them, the
instability analysis (:mod:`.instability`) of the main branch at ``instability_levels``.
Every step returns early when its output exists and is valid, so rerunning a command resumes
it. Valid means checked for meaning too (:mod:`.artifacts`): a level's masks must fit the
model and be a subset of the level before's (the main branch's, for the controls), weights
must be finite and zero where pruned. A bad file of a finished level is refused, naming it; one
the run can make again (the masks or checkpoint of a level not finished, the weights at
initialisation or at the rewind point) is said so and made again. A level that diverged stops
the run (:class:`~.runs.Diverged`).

Under torchrun every rank runs this loop in step. Rank 0 alone touches the run directory: it
decides what is left to do, prunes, reads and writes the files, and sends the masks (checked by
checksum on every rank) and the starting weights to the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import files, models
from ..data import DatasetSplits
from ..nn import MaskedConv2d, masked_layers
from ..progress import LogLines
from ..pruning import (
    CRITERIA,
    Criterion,
    Masks,
    get_criterion,
    parse_nm,
    prune,
    prune_at_init,
    prune_to_density,
    random_like,
    weights_of,
)
from . import distributed
from .artifacts import masks_relation_problem
from .hparams import Hparams, parse_step_list
from .instability import InstabilityAnalysis
from .levels import CONTROL_IDS, LevelTrainer, MasksCheck, derived_seed
from .runs import MAIN, BadArtifact, Level, Run, RunError, redo_remedy
from .train import CHECKPOINT, DataOrder, Schedule


def build_model(hp: Hparams, splits: DatasetSplits, seed: int, device: torch.device) -> nn.Module:
    """The model of ``hp`` for ``splits``, initialised from ``seed``."""
    options = {"dropout": hp.dropout} if hp.dropout else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = models.create(
            hp.model, input_shape=splits.input_shape, num_classes=splits.num_classes, **options
        )
    return model.to(device)


def pruning_plan(model: nn.Module, hp: Hparams) -> dict:
    """Keyword arguments for :func:`~sparse_tickets.pruning.prune`: each layer's rate from its
    kind (conv, hidden fc, output); a rate of 0 excludes the layer.

    Global scope ranks the conv and hidden fc layers with a nonzero rate together, so those
    rates must agree; the output layer is pruned on its own at its rate, as the paper prunes
    it more gently.
    """
    output = models.output_layer(model) + ".weight"
    rates = {}
    for name, layer in masked_layers(model):
        key = f"{name}.weight" if name else "weight"
        if key == output:
            rates[key] = hp.output_fraction
        else:
            rates[key] = hp.conv_fraction if isinstance(layer, MaskedConv2d) else hp.fc_fraction
    exclude = [name for name, rate in rates.items() if rate == 0]
    if hp.scope == "layerwise":
        return dict(
            fraction=0.0,
            scope="layerwise",
            exclude=exclude,
            layer_fractions={n: r for n, r in rates.items() if r > 0},
        )
    pooled = {rate for name, rate in rates.items() if rate > 0 and name != output}
    if len(pooled) > 1:
        raise ValueError(
            f"global scope ranks conv and fc layers together at one rate; got "
            f"conv_fraction={hp.conv_fraction} and fc_fraction={hp.fc_fraction} "
            f"(set one of them to 0 or make them equal)"
        )
    overrides = {output: rates[output]} if rates.get(output, 0) > 0 else {}
    return dict(
        fraction=pooled.pop() if pooled else 0.0,
        scope="global",
        exclude=exclude,
        layer_fractions=overrides,
    )


def check(
    hp: Hparams, splits: DatasetSplits, device: torch.device = torch.device("cpu")
) -> tuple[Schedule, nn.Module]:
    """The schedule and model of ``hp`` on ``splits``, after every check that can fail before
    training: lengths, the model against the data's shape, the pruning plan."""
    if hp.batch_size > len(splits.train):
        # An error, not a quiet cap: the batch size is in hparams.json and the run's hash, so
        # the run must train with the batch it is named by.
        subset = f", train_size {hp.train_size}" if hp.train_size else ""
        raise ValueError(
            f"batch_size is {hp.batch_size}; the training set has "
            f"{len(splits.train)} examples ({splits.name}{subset}); expected a "
            f"batch of at most {len(splits.train)}"
        )
    schedule = Schedule.resolve(hp, len(splits.train))
    try:
        model = build_model(hp, splits, hp.model_seed, device)
    except TypeError as error:  # an option the model does not have, e.g. dropout on LeNet
        raise ValueError(str(error)) from None
    pruning_plan(model, hp)
    for level in hp.instability_level_numbers():
        start = 0 if level == 0 or hp.rewind == "init" else schedule.rewind_iteration
        for iteration in instability_iterations(hp, schedule):
            if not start <= iteration < schedule.iterations:
                raise ValueError(
                    f"instability_iterations has {iteration}; expected iterations "
                    f"from level {level}'s start at {start} to before the end of "
                    f"training at {schedule.iterations}"
                )
    return schedule, model


def instability_iterations(hp: Hparams, schedule: Schedule) -> list[int]:
    """The spawn iterations K of the run's instability analyses, resolved to iterations."""
    return sorted(
        set(
            parse_step_list(
                hp.instability_iterations, schedule.iterations_per_epoch, "instability_iterations"
            )
        )
    )


@dataclass(frozen=True)
class PendingLevel:
    """A level still to train: its files, masks, start weights and what names it."""

    files: Level
    masks: Masks
    start_state: dict
    start_iteration: int
    seed_parts: tuple
    label: str
    about: dict
    record_rewind_point: bool


@dataclass
class LotteryRun(LevelTrainer):
    """Runs the levels and controls of ``hp`` in its run directory under ``runs_directory``,
    skipping what is already done. The directory is made only once every check has passed."""

    hp: Hparams
    runs_directory: Path
    splits: DatasetSplits
    device: torch.device
    checkpoint_every: int
    progress: LogLines
    # An existing run directory to work in, wherever it lies (its name need not be the hash).
    run_directory: Path | None = None
    # The masks level 0 trains with (`train --masks`); None: every weight.
    initial_masks: Masks | None = None
    # Stop after this main level (`imp --until-level`); None: run everything.
    until_level: int | None = None

    def __post_init__(self):
        self.schedule, self.model = check(self.hp, self.splits, self.device)
        self.run = distributed.from_main(self._open_run)

    def _open_run(self) -> Run:
        if self.run_directory is not None:
            return Run.open(self.run_directory)
        run = Run.create(self.runs_directory, self.hp)
        run.record_model_shape(self.splits.input_shape, self.splits.num_classes)
        return run

    @property
    def last_level(self) -> int:
        return 1 if self.hp.one_shot_density is not None else self.hp.levels

    @property
    def rewinds_to_iteration(self) -> bool:
        return self.hp.rewind == "iteration" and self.schedule.rewind_iteration > 0

    def execute(self) -> bool:
        """Run whatever is not done yet; False when everything was done already."""
        did_work = distributed.from_main(self.ensure_initial_state)
        for level in range(self.last_level + 1):
            if self.stops_before(level):
                return did_work  # the controls and analyses need every level: later
            did_work |= self.main_level(level)
        for control in self.hp.control_names():
            for level in self.hp.control_level_numbers():
                did_work |= self.control_level(control, level)
        if self.hp.instability_level_numbers():
            analysis = InstabilityAnalysis(self)
            for level in self.hp.instability_level_numbers():
                did_work |= analysis.execute(
                    MAIN,
                    level,
                    instability_iterations(self.hp, self.schedule),
                    self.hp.instability_points,
                )
        return did_work

    def stops_before(self, level: int) -> bool:
        """Whether main level ``level`` is past ``until_level``."""
        return self.until_level is not None and level > self.until_level

    # The main branch.

    def main_level(self, level: int) -> bool:
        if distributed.from_main(lambda: self._main_level_done(level)):
            return False
        masks = Masks(distributed.share_masks(lambda: self.main_masks(level)))
        start_state = distributed.share_state(lambda: self.main_start_state(level))
        self._train(
            MAIN,
            level,
            masks,
            start_state,
            seed_parts=(0, level),
            record_rewind_point=level == 0 and self.rewinds_to_iteration,
        )
        return True

    def pending_main_level(self, level: int) -> PendingLevel | None:
        """What main level ``level`` trains, its masks computed and stored; None when it is
        finished. For a process of its own (not under torchrun): the stacked trials'."""
        if self._main_level_done(level):
            return None
        return PendingLevel(
            files=self.run.level(MAIN, level),
            masks=self.main_masks(level),
            start_state=self.main_start_state(level),
            start_iteration=self._start_iteration(level),
            seed_parts=(0, level),
            label=f"level {level}",
            about={"branch": MAIN, "level": level},
            record_rewind_point=level == 0 and self.rewinds_to_iteration,
        )

    def _main_level_done(self, level: int) -> bool:
        files_of = self.run.level(MAIN, level)
        if level == 0 and self.rewinds_to_iteration and not self._rewind_point_stored():
            _forget(files_of)  # level 0 must run again to record the rewind point
        return self.finished(files_of, f"level {level}", self._main_masks_check(level))

    def _rewind_point_stored(self) -> bool:
        try:
            return self.read_state(self.run.rewind_point, "") is not None
        except BadArtifact as error:
            self.redo(error, "training level 0 again to record it")
            return False

    def _main_masks_check(self, level: int) -> MasksCheck:
        """What the masks of main level ``level`` must be: level 0's, every weight (or the
        masks of `train --masks`); a later level's, a subset of the level before's."""
        if level == 0:
            expected = self._level_0_masks()
            return lambda masks: (
                None
                if masks == expected
                else (
                    "are not the masks level 0 trains with (every weight, or those of "
                    "`train --masks`)"
                )
            )
        try:
            previous = files.read_tensors(self.run.level(MAIN, level - 1).masks)
        except files.DamagedArtifact:
            previous = None
        if previous is None or self.reference.masks_problem(previous):
            return lambda masks: None  # that level is made again first, and checked then
        return lambda masks: masks_relation_problem(masks, Masks(previous))

    def _level_0_masks(self) -> Masks:
        return self.initial_masks if self.initial_masks is not None else Masks.ones_like(self.model)

    def main_masks(self, level: int) -> Masks:
        """The masks level ``level`` trains with, computed once and stored. Stored masks that
        make no sense are computed again, unless the level is finished (refused)."""
        files_of = self.run.level(MAIN, level)
        path = files_of.masks
        try:
            stored = self.read_masks(path, redo_remedy(files_of), self._main_masks_check(level))
        except BadArtifact as error:
            if files_of.read_metrics() is not None:
                raise
            self.redo(error, "computing them again")
            stored = None
        if stored is not None:
            return stored
        if level == 0:
            masks = self._level_0_masks()
        else:
            previous_masks = self.main_masks(level - 1)
            if self.criterion.at_initialisation:
                masks = self._prune_at_start(level, previous_masks)
            else:
                masks = self._prune_trained(level, previous_masks)
        files.write_tensors(path, dict(masks))
        return masks

    def _prune_trained(self, level: int, previous_masks: Masks) -> Masks:
        """IMP: the previous level's trained weights, pruned by the strategy's scores
        (magnitude, random, or another criterion of the weights alone)."""
        self.model.load_state_dict(self._trained_state(MAIN, level - 1))
        weights = weights_of(self.model)
        plan = pruning_plan(self.model, self.hp)
        seed = derived_seed(self.hp.model_seed, level)  # for a criterion that draws numbers
        if self.hp.one_shot_density is not None:
            return prune_to_density(
                weights,
                previous_masks,
                self.hp.one_shot_density,
                strategy=self.hp.strategy,
                scope=self.hp.scope,
                exclude=plan["exclude"],
                seed=seed,
                nm=self.nm,
            )
        return prune(
            weights,
            previous_masks,
            plan.pop("fraction"),
            strategy=self.hp.strategy,
            seed=seed,
            nm=self.nm,
            **plan,
        )

    def _prune_at_start(self, level: int, previous_masks: Masks) -> Masks:
        """Pruning at initialisation: the weights this level starts from (the initialisation,
        or the rewind point), scored by the strategy's criterion (on the first training
        batches of the run's data order when it needs batches), pruned once to the density."""
        self.model.load_state_dict(self.main_start_state(level))
        batches = []
        if self.criterion.needs_batches:
            order = DataOrder(len(self.splits.train), self.hp.batch_size, self.hp.data_seed)
            batches = [
                self.splits.train.batch(order.indices(index))
                for index in range(self.hp.score_batches)
            ]
        return prune_at_init(
            self.model,
            previous_masks,
            self.hp.one_shot_density,
            method=self.hp.strategy,
            batches=batches,
            input_shape=self.splits.input_shape,
            scope=self.hp.scope,
            exclude=pruning_plan(self.model, self.hp)["exclude"],
            iterations=self.hp.synflow_iterations,
            nm=self.nm,
        )

    @property
    def criterion(self) -> Criterion:
        """The registered criterion the run's strategy names."""
        criterion = get_criterion(self.hp.strategy)
        if criterion is None:
            raise ValueError(
                f"strategy is {self.hp.strategy!r}; expected one of {', '.join(CRITERIA)}"
            )
        return criterion

    @property
    def nm(self):
        """The run's N:M pattern, or None for unstructured masks."""
        return parse_nm(self.hp.nm) if self.hp.nm else None

    def main_start_state(self, level: int) -> dict:
        """The weights level ``level`` starts from, before its masks are applied."""
        if (
            level == 0
            or self.hp.rewind == "init"
            or (self.hp.rewind == "iteration" and not self.rewinds_to_iteration)
        ):
            return self.initial_state()
        if self.hp.rewind == "iteration":
            return self.read_state(self.run.rewind_point, redo_remedy(self.run.level(MAIN, 0)))
        return self._trained_state(MAIN, level - 1)  # "lr"

    def _trained_state(self, branch: str, level: int) -> dict:
        """The trained weights of a finished level (checked when it was found finished)."""
        files_of = self.run.level(branch, level)
        return self.read_state(files_of.trained, redo_remedy(files_of))

    def initial_state(self) -> dict:
        self.ensure_initial_state()
        return self.read_state(self.run.init, "delete it and run the same command again")

    def ensure_initial_state(self) -> bool:
        """Write the weights at iteration 0 when they are missing or corrupted; True when they
        were. They are rebuilt from the model seed; when level 0 has started already they must
        give exactly its stored start weights, or the run cannot be continued faithfully."""
        try:
            if self.read_state(self.run.init, "") is not None:
                return False
        except BadArtifact as error:
            self.redo(error, "made again from model_seed")
        state = build_model(self.hp, self.splits, self.hp.model_seed, "cpu").state_dict()
        level_0 = self.run.level(MAIN, 0)
        start, masks = _stored_or_none(level_0.start), _stored_or_none(level_0.masks)
        restoring = start is not None and masks is not None
        if restoring:
            model = build_model(self.hp, self.splits, self.hp.model_seed, "cpu")
            model.load_state_dict(state)
            Masks(masks).apply_to(model)
            rebuilt = model.state_dict()
            if rebuilt.keys() != start.keys() or not all(
                torch.equal(rebuilt[name], start[name]) for name in start
            ):
                raise RunError(
                    f"{self.run.init} is missing or corrupted, and the weights "
                    f"model_seed {self.hp.model_seed} gives here differ from level "
                    f"0's start weights (another torch version?); expected the "
                    f"original file back, or start the run again elsewhere"
                )
        files.write_tensors(self.run.init, state)
        if restoring:
            self.progress.message(
                f"restored {self.run.init} (missing or corrupted), checked "
                f"against level 0's start weights"
            )
        return True

    # The controls.

    def control_level(self, control: str, level: int) -> bool:
        if distributed.from_main(lambda: self._control_level_done(control, level)):
            return False
        masks, start_state = self._control_start(control, level)
        self._train(
            control, level, Masks(masks), start_state, seed_parts=(1 + CONTROL_IDS[control], level)
        )
        return True

    def pending_control_level(self, control: str, level: int) -> PendingLevel | None:
        """What level ``level`` of control ``control`` trains; None when it is finished (as
        :meth:`pending_main_level`)."""
        if self._control_level_done(control, level):
            return None
        masks, start_state = self._control_start(control, level)
        return PendingLevel(
            files=self.run.level(control, level),
            masks=Masks(masks),
            start_state=start_state,
            start_iteration=self._start_iteration(level),
            seed_parts=(1 + CONTROL_IDS[control], level),
            label=f"{control} level {level}",
            about={"branch": control, "level": level},
            record_rewind_point=False,
        )

    def _control_level_done(self, control: str, level: int) -> bool:
        return self.finished(
            self.run.level(control, level),
            f"{control} level {level}",
            self._control_masks_check(control, level),
        )

    def _control_start(self, control: str, level: int) -> tuple:
        """(masks, start weights) of level ``level`` of control ``control``."""
        seed = derived_seed(self.hp.control_seed, level)
        if control == "reinit":
            masks = distributed.share_masks(lambda: self.main_masks(level))
            start_state = distributed.share_state(
                lambda: build_model(self.hp, self.splits, seed, "cpu").state_dict()
            )
        else:  # random_pruning
            masks = distributed.share_masks(
                lambda: random_like(self.main_masks(level), seed=seed, nm=self.nm)
            )
            # With learning-rate rewinding the ticket starts from the previous level's trained
            # weights, which are zero wherever that level pruned; random positions would start
            # there at 0. The dense trained weights are the same point without that bias.
            start_state = distributed.share_state(
                lambda: (
                    self._trained_state(MAIN, 0)
                    if self.hp.rewind == "lr"
                    else self.main_start_state(level)
                )
            )
        return masks, start_state

    def _control_masks_check(self, control: str, level: int) -> MasksCheck:
        """What a control's masks must be: the main level's (reinit), or as many weights per
        layer at other positions (random_pruning)."""
        main_masks = self.main_masks(level)
        if control == "reinit":
            return lambda masks: (
                None
                if masks == main_masks
                else (f"are not the masks of main level {level}, which reinit trains")
            )
        expected = [row.kept for row in main_masks.density_rows()]
        return lambda masks: (
            None
            if [row.kept for row in masks.density_rows()] == expected
            else (f"do not keep as many weights per layer as main level {level}")
        )

    # Shared by the branches.

    def _train(
        self,
        branch: str,
        level: int,
        masks: Masks,
        start_state: dict,
        seed_parts: tuple,
        record_rewind_point: bool = False,
    ) -> None:
        label = f"level {level}" if branch == MAIN else f"{branch} level {level}"
        self.train_level(
            self.run.level(branch, level),
            masks,
            start_state,
            start_iteration=self._start_iteration(level),
            seed_parts=seed_parts,
            label=label,
            about={"branch": branch, "level": level},
            record_rewind_point=record_rewind_point,
        )


def _stored_or_none(path: Path) -> dict | None:
    """The tensors at ``path``, or None when absent or unreadable (made again then)."""
    try:
        return files.read_tensors(path)
    except files.DamagedArtifact:
        return None


def _forget(level: Level) -> None:
    for path in (level.metrics, level.trained, level.directory / CHECKPOINT):
        files.remove_artifact(path)
