"""Checks that need a real process group: run in each of 2 processes by torch.multiprocessing.spawn
(see test_helpers.py), each reporting what it saw to a file of its rank."""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sparse_tickets.compact import choice
from sparse_tickets.data import ImageSplit
from sparse_tickets.lottery import distributed
from sparse_tickets.lottery.train import EVAL_BATCH, evaluate
from sparse_tickets.nn import MaskedLinear
from sparse_tickets.optim import MaskedAdam, MaskedSGD
from sparse_tickets.pruning import Masks

WORLD = 2


def run(rank: int, port: int, output: str) -> None:
    """The spawn target: join a gloo group the way torchrun's environment does, run every
    check, write ``{check: "ok" | error text}`` to ``output/rank_<rank>.json``."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    results = {}
    with distributed.process_group(torch.device("cpu")):
        for check in CHECKS:
            try:
                outcome = check()
                results[check.__name__] = "ok" if outcome is None else outcome
            except Exception:  # reported to the test, which fails with the trace
                results[check.__name__] = traceback.format_exc()
            distributed.barrier()
    Path(output, f"rank_{rank}.json").write_text(json.dumps(results))


def _masks(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "fc1.weight": torch.rand(7, 5, generator=generator) < 0.6,
        "fc2.weight": torch.rand(3, 7, generator=generator) < 0.6,
    }


def share_masks_broadcasts_rank_0s_masks():
    def compute():
        assert distributed.is_main(), "masks computed on a rank other than 0"
        return _masks(seed=1)

    masks = distributed.share_masks(compute)
    assert list(masks) == ["fc1.weight", "fc2.weight"]
    assert all(torch.equal(masks[n], _masks(seed=1)[n]) for n in masks)
    return distributed.checksum(masks)


def verify_identical_refuses_different_masks():
    try:
        distributed.verify_identical(_masks(seed=distributed.rank()), "masks")
    except distributed.DistributedError as error:
        return str(error)
    raise AssertionError("different masks on the two ranks were accepted")


def from_main_reports_a_failure_of_rank_0():
    def compute():
        raise ValueError("no such file")

    try:
        distributed.from_main(compute)
    except distributed.MainRankFailed as error:
        return f"MainRankFailed: {error}"
    except ValueError as error:
        return f"ValueError: {error}"
    raise AssertionError("the failure was not raised")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(MaskedLinear(5, 7), nn.ReLU(), MaskedLinear(7, 3))


def _batch():
    generator = torch.Generator().manual_seed(2)
    return torch.randn(8, 5, generator=generator), torch.randint(0, 3, (8,), generator=generator)


def _train_steps(mode: str, optimizer_name: str, distributed_run: bool) -> tuple:
    """Three steps on the global batch of 8 (a 4-example slice per rank under DDP): the
    gradients of the last step, in dense form, and the final weights."""
    model = _model()
    fc1, fc2 = _masks(seed=3).values()
    masks = Masks({"0.weight": fc1, "2.weight": fc2})
    with choice.default_mode_set_to(mode):
        masks.apply_to(model)  # the mode is chosen here, before DDP sees the Parameters
    layers = [model[0], model[2]]
    assert all(layer.mode == mode for layer in layers), [layer.mode for layer in layers]
    if optimizer_name == "adam":
        optimizer = MaskedAdam(model.parameters(), lr=0.01, weight_decay=0.1, masks=model)
    else:
        optimizer = MaskedSGD(
            model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1, masks=model
        )
    network = distributed.wrap(model, torch.device("cpu")) if distributed_run else model
    x, y = _batch()
    if distributed_run:
        x, y = x[distributed.my_slice(torch.arange(8))], y[distributed.my_slice(torch.arange(8))]
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(network(x), y).backward()
        optimizer.step()
    gradients = []
    for layer in layers:
        grad = layer.trainable_weight.grad
        if layer.mode == "compact":
            assert grad.numel() == int(layer.mask.sum()), "compact grad is not over kept weights"
            grad = layer.compact_index.to_dense(grad)
        gradients.append((grad.clone(), layer.mask.clone()))
    weights = [layer.weight.detach().clone() for layer in layers]
    return gradients, weights


def _ddp_case(mode: str, optimizer_name: str):
    gradients, weights = _train_steps(mode, optimizer_name, distributed_run=True)
    for grad, mask in gradients:
        assert torch.all(grad[~mask] == 0), "a pruned weight has a nonzero gradient"
    for weight, (_, mask) in zip(weights, gradients):
        assert torch.all(weight[~mask] == 0), "a pruned weight was revived"
    single_gradients, single_weights = _train_steps(mode, optimizer_name, distributed_run=False)
    for (grad, _), (single, _) in zip(gradients, single_gradients):
        torch.testing.assert_close(grad, single, rtol=1e-5, atol=1e-6)
    for weight, single in zip(weights, single_weights):
        torch.testing.assert_close(weight, single, rtol=1e-5, atol=1e-6)
    distributed.verify_identical({str(i): w for i, w in enumerate(weights)}, "weights")


def ddp_dense_adam_matches_one_process():
    _ddp_case("dense", "adam")


def ddp_dense_sgd_matches_one_process():
    _ddp_case("dense", "sgd")


def ddp_compact_adam_matches_one_process():
    _ddp_case("compact", "adam")


def ddp_compact_sgd_matches_one_process():
    _ddp_case("compact", "sgd")


def evaluation_is_shared_and_equals_one_process():
    generator = torch.Generator().manual_seed(4)
    split = ImageSplit(
        torch.rand(2500, 1, 2, 2, generator=generator),
        torch.randint(0, 3, (2500,), generator=generator),
        (0.5,),
        (0.25,),
    )
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    for parameter in model.parameters():  # rank 0's weights everywhere
        torch.distributed.broadcast(parameter.data, src=0)
    shared = evaluate(model, split, torch.device("cpu"))
    # What one process computes: every chunk of EVAL_BATCH, summed in order.
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(split), EVAL_BATCH):
            x, y = split.batch(torch.arange(start, min(start + EVAL_BATCH, len(split))))
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    alone = (loss_sum / len(split), correct / len(split))
    assert shared == alone, (shared, alone)  # bit-identical, on every rank


def sync_buffers_copies_rank_0s_batch_norm_statistics():
    norm = nn.BatchNorm1d(3)
    norm(torch.randn(6, 3) + distributed.rank())  # different running statistics per rank
    distributed.sync_buffers(norm)
    distributed.verify_identical(dict(norm.named_buffers()), "buffers")


CHECKS = [
    share_masks_broadcasts_rank_0s_masks,
    verify_identical_refuses_different_masks,
    from_main_reports_a_failure_of_rank_0,
    ddp_dense_adam_matches_one_process,
    ddp_dense_sgd_matches_one_process,
    ddp_compact_adam_matches_one_process,
    ddp_compact_sgd_matches_one_process,
    evaluation_is_shared_and_equals_one_process,
    sync_buffers_copies_rank_0s_batch_norm_statistics,
]
