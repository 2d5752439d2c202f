"""Every mistake on the command line: one line on stderr, exit status 2, no traceback."""

import pytest
import torch

from sparse_tickets.cli import main

CASES = [
    (["imp", "--bogus"], "unrecognized arguments: --bogus"),
    (["imp", "--levels", "x"], "argument --levels: invalid int value: 'x'"),
    (["imp", "--model", "alexnet"], "unknown model 'alexnet'; expected one of lenet_300_100"),
    (["imp", "--dataset", "imagenet"], "unknown dataset 'imagenet'; expected one of cifar10"),
    (["imp", "--preset", "bert/glue"], "unknown preset 'bert/glue'"),
    (["imp", "--dataset", "cifar10"], "pass --data-dir DIR (nothing is downloaded)"),
    (["imp", "--dataset", "mnist", "--data-dir", "{missing}"], "does not exist"),
    (["imp", "--model", "vgg19", "--dataset", "mnist5k"],
     "vgg19 cannot take input_shape (1, 28, 28)"),
    (["imp", "--lr", "-1"], "lr is -1.0; expected a positive learning rate"),
    (["imp", "--fc-fraction", "1.5"], "fc_fraction is 1.5; expected a fraction in [0, 1)"),
    (["imp", "--iterations", "12x"], "iterations is '12x'; expected a count of iterations"),
    (["imp", "--controls", "shuffle"], "unknown control shuffle"),
    (["imp", "--control-levels", "0"], "control_levels names [0]; expected pruned levels 1..10"),
    (["imp", "--rewind", "far"], "rewind is 'far'; expected one of init, iteration, lr"),
    (["imp", "--rewind-iteration", "5000"], "rewind_iteration is 5000 iterations; expected "
                                            "fewer than the 1000 of training"),
    (["imp", "--model", "conv2", "--dataset", "synthetic", "--scope", "global",
      "--conv-fraction", "0.2", "--fc-fraction", "0.1"], "global scope ranks conv and fc"),
    (["imp", "--strategy", "largest"], "strategy is 'largest'; expected one of magnitude"),
    (["imp", "--lr-rewind", "--rewind", "iteration"], "--lr-rewind and --rewind iteration"),
    (["imp", "--model", "lenet_300_100", "--dropout", "0.5"], "has no option 'dropout'"),
    (["imp", "--runs-dir", "{file}"], "a file is in the way"),
    (["imp", "--checkpoint-every", "0"], "expected a positive integer, got 0"),
    (["train", "--masks", "{missing}"], "masks file"),
    (["report", "{missing}"], "does not exist"),
    (["export", "{missing}", "--level", "1"], "does not exist"),
    (["export", "{missing}"], "the following arguments are required: --level"),
    (["export", "{missing}", "--level", "-1"], "expected a level >= 0, got -1"),
    (["export", "{missing}", "--level", "1", "--branch", "../x"], "invalid choice: '../x'"),
]


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
CASES.append(pytest.param(["imp", "--device", "cuda:0"], "torch sees no CUDA GPU", marks=NO_CUDA))


@pytest.mark.parametrize("arguments,message", CASES, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_mistakes_exit_2_with_one_line(arguments, message, tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    arguments = [a.replace("{missing}", str(tmp_path / "missing"))
                 .replace("{file}", str(tmp_path / "file")) for a in arguments]
    if arguments[0] in ("imp", "train") and "--runs-dir" not in arguments:
        arguments += ["--runs-dir", str(tmp_path / "runs")]
    if arguments[0] in ("imp", "train"):
        arguments += ["--quiet", "--no-report"]
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert message in error
    assert "\n" not in error and "Traceback" not in error
    assert not (tmp_path / "runs").exists()  # nothing made for a run that could not start


def test_output_paths_that_cannot_be_written(short_run, tmp_path, capsys):
    _, run_directory = short_run
    (tmp_path / "file").write_text("x")
    assert main(["report", str(run_directory), "--output", str(tmp_path / "file")]) == 2
    assert "is a file; expected a directory" in capsys.readouterr().err
    assert main(["export", str(run_directory), "--level", "1", "--output", str(tmp_path)]) == 2
    assert "is a directory; expected a file path" in capsys.readouterr().err
