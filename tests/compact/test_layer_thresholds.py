"""auto's per-layer thresholds: measured on the layer's own shape and training batch, once per
shape, cached in memory and beside the build; the layer's mode follows them."""

import pytest
import torch

import sparse_tickets as st
from sparse_tickets.compact import calibration, layer_thresholds, thresholds
from sparse_tickets.compact.calibration import LayerSpec
from sparse_tickets.ops.native import extension


class LayerMeasurements:
    """A stand-in measurement that records the layers it is asked about."""

    def __init__(self, answer):
        self.answer, self.specs = answer, []

    def __call__(self, spec, device_type, dtype):
        self.specs.append(spec)
        return self.answer


@pytest.fixture
def calibrating(monkeypatch, tmp_path):
    """A fresh process's view with calibration on and the build directory in tmp_path."""
    extension.load(extension.CPU)  # auto needs the compiled backend: fails, never skips
    monkeypatch.setattr(layer_thresholds, "_known", {})
    monkeypatch.setattr(thresholds, "cache_directory", lambda device_type: tmp_path)
    monkeypatch.setenv(thresholds.CALIBRATION_ENV_VAR, "auto")
    monkeypatch.delenv("SPARSE_TICKETS_COMPACT_BELOW", raising=False)
    return tmp_path


def _trained_once(layer, x):
    layer.train()
    layer(x)
    return layer


def test_a_layer_seen_training_runs_by_its_own_threshold(calibrating, monkeypatch):
    measure = LayerMeasurements(0.3)
    monkeypatch.setattr(calibration, "measure_layer_threshold", measure)
    layer = _trained_once(st.MaskedLinear(50, 40), torch.randn(7, 3, 50))
    layer.set_mode("auto")
    mask = torch.zeros(40, 50, dtype=torch.bool)
    mask.view(-1)[:500] = True  # 25%
    layer.set_mask(mask)
    assert layer.mode == "compact"
    mask.view(-1)[:1000] = True  # 50%: above its threshold
    with torch.no_grad():
        layer.set_mode("dense")
        layer.set_mask(torch.ones(40, 50, dtype=torch.bool))
        layer.set_mask(mask)
        layer.set_mode("auto")
    assert layer.mode == "dense"
    # Measured once, on the layer's class, geometry and 2-D training input.
    assert [spec.key for spec in measure.specs] == [
        "linear(in_features=50, out_features=40, bias=True) input [21, 50]"
    ]


def test_the_measurement_is_cached_beside_the_build_and_read_by_the_next_process(
    calibrating, monkeypatch, capsys
):
    measure = LayerMeasurements(0.2)
    monkeypatch.setattr(calibration, "measure_layer_threshold", measure)
    spec = LayerSpec("conv2d", (("in_channels", 3), ("out_channels", 4)), (2, 3, 5, 5))
    assert layer_thresholds.layer_threshold(spec, "cpu", torch.float32) == 0.2
    assert layer_thresholds.layer_threshold(spec, "cpu", torch.float32) == 0.2
    assert len(measure.specs) == 1
    assert "measuring where compact mode beats dense mode for conv2d" in capsys.readouterr().err
    files = list(calibrating.glob("compact-layer-thresholds-cpu-float32-*threads.json"))
    assert len(files) == 1
    layer_thresholds._known.clear()  # a new process reads the file
    assert layer_thresholds.layer_threshold(spec, "cpu", torch.float32) == 0.2
    assert len(measure.specs) == 1
    files[0].write_text("{not json")  # a damaged cache is measured again, never trusted
    layer_thresholds._known.clear()
    assert layer_thresholds.layer_threshold(spec, "cpu", torch.float32) == 0.2
    assert len(measure.specs) == 2


def test_without_calibration_or_a_training_input_the_kind_wide_rule_applies(
    calibrating, monkeypatch
):
    measure = LayerMeasurements(1.0)
    monkeypatch.setattr(calibration, "measure_layer_threshold", measure)
    layer = st.MaskedLinear(20, 10)  # no forward seen yet
    layer.set_mode("auto")
    layer.set_mask(torch.rand(10, 20) < 0.5)
    assert measure.specs == []
    monkeypatch.setenv(thresholds.CALIBRATION_ENV_VAR, "off")
    _trained_once(layer, torch.randn(4, 20))
    assert (
        layer_thresholds.layer_threshold(layer.calibration_spec((4, 20)), "cpu", torch.float32)
        is None
    )
    assert measure.specs == []


def test_a_failed_measurement_falls_back_and_says_so(calibrating, monkeypatch, capsys):
    def broken(spec, device_type, dtype):
        raise RuntimeError("out of luck")

    monkeypatch.setattr(calibration, "measure_layer_threshold", broken)
    spec = LayerSpec("linear", (("in_features", 3), ("out_features", 2)), (1, 3))
    assert layer_thresholds.layer_threshold(spec, "cpu", torch.float32) is None
    assert "failed (RuntimeError: out of luck); using the kind-wide threshold" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "spec",
    [
        LayerSpec("linear", (("in_features", 13), ("out_features", 7), ("bias", True)), (5, 13)),
        LayerSpec(
            "conv2d",
            (
                ("in_channels", 3),
                ("out_channels", 5),
                ("kernel_size", (3, 3)),
                ("stride", (2, 2)),
                ("padding", (1, 1)),
                ("dilation", (1, 1)),
                ("groups", 1),
                ("bias", False),
                ("padding_mode", "zeros"),
            ),
            (3, 3, 9, 11),
        ),
    ],
    ids=["linear", "conv2d"],
)
def test_the_real_measurement_scans_the_layer_and_answers_a_scanned_density(spec, calibrating):
    threshold = calibration.measure_layer_threshold(
        spec, "cpu", torch.float32, pairs=1, budget_s=0.5
    )
    assert 0.0 <= threshold <= 1.0
    scanned = (0.0, *calibration.LAYER_DENSITIES)
    # A scanned density, or one refined between two neighbours of the scan.
    assert threshold in scanned or any(a < threshold < b for a, b in zip(scanned, scanned[1:]))


def test_the_scan_is_refined_between_the_last_win_and_the_first_loss(monkeypatch):
    # Compact "wins" below 0.6 only: the scan wins at 0.5, loses at 0.7, and two halvings
    # find 0.55 (a win at 0.6 is refused: 0.6 is not below 0.6).
    measured = []

    def fake_times(steps, repeats, device):
        density = steps["dense"]
        measured.append(density)
        faster = 2.0 if density < 0.6 else 0.5
        return {"dense": [faster], "compact": [1.0]}

    monkeypatch.setattr(
        calibration, "layer_training_step", lambda spec, density, mode, *args: density
    )
    monkeypatch.setattr(calibration, "interleaved_times", fake_times)
    spec = LayerSpec("linear", (("in_features", 3), ("out_features", 2)), (1, 3))
    assert calibration.measure_layer_threshold(spec, budget_s=60) == 0.55
    assert measured == [0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.6, 0.55]
