"""Files of a real run, changed with their checksums recomputed (edited, copied from another
level, written by other code): `imp`, `export` and `report` check what they mean, name a bad
one in one line, and refuse it (a finished level's) or redo it (what the run can make again).

Each test copies the one short run that tests/cli/conftest.py trains, tampers with it, and runs
the command in the same process."""

import math
import shutil

import pytest
import torch

from sparse_tickets import files
from sparse_tickets.cli import main
from sparse_tickets.lottery.hparams import Hparams
from sparse_tickets.lottery.runs import Run
from sparse_tickets.lottery.train import make_optimizer
from sparse_tickets.models import create
from tests.cli.conftest import SHORT

IMP = ["imp", *SHORT, "--controls", "reinit,random_pruning", "--no-report"]
PREFIX = "sparse-tickets: error: "


@pytest.fixture
def run(short_run, tmp_path):
    """A copy of the short run, in a runs directory of its own: (runs dir, Run)."""
    _, original = short_run
    runs = tmp_path / "runs"
    shutil.copytree(original, runs / original.name)
    return runs, Run.open(runs / original.name)


def _imp(runs, *extra) -> list[str]:
    return [*IMP, "--runs-dir", str(runs), *extra]


def _error_line(capsys) -> str:
    """The one error line a failed command printed last on stderr (after its progress)."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith((PREFIX, "Traceback"))]
    assert errors == lines[-1:], lines
    return lines[-1][len(PREFIX) :]


def _rewrite(path, change) -> None:
    """Replace the tensors at ``path`` with ``change(tensors)``, the checksum recomputed."""
    files.write_tensors(path, change(files.read_tensors(path)))


def _with(name, value):
    return lambda tensors: {**tensors, name: value}


def _transposed_mask(tensors):
    return _with("hidden.1.weight", tensors["hidden.1.weight"].t().contiguous())(tensors)


def _nan_weight(tensors):
    weight = tensors["hidden.1.weight"].clone()
    weight[0, 0] = math.nan
    return _with("hidden.1.weight", weight)(tensors)


def _edit_metrics(path, change) -> None:
    metrics = files.read_json(path)
    change(metrics)
    files.write_json(path, metrics)


# --- imp refuses a finished level whose files make no sense ----------------------------------


def _wrong_shape_masks(run):
    _rewrite(run.level("main", 1).masks, _transposed_mask)
    return run.level("main", 1).masks, "'hidden.1.weight' has shape (784, 300); expected (300, 784)"


def _nan_trained_weights(run):
    _rewrite(run.level("main", 2).trained, _nan_weight)
    return run.level("main", 2).trained, "'hidden.1.weight' holds NaN or infinite values"


def _weights_where_pruned(run):
    init = files.read_tensors(run.init)
    _rewrite(run.level("main", 1).start, _with("hidden.1.weight", init["hidden.1.weight"]))
    return (
        run.level("main", 1).start,
        "'hidden.1.weight' is nonzero where the level's masks prune it",
    )


def _another_levels_masks(run):
    masks = files.read_tensors(run.level("main", 1).masks)
    files.write_tensors(run.level("main", 2).masks, masks)
    return (run.level("main", 2).masks, "records density 0.640")


def _masks_of_the_other_control(run):
    masks = files.read_tensors(run.level("random_pruning", 1).masks)
    files.write_tensors(run.level("reinit", 1).masks, masks)
    return run.level("reinit", 1).masks, "are not the masks of main level 1, which reinit trains"


def _metrics_without_evaluations(run):
    _edit_metrics(run.level("main", 1).metrics, lambda metrics: metrics.pop("evaluations"))
    return run.level("main", 1).metrics, "has no evaluations; expected a list of them"


def _metrics_of_another_level(run):
    other = files.read_json(run.level("main", 2).metrics)
    files.write_json(run.level("main", 1).metrics, other)
    return run.level("main", 1).metrics, "is the metrics of level 2, found in level_1"


def _metrics_that_are_not_json(run):
    files.write_artifact(run.level("main", 0).metrics, b'{"level": 0,')
    return run.level("main", 0).metrics, "not JSON"


def _trained_weights_that_are_not_safetensors(run):
    files.write_artifact(run.level("random_pruning", 2).trained, b"\x00" * 64)
    return run.level("random_pruning", 2).trained, "not a safetensors file"


@pytest.mark.parametrize(
    "tamper",
    [
        _wrong_shape_masks,
        _nan_trained_weights,
        _weights_where_pruned,
        _another_levels_masks,
        _masks_of_the_other_control,
        _metrics_without_evaluations,
        _metrics_of_another_level,
        _metrics_that_are_not_json,
        _trained_weights_that_are_not_safetensors,
    ],
)
def test_imp_refuses_a_finished_level_with_a_file_that_makes_no_sense(run, capsys, tamper):
    runs, tampered_run = run
    path, problem = tamper(tampered_run)
    assert main(_imp(runs)) == 2
    line = _error_line(capsys)
    assert line.startswith(f"{path}: ") and problem in line
    assert line.endswith(f"command again to redo {path.parent.parent.name}/{path.parent.name}")


def test_a_damaged_hparams_json_is_named(run, capsys):
    runs, tampered_run = run
    files.write_artifact(tampered_run.directory / "hparams.json", b"[1, 2")
    assert main(_imp(runs)) == 2
    assert _error_line(capsys).startswith(f"{tampered_run.directory / 'hparams.json'}: not JSON")


# --- imp redoes what the run can make again ---------------------------------------------------


def _unfinish(level) -> None:
    """Make a level look interrupted mid-training: its results gone, its masks kept."""
    for path in (level.metrics, level.metrics_csv, level.trained):
        files.remove_artifact(path)


def _checkpoint(run, level: int, iteration: int) -> dict:
    """A checkpoint of this tool's form, holding the trained weights (and masks) of main level
    ``level`` and a fresh optimizer."""
    model = create("lenet_300_100")
    model.load_state_dict(files.read_tensors(run.level("main", level).trained))
    return {
        "iteration": iteration,
        "model": model.state_dict(),
        "optimizer": make_optimizer(model, Hparams()).state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.empty(0, dtype=torch.uint8),
        "evaluations": [],
        "loss_sum": torch.zeros((), dtype=torch.float64),
        "loss_count": 0,
        "wall_time_seconds": 1.0,
    }


def _trained_again_as_before(original, level) -> None:
    retrained = files.read_tensors(level.trained)
    assert all(torch.equal(retrained[name], original[name]) for name in original)


def test_a_checkpoint_with_another_levels_masks_is_discarded_and_the_level_trained(run, capsys):
    runs, tampered_run = run
    level_2 = tampered_run.level("main", 2)
    original = files.read_tensors(level_2.trained)
    _unfinish(level_2)
    files.write_torch(level_2.checkpoint, _checkpoint(tampered_run, 1, iteration=50))
    assert main(_imp(runs)) == 0
    said = capsys.readouterr().err
    assert (
        f"{level_2.checkpoint}: its weights: its mask 'hidden.1.mask' is not the level's "
        f"(80.0% where the level's masks keep 64.0%): it belongs to another level; "
        f"discarded, training this level from its start again"
    ) in said
    assert level_2.read_metrics()["density"] == pytest.approx(0.64, abs=0.002)
    _trained_again_as_before(original, level_2)  # from its start, as an uninterrupted run
    assert not level_2.checkpoint.exists()


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\x80\x04garbage", "Unsupported operand"),
        ("wrong_iteration", "is at iteration 500; expected one between 0 and 60"),
        ("nan_weights", "its weights: 'hidden.1.weight' holds NaN or infinite values"),
    ],
)
def test_a_bad_checkpoint_is_named_discarded_and_the_level_trained(run, capsys, content, problem):
    runs, tampered_run = run
    level_2 = tampered_run.level("main", 2)
    original = files.read_tensors(level_2.trained)
    checkpoint = _checkpoint(tampered_run, 2, iteration=50)
    if content == "wrong_iteration":
        checkpoint["iteration"] = 500
    elif content == "nan_weights":
        checkpoint["model"] = _nan_weight(checkpoint["model"])
    _unfinish(level_2)
    if isinstance(content, bytes):
        files.write_artifact(level_2.checkpoint, content)
    else:
        files.write_torch(level_2.checkpoint, checkpoint)
    assert main(_imp(runs)) == 0
    said = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.startswith(str(level_2.checkpoint))
    ]
    assert len(said) == 1 and problem in said[0]
    assert said[0].endswith("discarded, training this level from its start again")
    _trained_again_as_before(original, level_2)


def test_masks_of_an_unfinished_level_that_prune_nothing_are_computed_again(run, capsys):
    runs, tampered_run = run
    level_2 = tampered_run.level("main", 2)
    original = files.read_tensors(level_2.masks)
    _unfinish(level_2)
    _rewrite(
        level_2.masks, lambda masks: {name: torch.ones_like(mask) for name, mask in masks.items()}
    )
    assert main(_imp(runs)) == 0
    assert (
        f"{level_2.masks}: keeps weights that the level before pruned (100.0% kept, 80.0% "
        f"before): pruning only removes; discarded, computing them again"
    ) in capsys.readouterr().err
    masks = files.read_tensors(level_2.masks)
    assert all(torch.equal(masks[name], original[name]) for name in original)


def test_nan_initial_weights_are_made_again_from_the_seed(run, capsys):
    runs, tampered_run = run
    original = files.read_tensors(tampered_run.init)
    _rewrite(tampered_run.init, _nan_weight)
    assert main(_imp(runs)) == 0
    err = capsys.readouterr().err
    assert (
        f"{tampered_run.init}: 'hidden.1.weight' holds NaN or infinite values; discarded, "
        f"made again from model_seed"
    ) in err
    restored = files.read_tensors(tampered_run.init)
    assert all(torch.equal(restored[name], original[name]) for name in original)


def test_a_report_that_is_not_whole_is_written_again_and_leftovers_removed(run, capsys):
    runs, tampered_run = run
    report = tampered_run.report_directory
    (report / "summary.csv").write_bytes(b"")  # killed while writing, by older code
    leftover = report / ".report.md.1234.abcd1234.tmp"
    leftover.write_bytes(b"# Lottery-")
    assert main([*IMP[:-1], "--runs-dir", str(runs)]) == 0
    assert (
        f"the report is not whole ({report / 'summary.csv'} is not a whole report file); "
        f"writing it again"
    ) in capsys.readouterr().err
    assert (report / "summary.csv").read_text().startswith("configuration,branch,level")
    assert not leftover.exists()


# --- export and report refuse what makes no sense --------------------------------------------


@pytest.mark.parametrize(
    "level, tamper",
    [
        (1, _wrong_shape_masks),
        (2, _nan_trained_weights),
        (1, _weights_where_pruned),
        (2, _another_levels_masks),
        (0, _metrics_that_are_not_json),
    ],
)
def test_export_refuses_a_level_with_a_file_that_makes_no_sense(
    run, capsys, tmp_path, level, tamper
):
    _, tampered_run = run
    path, problem = tamper(tampered_run)
    output = tmp_path / "ticket.safetensors"
    assert (
        main(
            ["export", str(tampered_run.directory), "--level", str(level), "--output", str(output)]
        )
        == 2
    )
    line = _error_line(capsys)
    assert line.startswith(f"{path}: ") and problem in line
    assert not output.exists()


def test_export_names_a_metrics_json_without_the_start_iteration(run, capsys):
    _, tampered_run = run
    metrics = tampered_run.level("main", 1).metrics
    _edit_metrics(metrics, lambda values: values.pop("start_iteration"))
    assert main(["export", str(tampered_run.directory), "--level", "1"]) == 2
    assert _error_line(capsys).startswith(f"{metrics}: has start_iteration None; expected a count")


def test_export_of_a_level_with_a_file_missing_names_it(run, capsys):
    _, tampered_run = run
    files.remove_artifact(tampered_run.level("main", 1).trained)
    assert main(["export", str(tampered_run.directory), "--level", "1"]) == 2
    assert _error_line(capsys) == (
        f"main level 1 of {tampered_run.directory} is not whole: trained.safetensors missing or "
        f"not matching its .sha256; run the run's command again to redo the level"
    )


def test_report_names_a_metrics_json_without_a_reported_number(run, capsys, tmp_path):
    _, tampered_run = run
    metrics = tampered_run.level("reinit", 2).metrics
    _edit_metrics(metrics, lambda values: values.pop("final_test_accuracy"))
    assert main(["report", str(tampered_run.directory), "--output", str(tmp_path / "r")]) == 2
    assert _error_line(capsys).startswith(f"{metrics}: lacks the number(s) final_test_accuracy")
    assert not (tmp_path / "r").exists()


def test_report_removes_what_a_killed_report_left(run, capsys):
    _, tampered_run = run
    leftover = tampered_run.report_directory / ".accuracy.png.99.deadbeef.tmp"
    leftover.write_bytes(b"\x89PNG")
    assert main(["report", str(tampered_run.directory)]) == 0
    assert not leftover.exists()


def test_train_refuses_a_masks_file_that_would_run_code(tmp_path, capsys):
    class RunsCode:
        def __reduce__(self):
            return print, ("this must never run",)

    crafted = tmp_path / "masks.pt"
    torch.save({"hidden.1.weight": RunsCode()}, crafted)
    assert (
        main(["train", "--masks", str(crafted), "--runs-dir", str(tmp_path / "runs"), "--quiet"])
        == 2
    )
    line = _error_line(capsys)
    assert line.startswith(
        f"cannot read {str(crafted)!r}: expected a torch.save'd dict of "
        f"name -> tensor, but it is not a file this tool wrote, or it is "
        f"damaged ("
    )
    assert "GLOBAL print was not an allowed global" in line and "weights_only" not in line
    assert line.endswith("write it again with save_tensors or Masks.save")
    assert not (tmp_path / "runs").exists()
