"""The instability analysis: interpolation, the barrier, and a real analysis of a short run."""

import io

import pytest
import torch

from sparse_tickets import data, files
from sparse_tickets.lottery.hparams import Hparams
from sparse_tickets.lottery.imp import LotteryRun
from sparse_tickets.lottery.instability import (
    InstabilityAnalysis,
    alphas,
    error_barrier,
    interpolate,
)
from sparse_tickets.lottery.runs import RunError
from sparse_tickets.progress import LogLines


def test_alphas_are_evenly_spaced_with_both_ends():
    assert alphas(2) == [0.0, 1.0]
    assert alphas(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="expected at least 2"):
        alphas(1)


def test_error_barrier_is_the_rise_above_the_mean_of_the_ends():
    assert error_barrier([0.1, 0.3, 0.2]) == pytest.approx(0.3 - 0.15)
    assert error_barrier([0.2, 0.1, 0.2]) == pytest.approx(0.0)  # ends are the maximum
    assert error_barrier([0.1, 0.05, 0.3]) == pytest.approx(0.3 - 0.2)
    with pytest.raises(ValueError, match="at least the two ends"):
        error_barrier([0.1])


def test_interpolate_mixes_floats_and_keeps_masks_and_counters():
    mask = torch.tensor([True, False])
    first = {"w": torch.tensor([0.0, 2.0]), "mask": mask, "count": torch.tensor(3)}
    second = {"w": torch.tensor([4.0, -2.0]), "mask": mask.clone(), "count": torch.tensor(7)}
    mixed = interpolate(first, second, 0.25)
    assert torch.equal(mixed["w"], torch.tensor([1.0, 1.0]))
    assert torch.equal(mixed["mask"], mask) and int(mixed["count"]) == 3
    assert torch.equal(interpolate(first, second, 0.0)["w"], first["w"])
    assert torch.equal(interpolate(first, second, 1.0)["w"], second["w"])


def test_interpolate_refuses_different_masks_or_networks():
    first = {"mask": torch.tensor([True, False])}
    with pytest.raises(ValueError, match="expected the same masks"):
        interpolate(first, {"mask": torch.tensor([True, True])}, 0.5)
    with pytest.raises(ValueError, match="different tensors"):
        interpolate(first, {"other": torch.tensor([True, False])}, 0.5)
    with pytest.raises(ValueError, match="has shapes"):
        interpolate({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, 0.5)


# A short run with a rewind point at K = 20: level 0 stores its weights at 20, which the
# analysis of level 0 from 20 must reproduce exactly by training to 20 itself.
HP = Hparams(
    iterations="60",
    levels=1,
    eval_every=20,
    train_size=600,
    controls="none",
    rewind="iteration",
    rewind_iteration="20",
)


@pytest.fixture(scope="module")
def lottery(tmp_path_factory):
    splits = data.load("mnist5k")
    subset = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))
    splits = data.DatasetSplits(
        splits.name,
        splits.train.subset(subset[:600]),
        splits.val,
        splits.test,
        splits.input_shape,
        splits.num_classes,
    )
    lottery = LotteryRun(
        HP,
        tmp_path_factory.mktemp("runs"),
        splits,
        torch.device("cpu"),
        checkpoint_every=25,
        progress=LogLines(io.StringIO()),
    )
    lottery.execute()
    return lottery


@pytest.fixture(scope="module")
def analysed(lottery):
    analysis = InstabilityAnalysis(lottery)
    assert analysis.execute("main", 0, [20], points=5)
    return lottery.run.instability("main", 0, 20)


def test_the_spawn_point_is_the_level_at_iteration_k(lottery, analysed):
    spawn = files.read_tensors(analysed.spawn.trained)
    rewind_point = files.read_tensors(lottery.run.rewind_point)
    assert spawn.keys() == rewind_point.keys()
    for name in spawn:
        assert torch.equal(spawn[name], rewind_point[name]), name


def test_the_copies_start_at_the_spawn_point_and_train_apart(analysed):
    spawn = files.read_tensors(analysed.spawn.trained)
    trained = [files.read_tensors(analysed.copy(index).trained) for index in (0, 1)]
    for index in (0, 1):
        start = files.read_tensors(analysed.copy(index).start)
        assert all(torch.equal(start[name], spawn[name]) for name in spawn)
        metrics = analysed.copy(index).read_metrics()
        assert metrics["start_iteration"] == 20 and metrics["iterations"] == 60
    assert not torch.equal(trained[0]["hidden.1.weight"], trained[1]["hidden.1.weight"])
    seeds = [analysed.copy(index).read_metrics()["seeds"]["data"] for index in (0, 1)]
    assert seeds[0] != seeds[1] and HP.data_seed not in seeds


def test_the_path_ends_are_the_copies_and_the_barrier_follows(analysed):
    result = files.read_json(analysed.path(5))
    assert result["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for index, position in ((0, 0), (1, -1)):
        final = analysed.copy(index).read_metrics()["final_test_accuracy"]
        assert result["test_error"][position] == pytest.approx(1 - final, abs=1e-12)
    assert result["test_barrier"] == pytest.approx(error_barrier(result["test_error"]))
    assert result["train_barrier"] == pytest.approx(error_barrier(result["train_error"]))
    assert len(result["train_error"]) == 5
    assert (result["branch"], result["level"], result["iteration"]) == ("main", 0, 20)
    assert result["percent_remaining"] == pytest.approx(100.0)


def test_a_done_analysis_is_skipped_and_other_points_only_evaluate(lottery, analysed):
    analysis = InstabilityAnalysis(lottery)
    before = {index: analysed.copy(index).trained.stat().st_mtime_ns for index in (0, 1)}
    assert not analysis.execute("main", 0, [20], points=5)
    assert analysis.execute("main", 0, [20], points=3)
    assert {index: analysed.copy(index).trained.stat().st_mtime_ns for index in (0, 1)} == before
    three = files.read_json(analysed.path(3))
    five = files.read_json(analysed.path(5))
    assert three["test_error"] == [
        five["test_error"][0],
        five["test_error"][2],
        five["test_error"][4],
    ]


def test_a_copy_that_was_interrupted_is_retrained_alone(lottery, analysed):
    analysis = InstabilityAnalysis(lottery)
    kept = analysed.copy(0).trained.stat().st_mtime_ns
    files.remove_artifact(analysed.copy(1).metrics)
    files.remove_artifact(analysed.path(5))
    assert analysis.execute("main", 0, [20], points=5)
    assert analysed.copy(0).trained.stat().st_mtime_ns == kept
    assert analysed.copy(1).done() and files.read_json(analysed.path(5)) is not None


def test_a_pruned_level_from_its_start_trains_no_spawn(lottery):
    # Level 1 rewinds to iteration 20: from 20 the copies start at the level's own start.
    analysis = InstabilityAnalysis(lottery)
    assert analysis.execute("main", 1, [20], points=2)
    where = lottery.run.instability("main", 1, 20)
    assert not where.spawn.directory.exists()
    start = files.read_tensors(lottery.run.level("main", 1).start)
    copy_start = files.read_tensors(where.copy(0).start)
    assert all(torch.equal(copy_start[name], start[name]) for name in start)
    result = files.read_json(where.path(2))
    assert result["percent_remaining"] == pytest.approx(
        100 * lottery.run.level("main", 1).read_metrics()["density"]
    )


def test_bad_requests_are_one_line_errors(lottery):
    analysis = InstabilityAnalysis(lottery)
    with pytest.raises(ValueError, match="expected from the level's start iteration 20"):
        analysis.analyse("main", 1, 10, 5)
    with pytest.raises(ValueError, match="before the end of training at 60"):
        analysis.analyse("main", 0, 60, 5)
    with pytest.raises(RunError, match="unknown branch"):
        analysis.analyse("mystery", 0, 0, 5)
    with pytest.raises(RunError, match="has not started"):
        analysis.analyse("reinit", 1, 20, 5)
    with pytest.raises(ValueError, match="expected at least 2"):
        analysis.analyse("main", 0, 0, 1)
