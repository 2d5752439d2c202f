"""How far two correct training runs that sum in different orders may drift apart.

Two runs of the same training that differ only in the order of their floating-point sums (DDP
against one process, the compact kernels against dense torch) start a few float32 ulps apart
(~1e-7, relative) at the first step; training carries and amplifies that, at a rate that depends
on the CPU's kernels (vector width, FMA). Seen on LeNet with Adam: 7e-4 on a validation loss
after 40 steps on an AVX2 CPU, less on AVX-512. So the comparison is

- exact to rounding where no step has been taken (the evaluation at iteration 0, densities,
  counts), and exact for masks and other non-float values;
- for a loss, a relative tolerance growing with the steps taken: LOSS_DRIFT_PER_STEP per step
  (4e-3 after 40, five times the worst seen);
- for an accuracy or an error (fractions of examples), the few examples such a small change of
  the logits can flip: FLIPPED_EXAMPLES of the 500 validation digits (the smaller set);
- for the early-stopping iteration, the same, except where two evaluations' validation losses
  tie within the drift;
- for weights: Adam divides by the root of the second moment, so on a weight whose gradients
  are all near zero (the border pixels of the digits) rounding decides the direction of each
  step, and such a weight may move by up to about lr per step differently. Every other weight
  agrees to WEIGHT_RTOL/WEIGHT_ATOL; those few (under 1% seen) to the steps' bound.
"""

import math

import torch

ROUNDING = 1e-6
LOSS_DRIFT_PER_STEP = 1e-4
FLIPPED_EXAMPLES = 2 / 500
WEIGHT_RTOL, WEIGHT_ATOL = 1e-3, 1e-4
ROUNDING_DOMINATED_FRACTION = 0.02


def tolerance(key: str, steps: int) -> dict:
    """``math.isclose`` arguments for the number named ``key`` after ``steps`` steps."""
    if steps == 0:
        return dict(rel_tol=ROUNDING, abs_tol=ROUNDING)
    if "accuracy" in key or "error" in key or "barrier" in key:  # fractions of examples
        return dict(rel_tol=0.0, abs_tol=FLIPPED_EXAMPLES + ROUNDING)
    return dict(rel_tol=LOSS_DRIFT_PER_STEP * steps, abs_tol=ROUNDING)


def assert_close(got, expected, path: str, steps: int) -> None:
    """Equal structure; numbers equal within the drift allowed after ``steps`` steps (a dict
    with an integer ``iteration`` sets the steps for what it holds)."""
    if isinstance(expected, dict):
        assert got.keys() == expected.keys(), path
        if isinstance(expected.get("iteration"), int):
            steps = expected["iteration"]
        for key in expected:
            assert_close(got[key], expected[key], f"{path}.{key}", steps)
    elif isinstance(expected, list):
        assert len(got) == len(expected), path
        for index, (g, e) in enumerate(zip(got, expected)):
            assert_close(g, e, f"{path}[{index}]", steps)
    elif isinstance(expected, float):
        key = path.rsplit(".", 1)[-1]
        assert math.isclose(got, expected, **tolerance(key, steps)), (path, got, expected)
    else:
        assert got == expected, (path, got, expected)


def assert_same_training(got: dict, expected: dict, path: str, steps: int) -> None:
    """The metrics of one level (``train.summarize``'s and the level's own fields)."""
    got, expected = dict(got), dict(expected)
    summary = [key for key in expected if key.startswith("early_stop_")]
    got_summary = {key: got.pop(key) for key in summary}
    expected_summary = {key: expected.pop(key) for key in summary}
    assert_close(got, expected, path, steps)
    rows = {row["iteration"]: row for row in expected.get("evaluations", [])}
    got_stop = got_summary.get("early_stop_iteration")
    expected_stop = expected_summary.get("early_stop_iteration")
    if got_stop == expected_stop:
        assert_close(got_summary, expected_summary, path, steps=expected_stop or 0)
    else:  # a near tie: the other run's pick is within the drift of this one's minimum
        assert math.isclose(
            rows[got_stop]["val_loss"],
            rows[expected_stop]["val_loss"],
            **tolerance("val_loss", steps),
        ), (path, got_stop, expected_stop)


def assert_weights_close(
    got: torch.Tensor, expected: torch.Tensor, where: str, *, lr: float, steps: int
) -> None:
    if not expected.is_floating_point():  # masks, counters: exact
        assert torch.equal(got, expected), where
        return
    difference = (got - expected).abs()
    loose = difference > WEIGHT_ATOL + WEIGHT_RTOL * expected.abs()
    assert loose.float().mean().item() <= ROUNDING_DOMINATED_FRACTION, (
        where,
        f"{int(loose.sum())} of {loose.numel()} weights differ beyond rounding",
    )
    # Both runs, every step, at most about lr each.
    assert difference.max().item() <= 2 * lr * steps, (where, difference.max().item())
