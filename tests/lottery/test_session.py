"""What the training commands share: the checks before a run directory is made, the lock and
the progress of a command that works in one."""

import os

import pytest
import torch

from sparse_tickets import models
from sparse_tickets.lottery import locking, session
from sparse_tickets.lottery.hparams import Hparams, HparamsError
from sparse_tickets.lottery.train import Schedule
from sparse_tickets.progress import LogLines, ProgressBars


def _fits(hp: Hparams, given: dict) -> None:
    model = models.create(
        hp.model, input_shape=(1, 28, 28) if hp.model.startswith("lenet") else (3, 32, 32)
    )
    session.check_fits(hp, Schedule.resolve(hp, 600), model, given)


def test_a_rate_given_for_a_kind_of_layer_the_model_lacks_is_refused():
    hp = Hparams(conv_fraction=0.2)  # LeNet: fc layers only
    with pytest.raises(
        HparamsError,
        match="--conv-fraction 0.2 given, but lenet_300_100 has no conv layer to prune",
    ):
        _fits(hp, {"conv_fraction": 0.2})
    _fits(hp, {})  # the same rate from a preset is not the user's mistake
    _fits(hp.replace(conv_fraction=0.0), {"conv_fraction": 0.0})  # a rate of 0 asks nothing


def test_an_nm_group_longer_than_every_row_is_refused():
    with pytest.raises(
        HparamsError,
        match="nm 2:1024 groups 1024 weights, more than the "
        "longest row of lenet_300_100 \\(784 weights\\)",
    ):
        _fits(Hparams(nm="2:1024"), {"nm": "2:1024"})


def test_a_length_that_does_not_fit_the_data_is_refused():
    with pytest.raises(HparamsError, match="warmup is '20ep'"):
        _fits(Hparams(iterations="10ep", warmup="20ep"), {"warmup": "20ep"})


def test_progress_is_bars_or_log_lines():
    assert type(session.progress_output(quiet=True)) is LogLines
    assert type(session.progress_output(quiet=False)) is ProgressBars


def test_working_in_a_directory_holds_its_lock_and_shows_progress(tmp_path):
    with session.working_in(
        tmp_path, torch.device("cpu"), quiet=True, command="sparse-tickets imp"
    ) as progress:
        assert type(progress) is LogLines
        holder = locking.describe_holder(tmp_path / locking.LOCK_FILE)
        assert holder.startswith(f"process {os.getpid()} (")
    with locking.held(tmp_path):  # let go at the end of the block
        pass
