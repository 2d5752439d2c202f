"""The mode a masked layer runs in: requested per layer, by default, or chosen by density."""

import pytest
import torch

from sparse_tickets import MaskedConv2d, MaskedLinear
from sparse_tickets.compact import choice, thresholds
from sparse_tickets.ops.native import extension


@pytest.fixture(autouse=True)
def _no_global_default(monkeypatch):
    monkeypatch.delenv(choice.MODE_ENV_VAR, raising=False)
    monkeypatch.delenv(choice.THRESHOLD_ENV_VAR, raising=False)
    yield
    choice.set_default_mode(None)


@pytest.fixture
def machine_thresholds(monkeypatch):
    """Pins this machine's thresholds (what the calibration would have measured) and records
    what each decision asked for."""
    asked, pinned = [], {}

    def pinned_thresholds(device_type, dtype=torch.float32):
        asked.append((device_type, dtype))
        return pinned

    monkeypatch.setattr(thresholds, "machine_thresholds", pinned_thresholds)
    return pinned, asked


def _layer_at(density, mode="auto", dtype=torch.float32):
    layer = MaskedLinear(40, 50, dtype=dtype)
    layer.set_mode(mode)
    mask = torch.zeros(50 * 40, dtype=torch.bool)
    mask[torch.randperm(mask.numel())[: round(density * mask.numel())]] = True
    layer.set_mask(mask.reshape(50, 40))
    return layer


def _compiled_cpu_backend():
    extension.load(extension.CPU)  # raises, naming why, when it cannot be built here


def test_a_requested_mode_is_obeyed_at_any_density():
    layer = _layer_at(0.9)
    layer.set_mode("compact")
    assert layer.mode == "compact"
    layer.set_mode("dense")
    assert layer.mode == "dense"
    layer.set_mask(torch.zeros(50, 40, dtype=torch.bool))  # stays dense: it was asked for
    assert layer.mode == "dense"


def test_auto_runs_compact_at_or_below_the_threshold_only(monkeypatch):
    _compiled_cpu_backend()
    assert 0.0 <= choice.threshold("cpu") <= 1.0
    monkeypatch.setenv(choice.THRESHOLD_ENV_VAR, "0.3")
    assert _layer_at(0.3).mode == "compact"
    assert _layer_at(0.1).mode == "compact"
    assert _layer_at(0.5).mode == "dense"


def test_the_threshold_can_be_overridden(monkeypatch):
    _compiled_cpu_backend()
    monkeypatch.setenv(choice.THRESHOLD_ENV_VAR, "0.95")
    assert _layer_at(0.9).mode == "compact"
    monkeypatch.setenv(choice.THRESHOLD_ENV_VAR, "0")
    assert _layer_at(0.01).mode == "dense"
    monkeypatch.setenv(choice.THRESHOLD_ENV_VAR, "2")
    with pytest.raises(ValueError, match=r"SPARSE_TICKETS_COMPACT_BELOW='2'; expected a density"):
        _layer_at(0.01)


def test_auto_stays_dense_without_a_compiled_backend(monkeypatch):
    monkeypatch.setenv(extension.CPU.env_var, "skip")
    assert _layer_at(0.01).mode == "dense"


def test_the_library_default_is_dense_at_any_density():
    assert choice.default_mode() == "dense"
    assert _layer_at(0.01, mode=None).mode == "dense"


def test_the_global_default_applies_to_layers_without_a_request(monkeypatch):
    choice.set_default_mode("compact")
    layer = _layer_at(0.9, mode=None)
    assert layer.mode == "compact"
    layer.set_mode("dense")  # the layer's own request wins
    assert layer.mode == "dense"
    choice.set_default_mode(None)
    monkeypatch.setenv(choice.MODE_ENV_VAR, "compact")
    assert _layer_at(0.9, mode=None).mode == "compact"
    monkeypatch.setenv(choice.MODE_ENV_VAR, "sparse")
    with pytest.raises(ValueError, match=r"SPARSE_TICKETS_MODE='sparse'; expected one of auto"):
        _layer_at(0.9, mode=None)


def test_bad_modes_are_refused():
    with pytest.raises(ValueError, match="mode 'fast' is not one of auto, dense, compact"):
        MaskedLinear(3, 2).set_mode("fast")


def test_a_grouped_convolution_runs_compact_on_the_cpu():
    grouped = MaskedConv2d(4, 6, 3, groups=2, padding=1)
    grouped.set_mask(torch.rand(grouped.mask.shape) < 0.5)
    x = torch.randn(3, 4, 5, 5)
    dense = grouped(x)
    grouped.set_mode("compact")
    assert grouped.mode == "compact"
    assert torch.allclose(grouped(x), dense, atol=1e-5)


@pytest.mark.cuda
def test_a_grouped_convolution_is_refused_compact_off_the_cpu():
    grouped = MaskedConv2d(4, 4, 3, groups=2, device="cuda")
    with pytest.raises(
        ValueError,
        match=r"grouped convolution \(groups=2\) has a compact form "
        r"on the CPU only",
    ):
        grouped.set_mode("compact")
    grouped.set_mode("auto")
    grouped.set_mask(torch.zeros_like(grouped.mask))
    assert grouped.mode == "dense"


def test_auto_uses_the_threshold_of_the_layer_kind(machine_thresholds):
    _compiled_cpu_backend()
    pinned, _ = machine_thresholds
    pinned.update(linear=0.5, conv2d=0.1)
    assert _layer_at(0.4).mode == "compact"
    conv = MaskedConv2d(8, 8, 3)
    conv.set_mode("auto")
    for density, mode in ((0.4, "dense"), (0.05, "compact")):
        conv.set_mask(torch.rand(conv.mask.shape) < density)
        assert conv.mode == mode, density


def test_auto_asks_for_the_thresholds_of_the_layers_device_and_dtype(machine_thresholds):
    _compiled_cpu_backend()
    pinned, asked = machine_thresholds
    pinned.update(linear=0.5, conv2d=0.0)
    assert _layer_at(0.4, dtype=torch.float64).mode == "compact"
    assert _layer_at(0.6, dtype=torch.float64).mode == "dense"
    assert asked and set(asked) == {("cpu", torch.float64)}


def test_the_override_wins_over_this_machines_thresholds(monkeypatch, machine_thresholds):
    _compiled_cpu_backend()
    pinned, asked = machine_thresholds
    pinned.update(linear=0.0, conv2d=0.0)
    monkeypatch.setenv(choice.THRESHOLD_ENV_VAR, "0.5")
    assert _layer_at(0.4).mode == "compact"
    assert asked == []  # nothing measured or read when the user has said


def test_dense_and_compact_requests_never_ask_for_thresholds(machine_thresholds):
    _, asked = machine_thresholds
    _layer_at(0.1, mode="dense")
    _layer_at(0.9, mode="compact")
    assert asked == []


def test_without_calibration_auto_follows_the_instruction_set_rule(monkeypatch):
    _compiled_cpu_backend()
    monkeypatch.setenv(thresholds.CALIBRATION_ENV_VAR, "off")
    rule = thresholds.derived("cpu")
    assert choice.threshold("cpu", "linear") == rule["linear"]
    assert choice.threshold("cpu", "conv2d") == rule["conv2d"] == 0.0
    assert _layer_at(rule["linear"] + 0.05).mode == "dense"
