"""The short calibration behind "auto": real compact and dense training steps, on tiny shapes."""

import pytest
import torch

from sparse_tickets.compact import calibration
from sparse_tickets.ops.native import extension

TINY = {"linear": ((4, 12, 8), (3, 5, 7)), "conv2d": ((2, 3, 4, 5),)}


@pytest.fixture(autouse=True)
def _compiled_cpu_backend():
    extension.load(extension.CPU)  # raises, naming why, when it cannot be built here


def _rows_of(result, kind):
    return [row for row in result["rows"] if row["kind"] == kind]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_calibration_measures_both_kinds_up_to_the_first_loss(dtype):
    result = calibration.measure_thresholds(
        dtype=dtype, shapes=TINY, densities=(1.0, 0.25), pairs=2
    )
    assert set(result["thresholds"]) == set(calibration.KINDS)
    assert result["seconds"] > 0
    for kind in calibration.KINDS:
        rows = _rows_of(result, kind)
        densities = sorted({row["density"] for row in rows})
        assert [row["density"] for row in rows] == [
            d for d in densities for _ in TINY[kind]
        ]  # lowest first
        assert [tuple(row["shape"]) for row in rows] == list(TINY[kind]) * len(densities)
        assert all(
            row["dense_s"] > 0 and row["compact_s"] > 0 and row["speedup"] > 0 for row in rows
        )
        for density in densities[:-1]:  # every density but the last measured was won
            assert all(calibration.compact_wins(row) for row in rows if row["density"] == density)
        assert result["thresholds"][kind] == calibration.threshold_from(rows)
        assert result["thresholds"][kind] in (0.0, *densities)


def test_a_kind_stops_at_its_first_losing_density():
    result = calibration.measure_thresholds(
        shapes=TINY, densities=(0.25, 0.5, 1.0), pairs=1, margin=float("inf")
    )
    assert result["thresholds"] == {"linear": 0.0, "conv2d": 0.0}
    assert [row["density"] for row in result["rows"]] == [0.25] * 3


def test_a_kind_that_always_wins_is_measured_at_every_density_within_its_budget():
    result = calibration.measure_thresholds(shapes=TINY, densities=(0.25, 1.0), pairs=1, margin=0.0)
    assert result["thresholds"] == {"linear": 1.0, "conv2d": 1.0}
    assert len(result["rows"]) == 2 * 3
    spent = calibration.measure_thresholds(
        shapes=TINY, densities=(0.25, 0.5, 1.0), pairs=1, margin=0.0, budget_s=0.0
    )
    # The budget counts from the end of the first density: one more, then the rest stays dense.
    assert spent["thresholds"] == {"linear": 0.5, "conv2d": 0.5}
    assert len(spent["rows"]) == 2 * 3


def test_the_threshold_is_the_highest_density_won_on_every_shape_with_the_margin():
    def row(density, speedup):
        return {"density": density, "speedup": speedup}

    rows = [
        row(0.02, 3.0),
        row(0.02, 1.2),
        row(0.05, 2.0),
        row(0.05, 1.1),
        row(0.1, 1.5),
        row(0.1, 1.05),
        row(0.2, 1.5),
        row(0.2, 1.5),
    ]
    assert calibration.threshold_from(rows) == 0.05  # 1.05x at 10% is within the margin
    assert calibration.threshold_from(rows, margin=1.0) == 0.2
    assert calibration.threshold_from([row(0.02, 0.9)]) == 0.0
    assert calibration.threshold_from([]) == 0.0


def test_measuring_leaves_the_callers_random_streams_and_grad_mode_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with torch.inference_mode():
        calibration.compare("linear", (4, 12, 8), 0.5, pairs=1)
        assert torch.is_inference_mode_enabled()
    with torch.no_grad():
        calibration.compare("conv2d", (2, 3, 4, 5), 0.5, pairs=1)
        assert not torch.is_grad_enabled()
    assert torch.equal(torch.rand(3), expected)


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="layer kind 'conv3d' is not one of linear, conv2d"):
        calibration.training_step("conv3d", (1, 2, 3), 0.5, "dense")


def test_measuring_under_a_default_mode_of_auto_never_asks_for_the_thresholds(monkeypatch):
    # The command line runs with the default mode "auto": the layers the measurement builds
    # must not ask for the thresholds being measured (the first ask would wait forever on the
    # lock of the measurement that is running).
    from sparse_tickets.compact import thresholds
    from sparse_tickets.compact.choice import default_mode_set_to

    def asked(*args, **kwargs):
        raise AssertionError("the measurement asked for the thresholds it measures")

    monkeypatch.setattr(thresholds, "machine_thresholds", asked)
    monkeypatch.setattr(thresholds, "_obtain", asked)
    with default_mode_set_to("auto"):
        calibration.compare("linear", (4, 12, 8), 0.5, pairs=1)
        calibration.compare("conv2d", (2, 3, 4, 5), 0.5, pairs=1)
