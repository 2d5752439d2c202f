"""Pruning at initialisation and N:M masks through `sparse-tickets imp`, end to end."""

import pytest
import torch

from sparse_tickets import files
from sparse_tickets.cli import main
from sparse_tickets.lottery.runs import Run
from sparse_tickets.pruning import Masks, satisfies
from sparse_tickets.pruning.nm import relaxed_n
from tests.cli.conftest import SHORT

ONE_SHOT = [*SHORT, "--controls", "none", "--no-report"]


def _run(runs) -> Run:
    (directory,) = runs.iterdir()
    return Run.open(directory)


@pytest.mark.parametrize(
    "strategy, extra",
    [
        ("snip", ["--score-batches", "2"]),
        ("grasp", []),
        ("synflow", ["--synflow-iterations", "5"]),
    ],
)
def test_pruning_at_initialisation_is_a_one_shot_run_from_the_initial_weights(
    tmp_path, strategy, extra
):
    assert (
        main(
            [
                "imp",
                *ONE_SHOT,
                "--strategy",
                strategy,
                "--one-shot-density",
                "0.1",
                "--scope",
                "global",
                *extra,
                "--runs-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    run = _run(tmp_path)
    level = run.level("main", 1)
    masks = Masks(files.read_tensors(level.masks))
    assert masks.density == pytest.approx(0.1, abs=1e-4)
    init = files.read_tensors(run.init)
    start = files.read_tensors(level.start)
    for name, mask in masks.items():  # trained from the initial weights, pruned at init
        assert torch.equal(start[name], init[name] * mask)
    assert level.read_metrics()["percent_remaining"] == pytest.approx(10.0, abs=0.01)
    assert not run.level("main", 2).directory.exists()


def test_pruning_at_initialisation_is_compared_with_imp_in_the_report(tmp_path, capsys):
    imp, snip = tmp_path / "imp", tmp_path / "snip"
    assert main(["imp", *ONE_SHOT, "--runs-dir", str(imp)]) == 0
    assert (
        main(
            [
                "imp",
                *ONE_SHOT,
                "--strategy",
                "snip",
                "--one-shot-density",
                "0.64",
                "--runs-dir",
                str(snip),
            ]
        )
        == 0
    )
    output = tmp_path / "report"
    assert (
        main(
            ["report", str(_run(imp).directory), str(_run(snip).directory), "--output", str(output)]
        )
        == 0
    )
    assert (output / "one_shot.png").is_file()
    report = (output / "report.md").read_text()
    assert "## One-shot pruning against IMP at equal density" in report
    assert "| snip |" in report


def test_imp_with_n_m_masks_tightens_level_by_level(tmp_path):
    assert (
        main(
            [
                "imp",
                *ONE_SHOT,
                "--levels",
                "3",
                "--fc-fraction",
                "0.3",
                "--nm",
                "2:4",
                "--controls",
                "random_pruning",
                "--runs-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    run = _run(tmp_path)
    for level in (1, 2, 3):
        for branch in ("main", "random_pruning"):
            masks = Masks(files.read_tensors(run.level(branch, level).masks))
            for row in masks.density_rows():
                assert satisfies(masks[row.name], (relaxed_n((2, 4), row.density), 4)), (
                    branch,
                    level,
                    row.name,
                )
    last = Masks(files.read_tensors(run.level("main", 3).masks))
    assert satisfies(last["hidden.1.weight"], (2, 4))  # 0.7^3 = 34%: 2:4 reached


def test_a_one_shot_two_four_run_is_exactly_two_of_every_four(tmp_path):
    assert (
        main(
            [
                "imp",
                *ONE_SHOT,
                "--one-shot-density",
                "0.5",
                "--nm",
                "2:4",
                "--output-fraction",
                "0",
                "--runs-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    masks = Masks(files.read_tensors(_run(tmp_path).level("main", 1).masks))
    for name in ("hidden.1.weight", "hidden.3.weight"):
        groups = masks[name].reshape(masks[name].shape[0], -1, 4).sum(-1)
        assert bool((groups == 2).all()), name


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--strategy", "snip"], "prunes at initialisation, once; expected one_shot_density"),
        (
            ["--strategy", "grasp", "--one-shot-density", "0.1", "--lr-rewind"],
            "expected rewind init or iteration",
        ),
        (["--nm", "2:4:8"], "nm: "),
        (["--nm", "5:4"], "nm: "),
        (["--score-batches", "0"], "score_batches is 0"),
        (["--instability-levels", "9"], "instability_levels names [9]"),
        (["--instability-points", "1"], "instability_points is 1"),
    ],
)
def test_bad_values_exit_2_with_one_line(tmp_path, capsys, arguments, message):
    assert main(["imp", *ONE_SHOT, *arguments, "--runs-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
