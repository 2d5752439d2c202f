"""`sparse-tickets imp` end to end: levels, masks, controls, report, resume, rewinding."""

import csv
import json
import shutil

import pytest
import torch

from sparse_tickets import files
from sparse_tickets.cli import main
from sparse_tickets.files import read_tensors
from sparse_tickets.lottery.runs import Run
from sparse_tickets.pruning import Masks
from tests import drift
from tests.cli.conftest import SHORT


def _level(run_directory, branch, level):
    return Run.open(run_directory).level(branch, level)


def test_short_imp_prunes_rewinds_and_records_every_level(short_run):
    _, run_directory = short_run
    run = Run.open(run_directory)
    init = files.read_tensors(run.init)
    previous_masks = None
    for level, expected_density in [(0, 1.0), (1, 0.8), (2, 0.64)]:
        level_files = run.level("main", level)
        metrics = level_files.read_metrics()
        assert metrics["level"] == level and metrics["branch"] == "main"
        assert metrics["density"] == pytest.approx(expected_density, abs=0.002)
        assert metrics["evaluations"][0]["iteration"] == 0
        assert [row["iteration"] for row in metrics["evaluations"]] == [0, 20, 40, 60]
        best = min(metrics["evaluations"], key=lambda row: row["val_loss"])
        assert metrics["early_stop_iteration"] == best["iteration"]
        assert metrics["early_stop_test_accuracy"] == best["test_accuracy"]
        assert metrics["final_test_accuracy"] == metrics["evaluations"][-1]["test_accuracy"]
        masks = Masks(files.read_tensors(level_files.masks))
        if previous_masks is not None:
            assert masks.is_subset_of(previous_masks) and masks != previous_masks
        previous_masks = masks
        start = files.read_tensors(level_files.start)
        for name, mask in masks.items():  # rewound to iteration 0, pruned weights zero
            assert torch.equal(start[name], init[name] * mask)
        rows = list(csv.DictReader(level_files.metrics_csv.open()))
        assert float(rows[-1]["test_accuracy"]) == metrics["final_test_accuracy"]
        assert not (level_files.directory / "checkpoint.pt").exists()


def test_controls_reuse_the_main_masks(short_run):
    _, run_directory = short_run
    for level in (1, 2):
        main_masks = Masks(files.read_tensors(_level(run_directory, "main", level).masks))
        reinit = _level(run_directory, "reinit", level)
        random = _level(run_directory, "random_pruning", level)
        assert Masks(files.read_tensors(reinit.masks)) == main_masks
        random_masks = Masks(files.read_tensors(random.masks))
        assert random_masks != main_masks
        assert list(random_masks) == list(main_masks)  # layer order survives the files
        for row, main_row in zip(random_masks.density_rows(), main_masks.density_rows()):
            assert row.kept == main_row.kept  # same per-layer densities, other positions
        main_start = files.read_tensors(_level(run_directory, "main", level).start)
        reinit_start = files.read_tensors(reinit.start)
        name = next(iter(main_masks))
        assert not torch.equal(reinit_start[name], main_start[name])  # a fresh initialisation


def test_report_holds_the_numbers_of_the_metrics(short_run):
    _, run_directory = short_run
    report = run_directory / "report"
    for name in ("accuracy.png", "early_stop.png", "report.md", "summary.csv"):
        assert (report / name).stat().st_size > 0
    assert (report / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {
        (row["branch"], int(row["level"])): row
        for row in csv.DictReader((report / "summary.csv").open())
    }
    for branch, levels in (("main", (0, 1, 2)), ("reinit", (1, 2)), ("random_pruning", (1, 2))):
        for level in levels:
            metrics = _level(run_directory, branch, level).read_metrics()
            row = rows[(branch, level)]
            assert float(row["early_stop_test_accuracy_mean"]) == pytest.approx(
                metrics["early_stop_test_accuracy"]
            )
            assert float(row["early_stop_iteration_mean"]) == metrics["early_stop_iteration"]
    markdown = (report / "report.md").read_text()
    level_2 = _level(run_directory, "main", 2).read_metrics()
    assert f"{100 * level_2['early_stop_test_accuracy']:.2f}" in markdown


def test_rerunning_a_finished_run_does_nothing_and_says_so(short_run, capsys):
    runs, run_directory = short_run
    trained = run_directory / "main" / "level_2" / "trained.safetensors"
    before = trained.stat().st_mtime_ns
    assert (
        main(["imp", *SHORT, "--controls", "reinit,random_pruning", "--runs-dir", str(runs)]) == 0
    )
    assert "is already complete; nothing to do" in capsys.readouterr().err
    assert trained.stat().st_mtime_ns == before


def _copy_of_short_run(short_run, tmp_path):
    _, source = short_run
    runs = tmp_path / "runs"
    shutil.copytree(source, runs / source.name)
    return runs, runs / source.name


@pytest.mark.parametrize("damage", ["deleted", "corrupted"])
def test_a_finished_run_without_its_initial_weights_is_not_complete(
    short_run, tmp_path, damage, capsys
):
    runs, run_directory = _copy_of_short_run(short_run, tmp_path)
    init = Run.open(run_directory).init
    original = init.read_bytes()
    if damage == "deleted":
        files.remove_artifact(init)
    else:
        init.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    arguments = [
        "imp",
        *SHORT,
        "--controls",
        "reinit,random_pruning",
        "--runs-dir",
        str(runs),
        "--no-report",
    ]
    assert main(arguments) == 0
    said = capsys.readouterr().err
    assert (
        f"restored {init} (missing or corrupted), checked against level 0's start weights"
    ) in said
    assert "already complete" not in said
    assert init.read_bytes() == original and files.artifact_exists(init)
    assert main(arguments) == 0
    assert "is already complete; nothing to do" in capsys.readouterr().err


def test_initial_weights_that_cannot_be_rebuilt_are_refused(short_run, tmp_path, capsys):
    runs, run_directory = _copy_of_short_run(short_run, tmp_path)
    run = Run.open(run_directory)
    files.remove_artifact(run.init)
    start = run.level("main", 0).start
    files.write_tensors(
        start,
        {
            name: tensor + 1 if tensor.is_floating_point() else tensor
            for name, tensor in read_tensors(start).items()
        },
    )
    assert (
        main(
            [
                "imp",
                *SHORT,
                "--controls",
                "reinit,random_pruning",
                "--runs-dir",
                str(runs),
                "--no-report",
            ]
        )
        == 2
    )
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (
        f"sparse-tickets: error: {run.init} is missing or corrupted, and the "
        f"weights model_seed 0 gives here differ from level 0's start weights "
        f"(another torch version?); expected the original file back, or start "
        f"the run again elsewhere"
    )
    assert not run.init.exists()


ONE_LEVEL = ["imp", *SHORT, "--levels", "1", "--controls", "none", "--no-report"]


@pytest.fixture(scope="module")
def one_level_run(tmp_path_factory):
    """One finished one-level run, never changed: tests that damage it work on a copy."""
    runs = tmp_path_factory.mktemp("one_level")
    assert main([*ONE_LEVEL, "--runs-dir", str(runs)]) == 0
    (run_directory,) = runs.iterdir()
    return run_directory


@pytest.mark.parametrize(
    "damaged_file", ["trained.safetensors", "start.safetensors", "metrics.csv", "masks.safetensors"]
)
def test_a_corrupted_artifact_is_detected_and_redone(one_level_run, tmp_path, damaged_file, capsys):
    run_directory = tmp_path / one_level_run.name
    shutil.copytree(one_level_run, run_directory)
    arguments = [*ONE_LEVEL, "--runs-dir", str(tmp_path)]
    level = Run.open(run_directory).level("main", 1)
    metrics = json.loads(level.metrics.read_text())
    trained = level.trained.read_bytes()
    path = level.directory / damaged_file
    damaged = bytearray(path.read_bytes())
    damaged[-5] ^= 0xFF
    path.write_bytes(bytes(damaged))
    assert files.read_artifact(path) is None  # never silently used
    capsys.readouterr()
    assert main(arguments) == 0
    assert "already complete" not in capsys.readouterr().err
    assert files.read_artifact(path) is not None
    assert level.trained.read_bytes() == trained  # redone, to the same bytes
    redone = json.loads(level.metrics.read_text())
    assert redone["evaluations"] == metrics["evaluations"]


def test_rewinding_to_an_iteration_starts_later_levels_there(tmp_path):
    assert (
        main(
            [
                "imp",
                *SHORT,
                "--levels",
                "1",
                "--controls",
                "none",
                "--no-report",
                "--rewind-iteration",
                "20",
                "--runs-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    (run_directory,) = tmp_path.iterdir()
    run = Run.open(run_directory)
    assert run.hparams.rewind == "iteration"
    rewind_point = files.read_tensors(run.rewind_point)
    level_1 = run.level("main", 1)
    metrics = level_1.read_metrics()
    assert metrics["start_iteration"] == 20
    assert metrics["evaluations"][0]["iteration"] == 20
    masks = files.read_tensors(level_1.masks)
    start = files.read_tensors(level_1.start)
    init = files.read_tensors(run.init)
    name = next(iter(masks))
    assert torch.equal(start[name], rewind_point[name] * masks[name])
    assert not torch.equal(rewind_point[name], init[name])


def test_learning_rate_rewinding_keeps_the_trained_weights(tmp_path):
    assert (
        main(
            [
                "imp",
                *SHORT,
                "--levels",
                "1",
                "--controls",
                "random_pruning",
                "--no-report",
                "--lr-rewind",
                "--rewind-iteration",
                "20",
                "--runs-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    (run_directory,) = tmp_path.iterdir()
    run = Run.open(run_directory)
    trained_0 = files.read_tensors(run.level("main", 0).trained)
    level_1 = run.level("main", 1)
    masks = files.read_tensors(level_1.masks)
    start = files.read_tensors(level_1.start)
    name = next(iter(masks))
    assert torch.equal(start[name], trained_0[name] * masks[name])
    assert level_1.read_metrics()["start_iteration"] == 20
    # The random-pruning control starts from the same dense trained weights, its own masks.
    control = run.level("random_pruning", 1)
    control_masks = files.read_tensors(control.masks)
    assert torch.equal(
        files.read_tensors(control.start)[name], trained_0[name] * control_masks[name]
    )


def test_one_shot_prunes_straight_to_the_density(tmp_path):
    assert (
        main(
            [
                "imp",
                *SHORT,
                "--one-shot-density",
                "0.3",
                "--controls",
                "none",
                "--no-report",
                "--runs-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    (run_directory,) = tmp_path.iterdir()
    run = Run.open(run_directory)
    assert sorted(run.finished_levels("main")) == [0, 1]
    assert run.finished_levels("main")[1]["density"] == pytest.approx(0.3, abs=1e-4)


def test_imp_on_synthetic_cifar_shaped_data(tmp_path):
    assert (
        main(
            [
                "imp",
                "--model",
                "conv2",
                "--dataset",
                "synthetic",
                "--train-size",
                "120",
                "--batch-size",
                "20",
                "--iterations",
                "6",
                "--eval-every",
                "3",
                "--levels",
                "1",
                "--controls",
                "reinit",
                "--quiet",
                "--runs-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    (run_directory,) = tmp_path.iterdir()
    run = Run.open(run_directory)
    assert run.model_shape == {"input_shape": [3, 32, 32], "num_classes": 10}
    assert run.hparams.optimizer == "adam" and run.hparams.lr == 2e-4  # the conv2 preset
    densities = {level: m["layers"] for level, m in run.finished_levels("main").items()}
    conv = next(row for row in densities[1] if row["name"].startswith("features"))
    assert conv["density"] == pytest.approx(0.9, abs=0.001)  # conv layers at 10% per level
    assert sorted(run.finished_levels("reinit")) == [1]
    assert (run_directory / "report" / "report.md").is_file()


def test_a_compact_imp_run_equals_the_dense_run(tmp_path, monkeypatch):
    """The whole short IMP in compact mode: the same masks at every level, the same weights and
    metrics within float tolerance, as the dense-masked run."""
    from sparse_tickets import functional

    calls = {"compact": 0}
    compact_linear = functional.compact_linear

    def counting(*args, **kwargs):
        calls["compact"] += 1
        return compact_linear(*args, **kwargs)

    monkeypatch.setattr(functional, "compact_linear", counting)
    arguments = ["imp", *SHORT, "--controls", "none", "--no-report", "--iterations", "40"]
    for mode in ("dense", "compact"):
        assert main([*arguments, "--mode", mode, "--runs-dir", str(tmp_path / mode)]) == 0
        assert (calls["compact"] > 0) == (mode == "compact")
    (dense,) = (tmp_path / "dense").iterdir()
    (compact,) = (tmp_path / "compact").iterdir()
    assert dense.name == compact.name  # the mode is not part of the run's identity
    dense_run, compact_run = Run.open(dense), Run.open(compact)
    for level in (0, 1, 2):
        ours, theirs = compact_run.level("main", level), dense_run.level("main", level)
        ours_masks, theirs_masks = read_tensors(ours.masks), read_tensors(theirs.masks)
        assert ours_masks.keys() == theirs_masks.keys()
        for name in ours_masks:
            assert torch.equal(ours_masks[name], theirs_masks[name]), (level, name)
        # The compact kernels sum in another order than dense torch: see tests/drift.py.
        ours_trained, theirs_trained = read_tensors(ours.trained), read_tensors(theirs.trained)
        for name in ours_trained:
            drift.assert_weights_close(
                ours_trained[name],
                theirs_trained[name],
                f"level {level} {name}",
                lr=1.2e-3,
                steps=40,
            )
        ours_metrics = compact_run.finished_levels("main")[level]
        theirs_metrics = dense_run.finished_levels("main")[level]
        for metrics in (ours_metrics, theirs_metrics):
            metrics.pop("wall_time_seconds")
        drift.assert_same_training(ours_metrics, theirs_metrics, f"level {level}", steps=40)
