"""Every mistake on the command line: one line on stderr, exit status 2, no traceback."""

import pytest
import torch

from sparse_tickets import models
from sparse_tickets.cli import main
from sparse_tickets.pruning import Masks

CASES = [
    (["imp", "--bogus"], "unrecognized arguments: --bogus"),
    (["imp", "--levels", "x"], "argument --levels: invalid int value: 'x'"),
    (["imp", "--model", "alexnet"], "unknown model 'alexnet'; expected one of lenet_300_100"),
    (["imp", "--dataset", "imagenet"], "unknown dataset 'imagenet'; expected one of cifar10"),
    (["imp", "--preset", "bert/glue"], "unknown preset 'bert/glue'"),
    (["imp", "--dataset", "cifar10"], "pass --data-dir DIR (nothing is downloaded)"),
    (["imp", "--dataset", "mnist", "--data-dir", "{missing}"], "does not exist"),
    (
        ["imp", "--model", "vgg19", "--dataset", "mnist5k"],
        "vgg19 cannot take input_shape (1, 28, 28)",
    ),
    (["imp", "--lr", "-1"], "lr is -1.0; expected a positive learning rate"),
    (["imp", "--fc-fraction", "1.5"], "fc_fraction is 1.5; expected a fraction in [0, 1)"),
    (["imp", "--iterations", "12x"], "iterations is '12x'; expected a count of iterations"),
    (["imp", "--controls", "shuffle"], "unknown control shuffle"),
    (["imp", "--control-levels", "0"], "control_levels names [0]; expected pruned levels 1..10"),
    (["imp", "--rewind", "far"], "rewind is 'far'; expected one of init, iteration, lr"),
    (
        ["imp", "--rewind-iteration", "5000"],
        "rewind_iteration is 5000 iterations; expected fewer than the 1000 of training",
    ),
    (
        [
            "imp",
            "--model",
            "conv2",
            "--dataset",
            "synthetic",
            "--scope",
            "global",
            "--conv-fraction",
            "0.2",
            "--fc-fraction",
            "0.1",
        ],
        "global scope ranks conv and fc",
    ),
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
    # Accepted once, then wrong or late: each refused before anything trains or is made.
    (["imp", "--iterations", "0"], "iterations is '0'; expected at least 1 iteration"),
    # Zero epochs are zero iterations, kept in the one spelling of a zero length.
    (["imp", "--iterations", "0ep"], "iterations is '0'; expected at least 1 iteration"),
    (
        ["imp", "--batch-size", "10000000"],
        "batch_size is 10000000; the training set has 3500 "
        "examples (mnist5k); expected a batch of at most 3500",
    ),
    (
        ["train", "--train-size", "100", "--batch-size", "101"],
        "the training set has 100 examples (mnist5k, train_size 100)",
    ),
    (["imp", "--data-dir", "{dir}"], "dataset mnist5k is embedded and reads no directory"),
    (
        ["imp", "--model", "conv2", "--dataset", "synthetic", "--data-dir", "{dir}"],
        "dataset synthetic is generated and reads no directory",
    ),
    (["imp", "--lr", "inf"], "lr is inf; expected a finite number"),
    (["imp", "--lr", "nan"], "lr is nan; expected a finite number"),
    (["imp", "--weight-decay", "inf"], "weight_decay is inf; expected a finite number"),
    (["imp", "--model-seed", "-1"], "model_seed is -1; expected an integer from 0 to 2**64 - 1"),
    (["imp", "--model-seed", str(2**70)], f"model_seed is {2**70}; expected an integer"),
    (["imp", "--data-seed", str(2**64)], "data_seed is 18446744073709551616; expected"),
    (["imp", "--control-seed", "-5"], "control_seed is -5; expected an integer from 0"),
    (["train", "--masks", "{all_false}"], "keeps no weight at all (every mask is all False)"),
    (["train", "--masks", "{dir}"], "masks file {dir} is a directory; expected a .safetensors"),
    (
        ["train", "--masks", "{wrong_shape}"],
        "masks['hidden.1.weight'] has shape (784, 300); "
        "expected the layer's weight shape (300, 784)",
    ),
    (
        ["train", "--model", "conv2", "--dataset", "synthetic", "--masks", "{lenet}"],
        "masks do not match the model's masked layers: missing 'features.0.weight'",
    ),
    (["report", "{file}"], "{file} is not a directory; expected a run directory"),
    (["export", "{file}", "--level", "0"], "{file} is not a directory; expected a run directory"),
    (["instability", "{file}", "--level", "0"], "{file} is not a directory; expected a run"),
    (
        ["imp", "--dataset", "mnist", "--data-dir", "{file}"],
        "mnist directory {file} is not a directory",
    ),
    (
        ["imp", "--dataset", "cifar10", "--data-dir", "{file}"],
        "cifar10 directory {file} is not a directory",
    ),
]


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
CASES.append(pytest.param(["imp", "--device", "cuda:0"], "torch sees no CUDA GPU", marks=NO_CUDA))


@pytest.mark.parametrize(
    "arguments,message", CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_mistakes_exit_2_with_one_line(arguments, message, tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "dir").mkdir()
    places = {
        "{missing}": tmp_path / "missing",
        "{file}": tmp_path / "file",
        "{dir}": tmp_path / "dir",
    }
    lenet = Masks.ones_like(models.create("lenet_300_100"))
    for name, masks in (
        ("{lenet}", lenet),
        ("{all_false}", Masks({n: ~m for n, m in lenet.items()})),
        (
            "{wrong_shape}",
            Masks({n: m.T if n == "hidden.1.weight" else m for n, m in lenet.items()}),
        ),
    ):
        if name in arguments:
            places[name] = tmp_path / f"{name.strip('{}')}.safetensors"
            masks.save(places[name])

    def placed(text):
        for name, path in places.items():
            text = text.replace(name, str(path))
        return text

    arguments, message = [placed(a) for a in arguments], placed(message)
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
