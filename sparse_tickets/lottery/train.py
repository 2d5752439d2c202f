"""One training run of a (masked) model: the loop every level and control branch uses.

Everything a run depends on is a function of the iteration number, so a run stopped at any
checkpoint continues to the same numbers: the batch at iteration ``t`` comes from a permutation
seeded by (data seed, epoch of ``t``); the learning rate at ``t`` is computed, not stepped; the
checkpoint holds the weights, the optimizer state, the torch RNG (dropout) and the metrics so far.

Under torchrun (:mod:`sparse_tickets.lottery.distributed`) the batch at ``t`` is the same global
batch, dealt out across the ranks; DistributedDataParallel averages the gradients, the
evaluation splits are shared out by chunks and summed, and rank 0 alone reads and writes the
checkpoint, which holds every rank's RNG state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import files
from ..data import DatasetSplits, ImageSplit
from ..optim import MaskedAdam, MaskedSGD
from ..progress import LogLines
from ..pruning import Masks
from . import distributed
from .artifacts import Reference
from .hparams import Hparams, parse_step_list, parse_steps

EVAL_BATCH = 1000
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class Schedule:
    """The hyperparameters' lengths resolved to iterations for one training set size."""

    iterations_per_epoch: int
    iterations: int
    milestones: tuple
    warmup: int
    rewind_iteration: int

    @classmethod
    def resolve(cls, hp: Hparams, train_size: int) -> Schedule:
        per_epoch = max(train_size // hp.batch_size, 1)
        schedule = cls(
            per_epoch,
            parse_steps(hp.iterations, per_epoch, "iterations"),
            tuple(parse_step_list(hp.milestones, per_epoch, "milestones")),
            parse_steps(hp.warmup, per_epoch, "warmup"),
            parse_steps(hp.rewind_iteration, per_epoch, "rewind_iteration"),
        )
        if schedule.rewind_iteration >= schedule.iterations and hp.rewind != "init":
            raise ValueError(
                f"rewind_iteration is {schedule.rewind_iteration} iterations; "
                f"expected fewer than the {schedule.iterations} of training"
            )
        return schedule

    def learning_rate(self, base: float, gamma: float, iteration: int) -> float:
        """The rate at ``iteration``: linear warmup, then ``gamma`` at each milestone passed."""
        rate = base * gamma ** sum(iteration >= m for m in self.milestones)
        if self.warmup and iteration < self.warmup:
            rate *= (iteration + 1) / self.warmup
        return rate


class DataOrder:
    """The training batches: epoch ``e`` visits the training set in a permutation seeded by
    (``data_seed``, ``e``); the last partial batch of an epoch is dropped."""

    def __init__(self, size: int, batch_size: int, data_seed: int):
        self.size = size
        self.batch_size = min(batch_size, size)
        self.per_epoch = max(size // batch_size, 1)
        self.data_seed = data_seed
        self._epoch, self._permutation = None, None

    def indices(self, iteration: int) -> torch.Tensor:
        epoch, position = divmod(iteration, self.per_epoch)
        if epoch != self._epoch:
            seed = int(np.random.SeedSequence([self.data_seed, epoch]).generate_state(1)[0])
            self._permutation = torch.randperm(
                self.size, generator=torch.Generator().manual_seed(seed)
            )
            self._epoch = epoch
        start = position * self.batch_size
        return self._permutation[start : start + self.batch_size]


@torch.no_grad()
def evaluate(model: nn.Module, split: ImageSplit, device: torch.device) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on ``split``.

    Computed in chunks of ``EVAL_BATCH`` examples, summed in chunk order. Under torchrun each
    rank evaluates every ``world_size``-th chunk and the chunk sums are exchanged, so every rank
    gets the numbers a single process computes.
    """
    was_training = model.training
    model.eval()
    starts = range(0, len(split), EVAL_BATCH)
    chunk_losses = torch.zeros(len(starts), dtype=torch.float64)
    chunk_correct = torch.zeros(len(starts), dtype=torch.float64)
    for chunk in distributed.my_share(len(starts)):
        start = starts[chunk]
        x, y = split.batch(torch.arange(start, min(start + EVAL_BATCH, len(split))))
        logits = model(x.to(device))
        y = y.to(device)
        chunk_losses[chunk] = F.cross_entropy(logits, y, reduction="sum").item()
        chunk_correct[chunk] = (logits.argmax(1) == y).sum().item()
    model.train(was_training)
    # A chunk is computed by one rank and is 0.0 on the others: the sums are exact.
    chunk_losses = distributed.all_reduce_sum(chunk_losses)
    chunk_correct = distributed.all_reduce_sum(chunk_correct)
    loss_sum, correct = 0.0, 0
    for loss, hits in zip(chunk_losses.tolist(), chunk_correct.tolist()):
        loss_sum += loss
        correct += int(hits)
    return loss_sum / len(split), correct / len(split)


def make_optimizer(model: nn.Module, hp: Hparams) -> torch.optim.Optimizer:
    if hp.optimizer == "adam":
        return MaskedAdam(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, masks=model)
    return MaskedSGD(
        model.parameters(),
        lr=hp.lr,
        momentum=hp.momentum,
        weight_decay=hp.weight_decay,
        masks=model,
    )


def train(
    model: nn.Module,
    splits: DatasetSplits,
    hp: Hparams,
    schedule: Schedule,
    directory: Path,
    start_iteration: int,
    *,
    checkpoint_every: int,
    snapshot_iteration: int | None = None,
    on_snapshot: Callable[[dict], None] | None = None,
    progress: LogLines | None = None,
    label: str = "",
    reference: Reference | None = None,
) -> dict:
    """Train ``model`` from ``start_iteration`` to the schedule's end; return the metrics.

    Resumes from ``directory/checkpoint.pt`` when a valid one is there: one that does not fit
    this level (see :func:`checkpoint_problem`; ``reference`` describes the model, taken from
    it when not given) is said so, removed, and training starts from ``start_iteration``.
    ``progress`` shows the run under ``label``. When
    ``snapshot_iteration`` is given, ``on_snapshot`` receives the model's state_dict after that
    many iterations (the rewind point), before any later checkpoint is written. Metrics: the
    evaluations (iteration, train/validation/test loss and accuracy), the early-stopping
    iteration (minimum validation loss) with its test accuracy, the final test accuracy and the
    wall time.

    Training stops early when it diverges: at an evaluation or a checkpoint, the training loss
    since the last one, the validation loss or a weight is not finite (see :func:`divergence`).
    The metrics then say ``diverged`` with the iteration and the cause; early stopping considers
    only finite validation losses. No checkpoint is written from a diverged state.

    Under torchrun every rank calls this with the same model, masks set; each trains on its
    slice of every batch under DistributedDataParallel, and only rank 0 reads and writes the
    checkpoint and calls ``on_snapshot``. The metrics are the same on every rank.
    """
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, hp)
    order = DataOrder(len(splits.train), hp.batch_size, hp.data_seed)
    distributed.check_batch(order.batch_size)
    end = schedule.iterations
    checkpoint_path = directory / CHECKPOINT

    state = distributed.from_main(
        lambda: _read_checkpoint(
            checkpoint_path,
            model,
            hp,
            reference or Reference(model),
            (start_iteration, end),
            progress,
        )
    )
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _restore_rng(state, device)
        iteration, evaluations = state["iteration"], state["evaluations"]
        loss_sum, loss_count = state["loss_sum"].to(device), state["loss_count"]
        elapsed = state["wall_time_seconds"]
    else:
        iteration, evaluations = start_iteration, []
        loss_sum, loss_count = torch.zeros((), dtype=torch.float64, device=device), 0
        elapsed = 0.0
    # After the masks (set by the caller) and the checkpoint: DDP must see the Parameters this
    # level trains, and starts every rank from rank 0's.
    network = distributed.wrap(model, device)
    started = time.perf_counter()
    if progress is not None:
        progress.start_level(label, start_iteration, end, iteration)

    def record_evaluation() -> None:
        nonlocal loss_sum, loss_count
        distributed.sync_buffers(model)
        row = {
            "iteration": iteration,
            "train_loss": (loss_sum.item() / loss_count) if loss_count else None,
        }
        for name, split in (("val", splits.val), ("test", splits.test)):
            row[f"{name}_loss"], row[f"{name}_accuracy"] = evaluate(model, split, device)
        evaluations.append(row)
        loss_sum, loss_count = torch.zeros_like(loss_sum), 0
        if progress is not None:
            progress.update(iteration, row)

    if iteration == start_iteration and not evaluations:
        record_evaluation()
    diverged = divergence(model, evaluations[-1] if evaluations else None, None)
    if diverged is not None:
        diverged["iteration"] = iteration
    model.train()
    while iteration < end and diverged is None:
        if (
            snapshot_iteration is not None
            and iteration == snapshot_iteration
            and on_snapshot
            and distributed.is_main()
        ):
            on_snapshot(model.state_dict())
        for group in optimizer.param_groups:
            group["lr"] = schedule.learning_rate(hp.lr, hp.gamma, iteration)
        x, y = splits.train.batch(distributed.my_slice(order.indices(iteration)))
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(network(x), y)
        loss.backward()
        optimizer.step()
        # The global batch's mean loss, as a single process sees it, on every rank.
        loss_sum += distributed.mean_over_ranks(loss.detach())
        loss_count += 1
        iteration += 1
        evaluated = iteration % hp.eval_every == 0 or iteration == end
        checkpointing = iteration % checkpoint_every == 0 and iteration < end
        if evaluated or checkpointing:
            # Read before the evaluation resets the sum: the loss of every step since the last.
            running_loss = loss_sum.item()
        if evaluated:
            record_evaluation()
        elif progress is not None:
            progress.update(iteration, None)
        if evaluated or checkpointing:
            diverged = divergence(model, evaluations[-1] if evaluated else None, running_loss)
            if diverged is not None:
                diverged["iteration"] = iteration
                break
        if checkpointing:
            distributed.sync_buffers(model)
            rng_states = distributed.gather_to_main(_rng_state(device))
            if distributed.is_main():
                files.write_torch(
                    checkpoint_path,
                    {
                        "iteration": iteration,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        **rng_states[0],
                        "evaluations": evaluations,
                        "loss_sum": loss_sum.cpu(),
                        "loss_count": loss_count,
                        "wall_time_seconds": elapsed + time.perf_counter() - started,
                        # Under torchrun: each rank's generators, so its dropout resumes too.
                        **({"rank_rng": rng_states} if distributed.active() else {}),
                    },
                )
    if (
        snapshot_iteration is not None
        and snapshot_iteration == end
        and on_snapshot
        and distributed.is_main()
        and diverged is None
    ):
        on_snapshot(model.state_dict())

    metrics = summarize(evaluations)
    metrics["start_iteration"], metrics["iterations"] = start_iteration, end
    metrics["wall_time_seconds"] = elapsed + time.perf_counter() - started
    metrics["diverged"] = diverged is not None
    metrics["divergence"] = diverged
    return metrics


def divergence(
    model: nn.Module | None, evaluation: dict | None, running_loss: float | None
) -> dict | None:
    """``{"cause": ...}`` when training has diverged, else None.

    Diverged means a number that can never come back: a training loss (``running_loss``, the
    sum over the steps since the last evaluation), a validation loss or a weight that is NaN or
    infinite. Finite but exploding losses are only warned about (:func:`explosion`): no bound on
    a finite loss separates divergence from a hard problem without false alarms.
    """
    if running_loss is not None and not math.isfinite(running_loss):
        return {"cause": f"the training loss became {running_loss}"}
    if evaluation is not None and not math.isfinite(evaluation["val_loss"]):
        return {"cause": f"the validation loss became {evaluation['val_loss']}"}
    if model is None:  # its weights were checked otherwise
        return None
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return {"cause": f"the weights became non-finite ({name})"}
    return None


# A trained level whose validation loss ends this many times above the chance level's,
# ln(classes), is warned about: a loss of 100 ln(10) = 230 needs confident predictions of
# the wrong class on average, which no learning network makes; an exploding one does.
EXPLOSION_FACTOR = 100


def explosion(metrics: dict, num_classes: int) -> str | None:
    """A one-line description when a level's final validation loss exploded, else None."""
    last = metrics["evaluations"][-1]["val_loss"]
    chance = math.log(num_classes)
    if metrics["diverged"] or not last > EXPLOSION_FACTOR * chance:
        return None
    return (
        f"the validation loss ended at {last:.3g}, {last / chance:.0f} times that of "
        f"guessing ({chance:.2f})"
    )


def _read_checkpoint(
    path: Path,
    model: nn.Module,
    hp: Hparams,
    reference: Reference,
    span: tuple[int, int],
    progress: LogLines | None,
) -> dict | None:
    """The checkpoint at ``path`` when there is one that fits; a bad one is removed."""
    try:
        state = files.read_torch(path)
        problem = None if state is None else checkpoint_problem(state, model, hp, reference, span)
    except files.DamagedArtifact as error:
        state, problem = None, error.reason
    if problem is None:
        return state
    if progress is not None:
        progress.message(f"{path}: {problem}; discarded, training this level from its start again")
    files.remove_artifact(path)
    return None


def checkpoint_problem(
    state, model: nn.Module, hp: Hparams, reference: Reference, span: tuple[int, int]
) -> str | None:
    """What is wrong with ``state`` as a checkpoint of the level ``model`` trains (its masks
    set) between the iterations ``span``, or None."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}; expected a checkpoint"
    missing = [key for key in _CHECKPOINT_KEYS if key not in state]
    if missing:
        return f"lacks {', '.join(missing)}; expected a checkpoint of this tool"
    iteration, (start, end) = state["iteration"], span
    if (
        not isinstance(iteration, int)
        or isinstance(iteration, bool)
        or not (start < iteration < end)
    ):
        return f"is at iteration {iteration!r}; expected one between {start} and {end}"
    masks = Masks.from_model(model).to("cpu")
    problem = reference.state_problem(state["model"], masks)
    if problem:
        return f"its weights: {problem}"
    rows = state["evaluations"]
    if not isinstance(rows, list) or not all(
        isinstance(row, dict)
        and isinstance(row.get("iteration"), int)
        and all(isinstance(row.get(name), float) for name in ("val_loss", "test_accuracy"))
        for row in rows
    ):
        return "holds evaluations of another form; expected this tool's"
    loss_sum = state["loss_sum"]
    if (
        not isinstance(loss_sum, torch.Tensor)
        or loss_sum.dim() != 0
        or not bool(torch.isfinite(loss_sum))
        or not isinstance(state["loss_count"], int)
    ):
        return "holds no finite running loss"
    if (
        not isinstance(state["rng"], torch.Tensor)
        or state["rng"].dtype != torch.uint8
        or (state["rng"].shape != torch.get_rng_state().shape)
    ):
        return "holds no random generator state of this torch"
    try:  # a throwaway optimizer: a state that does not fit fails here, not mid-training
        optimizer = make_optimizer(model, hp)
        optimizer.load_state_dict(state["optimizer"])
    except Exception as error:  # load_state_dict raises several types for a bad state
        return f"its optimizer state does not fit this level ({_first_line(error)})"
    for per_param in optimizer.state.values():
        for value in per_param.values():
            if (
                isinstance(value, torch.Tensor)
                and value.is_floating_point()
                and not bool(torch.isfinite(value).all())
            ):
                return "its optimizer state holds NaN or infinite values"
    return None


_CHECKPOINT_KEYS = (
    "iteration",
    "model",
    "optimizer",
    "rng",
    "evaluations",
    "loss_sum",
    "loss_count",
    "wall_time_seconds",
)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _rng_state(device: torch.device) -> dict:
    return {
        "rng": torch.get_rng_state(),
        # Dropout on a GPU draws from the device's generator.
        "cuda_rng": (
            torch.cuda.get_rng_state(device)
            if device.type == "cuda"
            else torch.empty(0, dtype=torch.uint8)
        ),
    }


def _restore_rng(state: dict, device: torch.device) -> None:
    """This rank's generators from a checkpoint. A checkpoint of a job with fewer processes
    has no state for this rank, which then keeps the generators its level was seeded with."""
    per_rank = state.get("rank_rng") or [state]
    if distributed.rank() >= len(per_rank):
        return
    own = per_rank[distributed.rank()]
    torch.set_rng_state(own["rng"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(own["cuda_rng"], device)


def summarize(evaluations: list[dict]) -> dict:
    """Early stopping and final figures from the evaluations (the first minimum wins ties).
    Only a finite validation loss can be the minimum: a diverged evaluation is never the
    early-stop point (None in every early-stop field when no evaluation is finite)."""
    finite = [row for row in evaluations if math.isfinite(row["val_loss"])]
    best = (
        min(finite, key=lambda row: row["val_loss"])
        if finite
        else dict.fromkeys(("iteration", "val_loss", "val_accuracy", "test_accuracy"))
    )
    last = evaluations[-1]
    return {
        "early_stop_iteration": best["iteration"],
        "early_stop_val_loss": best["val_loss"],
        "early_stop_val_accuracy": best["val_accuracy"],
        "early_stop_test_accuracy": best["test_accuracy"],
        "final_val_accuracy": last["val_accuracy"],
        "final_test_accuracy": last["test_accuracy"],
        "evaluations": evaluations,
    }
