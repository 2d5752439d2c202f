"""sparse_tickets.lottery.distributed in a real 2-process gloo group: mask broadcast and
checksum, rank 0's failures, DDP over masked layers and masked optimizers, shared evaluation,
buffer sync."""

import json
import socket
import time

import pytest
import torch.multiprocessing as mp

from sparse_tickets.lottery import distributed
from tests.lottery.distributed import group_checks

TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """{check name: [rank 0's outcome, rank 1's]} from one spawn of the 2 processes."""
    output = tmp_path_factory.mktemp("group_checks")
    context = mp.start_processes(
        group_checks.run,
        args=(_free_port(), str(output)),
        nprocs=group_checks.WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + TIMEOUT
    try:
        while not context.join(timeout=1):
            assert time.monotonic() < deadline, "the 2-process checks did not finish"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    per_rank = [
        json.loads((output / f"rank_{r}.json").read_text()) for r in range(group_checks.WORLD)
    ]
    return {name: [ranks[name] for ranks in per_rank] for name in per_rank[0]}


def _passed(outcomes, name):
    for rank, outcome in enumerate(outcomes[name]):
        assert "Traceback" not in str(outcome), f"rank {rank}:\n{outcome}"
    return outcomes[name]


def test_masks_computed_on_rank_0_reach_every_rank_with_one_checksum(outcomes):
    rank_0, rank_1 = _passed(outcomes, "share_masks_broadcasts_rank_0s_masks")
    assert rank_0 == rank_1 and len(rank_0) == 64


def test_different_masks_are_a_one_line_error_on_every_rank(outcomes):
    for message in _passed(outcomes, "verify_identical_refuses_different_masks"):
        assert message.startswith("masks differ across ranks: rank 1 has sha256 ")
        assert "\n" not in message and "expected identical masks on every rank" in message


def test_a_failure_on_rank_0_stops_the_other_ranks(outcomes):
    rank_0, rank_1 = _passed(outcomes, "from_main_reports_a_failure_of_rank_0")
    assert rank_0 == "ValueError: no such file"
    assert rank_1.startswith("MainRankFailed: rank 0 failed (ValueError: no such file)")


@pytest.mark.parametrize("mode", ["dense", "compact"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_ddp_over_masked_layers_matches_one_process_and_keeps_pruned_gradients_zero(
    outcomes, mode, optimizer
):
    # Each rank: pruned weights' gradients exactly 0 and pruned weights 0 after the masked
    # optimizer's steps; gradients and weights equal one process's on the global batch.
    _passed(outcomes, f"ddp_{mode}_{optimizer}_matches_one_process")


def test_evaluation_shared_by_chunks_is_bit_identical_to_one_process(outcomes):
    _passed(outcomes, "evaluation_is_shared_and_equals_one_process")


def test_sync_buffers_gives_every_rank_rank_0s_batch_norm_statistics(outcomes):
    _passed(outcomes, "sync_buffers_copies_rank_0s_batch_norm_statistics")


def test_a_single_process_has_no_group_and_helpers_are_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.launched_world_size() == 1 and not distributed.active()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    sentinel = object()
    assert distributed.from_main(lambda: sentinel) is sentinel
    assert distributed.share_masks(lambda: sentinel) is sentinel
    assert list(distributed.my_share(3)) == [0, 1, 2]
    distributed.check_batch(7)  # anything divides by 1
