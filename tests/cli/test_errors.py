"""Every mistake on the command line: one line on stderr, exit status 2, no traceback."""

import pytest

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
    (["imp", "--device", "cuda:0"], "torch sees no CUDA GPU"),
    (["imp", "--checkpoint-every", "0"], "expected a positive integer, got 0"),
    (["train", "--masks", "{missing}"], "masks file"),
    (["report", "{missing}"], "does not exist"),
    (["export", "{missing}", "--level", "1"], "does not exist"),
    (["export", "{missing}"], "the following arguments are required: --level"),
]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("arguments,message", CASES, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_mistakes_exit_2_with_one_line(arguments, message, tmp_path, capsys):
    arguments = [a.replace("{missing}", str(tmp_path / "missing")) for a in arguments]
    if arguments[0] in ("imp", "train"):
        arguments += ["--runs-dir", str(tmp_path / "runs"), "--quiet", "--no-report"]
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert message in error
    assert "\n" not in error and "Traceback" not in error
