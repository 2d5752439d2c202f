"""Values that parse but cannot be meant: each refused up front in one line with exit status 2,
no traceback, nothing made; and lengths written differently that name one run directory."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from sparse_tickets.cli import main
from tests.data.conftest import idx_bytes

HUGE = "99999999999999999999"  # past int64

CASES = [
    # Devices: training needs real storage, and torch has one CPU device.
    (
        ["imp", "--device", "meta"],
        "device meta holds no data, so nothing can train on it; expected cpu, cuda or cuda:N",
    ),
    (["imp", "--device", "cpu:1"], "device cpu:1: torch has one CPU device, cpu:0; expected"),
    (["imp", "--device", "mps"], "device mps is not supported; expected cpu, cuda or cuda:N"),
    (["imp", "--device", ""], "unknown device ''; expected cpu, cuda or cuda:N"),
    # Lengths: past the bound, in either unit; a warmup or milestones that do not fit.
    (
        ["imp", "--iterations", HUGE],
        f"iterations is '{HUGE}'; expected at most 1,000,000,000 iterations",
    ),
    (
        ["imp", "--iterations", "20000000ep"],
        "iterations is '20000000ep' (1160000000 iterations); expected at most 1,000,000,000",
    ),
    (["imp", "--rewind", "iteration", "--rewind-iteration", HUGE], "rewind_iteration is"),
    (["imp", "--iterations", "10EP"], "iterations is '10EP'; expected a count of iterations"),
    (["imp", "--iterations", " "], "iterations is ' '; expected a count of iterations"),
    (
        ["imp", "--warmup", "2000"],
        "warmup is '2000'; expected at most the 1000 iterations of training",
    ),
    (
        ["imp", "--warmup", "20ep"],
        "warmup is '20ep' (1160 iterations); expected at most the 1000 iterations",
    ),
    (
        ["imp", "--milestones", "500,2000"],
        "milestones '500,2000' has 2000; expected milestones "
        "after iteration 0 and before the end of training at "
        "1000",
    ),
    (["imp", "--milestones", "0,500"], "milestones '0,500' has 0; expected"),
    (["imp", "--milestones", "800,500"], "milestones '800,500' are not increasing"),
    (
        ["imp", "--milestones", "5ep,5ep"],
        "milestones '5ep,5ep' (290, 290 iterations) are not increasing",
    ),
    # Counts: zero, negative, past their bounds.
    (["imp", "--levels", HUGE], f"levels is {HUGE}; expected 0 to 1000"),
    (["imp", "--levels", "-1"], "levels is -1; expected 0 to 1000"),
    (["imp", "--eval-every", "0"], "eval_every is 0; expected 1 to 1,000,000,000 iterations"),
    (["imp", "--eval-every", HUGE], f"eval_every is {HUGE}; expected 1 to"),
    (["imp", "--batch-size", "-5"], "batch_size is -5; expected >= 1"),
    (["imp", "--train-size", HUGE], f"train_size is {HUGE}; mnist5k has 3500 training examples"),
    (
        ["imp", "--model", "conv2", "--dataset", "synthetic", "--train-size", HUGE],
        f"synthetic data of {HUGE} + 1000 + 1000 examples of shape (3, 32, 32) needs",
    ),
    (["imp", "--score-batches", HUGE], f"score_batches is {HUGE}; expected 1 to"),
    (
        ["imp", "--strategy", "snip", "--one-shot-density", "0.1", "--score-batches", "59"],
        "score_batches is 59; expected at most the 58 batches of one epoch",
    ),
    (["imp", "--synflow-iterations", HUGE], f"synflow_iterations is {HUGE}; expected 1 to"),
    (["imp", "--instability-points", HUGE], f"instability_points is {HUGE}; expected 2"),
    (["imp", "--control-levels", HUGE], f"control_levels names [{HUGE}]; expected pruned"),
    (
        ["instability", "{dir}", "--level", "0", "--points", "1001"],
        "argument --points: expected at most 1000, got 1001",
    ),
    # Floats that are not numbers, or out of range.
    (["imp", "--optimizer", "sgd", "--momentum", "nan"], "momentum is nan; expected a finite"),
    (
        ["imp", "--optimizer", "sgd", "--momentum", "1"],
        "momentum is 1.0; expected a momentum in [0, 1)",
    ),
    (["imp", "--gamma", "nan"], "gamma is nan; expected a finite number"),
    (["imp", "--weight-decay", "nan"], "weight_decay is nan; expected a finite number"),
    (["imp", "--one-shot-density", "nan"], "one_shot_density is nan; expected a finite"),
    (["imp", "--fc-fraction", "inf"], "fc_fraction is inf; expected a finite number"),
    # Options given for something the run does not have.
    (
        ["imp", "--conv-fraction", "0.2"],
        "--conv-fraction 0.2 given, but lenet_300_100 has no "
        "conv layer to prune; expected no --conv-fraction",
    ),
    (
        ["imp", "--model", "resnet20", "--dataset", "synthetic", "--fc-fraction", "0.2"],
        "--fc-fraction 0.2 given, but resnet20 has no hidden fc layer to prune",
    ),
    (
        ["imp", "--momentum", "0.9"],
        "--momentum 0.9 given, but optimizer adam takes no momentum; "
        "expected --optimizer sgd or no --momentum",
    ),
    (
        ["imp", "--nm", f"2:{HUGE}"],
        f"nm 2:{HUGE} groups {HUGE} weights, more than the longest "
        f"row of lenet_300_100 (784 weights); expected m at most 784",
    ),
    (["imp", "--nm", "2:785"], "nm 2:785 groups 785 weights, more than the longest row"),
    # Empty names and paths: an empty path would be the current directory.
    (["imp", "--runs-dir", ""], "argument --runs-dir: expected a directory, got ''"),
    (["imp", "--runs-dir", " "], "argument --runs-dir: expected a directory, got ' '"),
    (
        ["imp", "--dataset", "mnist", "--data-dir", ""],
        "argument --data-dir: expected a directory, got ''",
    ),
    (["train", "--masks", ""], "argument --masks: expected a masks file, got ''"),
    (["report", ""], "argument RUN_DIR: expected a run directory, got ''"),
    (["report", "{dir}", "--output", ""], "argument --output: expected a directory, got ''"),
    (["export", "", "--level", "0"], "argument RUN_DIR: expected a run directory, got ''"),
    (
        ["export", "{dir}", "--level", "0", "--output", ""],
        "argument --output: expected a file path, got ''",
    ),
    (["instability", "", "--level", "0"], "argument RUN_DIR: expected a run directory"),
    (["imp", "--model", ""], "unknown model ''; expected one of lenet_300_100"),
    (["imp", "--dataset", ""], "unknown dataset ''; expected one of cifar10"),
    (["imp", "--preset", ""], "unknown preset ''"),
    (
        ["imp", "--controls", ""],
        "controls is ''; expected reinit, random_pruning (comma-separated) or none",
    ),
    (["imp", "--controls", "none,reinit"], "controls is 'none,reinit'; expected none alone"),
    (["imp", "--strategy", ""], "strategy is ''; expected one of magnitude"),
    # An IDX header whose dimensions multiply to 2 * 2**64 + 1: an int64 product wraps to 1,
    # the size of the one byte that follows.
    (
        ["imp", "--dataset", "mnist", "--data-dir", "{mnist}"],
        "{mnist}/train-images-idx3-ubyte: header dimensions (7623851, 1119412321, 4323) (uint8, 3 "
        "dims) multiply to 36893488147419103233 elements, past 2**63 bytes",
    ),
]

if torch.cuda.is_available():
    past = f"cuda:{torch.cuda.device_count()}"
    CASES.append(
        pytest.param(
            ["imp", "--device", past],
            f"device {past} asked for, but torch sees {torch.cuda.device_count()} GPU(s)",
            marks=pytest.mark.cuda,
        )
    )
else:
    CASES.append(
        (["imp", "--device", "cuda:1"], "device cuda:1 asked for, but torch sees no CUDA GPU")
    )


def _write_mnist_with_overflowing_header(directory):
    directory.mkdir()
    dims = b"".join(d.to_bytes(4, "big") for d in (7623851, 1119412321, 4323))
    (directory / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + dims + b"\x07")
    (directory / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    (directory / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((4, 28, 28), np.uint8)))
    (directory / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, np.uint8)))


@pytest.mark.parametrize(
    "arguments,message",
    CASES,
    ids=lambda v: " ".join(map(repr, v)) if isinstance(v, list) else None,
)
def test_bad_inputs_exit_2_with_one_line(arguments, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty path must not reach the current directory either
    (tmp_path / "dir").mkdir()
    places = {"{dir}": tmp_path / "dir", "{mnist}": tmp_path / "mnist"}
    if "{mnist}" in arguments:
        _write_mnist_with_overflowing_header(places["{mnist}"])

    def placed(text):
        for name, path in places.items():
            text = text.replace(name, str(path))
        return text

    arguments, message = [placed(a) for a in arguments], placed(message)
    if arguments[0] in ("imp", "train") and "--runs-dir" not in arguments:
        arguments += ["--runs-dir", str(tmp_path / "runs")]
    if arguments[0] in ("imp", "train", "instability"):
        arguments += ["--quiet", "--no-report"]
    before = sorted(tmp_path.rglob("*"))
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert message in error
    assert "\n" not in error and "Traceback" not in error
    assert sorted(tmp_path.rglob("*")) == before  # nothing made for a run that could not start


def test_a_bad_input_in_a_process_of_its_own_exits_2_with_one_line(tmp_path):
    """The whole process, as a user's shell sees it: the meta device once got as far as
    training and failed there with a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "sparse_tickets", "imp", "--device", "meta", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "sparse-tickets: device meta holds no data, so nothing can train on "
        "it; expected cpu, cuda or cuda:N\n"
    )
    assert done.stdout == "" and not any(tmp_path.iterdir())


def test_cpu_0_is_the_cpu():
    from sparse_tickets.cli import _named_device

    assert _named_device("cpu:0") == torch.device("cpu")
    assert _named_device("cpu") == torch.device("cpu")


TINY = [
    "imp",
    "--train-size",
    "120",
    "--batch-size",
    "60",
    "--levels",
    "0",
    "--controls",
    "none",
    "--eval-every",
    "10",
    "--quiet",
    "--no-report",
]


def test_lengths_written_differently_name_one_run_directory(tmp_path, capsys):
    """10 epochs of 2 iterations, as a user might type them: one run, done once."""
    runs = tmp_path / "runs"
    spellings = ["10ep", "10 ep", " 10ep", "0010ep"]
    for index, iterations in enumerate(spellings):
        assert (
            main(
                [
                    *TINY,
                    "--iterations",
                    iterations,
                    "--milestones",
                    " 005ep ,",
                    "--warmup",
                    "0ep",
                    "--runs-dir",
                    str(runs),
                ]
            )
            == 0
        )
        done_before = "is already complete; nothing to do" in capsys.readouterr().err
        assert done_before == (index > 0)
    (directory,) = runs.iterdir()
    from sparse_tickets.lottery.runs import Run

    hp = Run.open(directory).hparams
    assert (hp.iterations, hp.milestones, hp.warmup) == ("10ep", "5ep", "0")
    assert directory.name == hp.run_name()
