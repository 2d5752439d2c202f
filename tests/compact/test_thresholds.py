"""auto's thresholds: measured once per machine, build, torch and thread count, cached beside
the build; a corrupt or stale cache is measured again, never trusted."""

import json

import pytest
import torch

from sparse_tickets import files
from sparse_tickets.compact import calibration, thresholds
from sparse_tickets.ops.native import extension

TINY = {"linear": ((4, 12, 8),), "conv2d": ((2, 3, 4, 5),)}


def _key(threads=2):
    return {
        "build": "sparse_tickets_cpu_0123456789ab",
        "torch": torch.__version__,
        "threads": threads,
        "device": "cpu",
        "dtype": "float32",
        "method": thresholds.CALIBRATION_METHOD,
    }


class Measurements:
    """A stand-in measurement that counts its calls and answers what it is given."""

    def __init__(self, linear=0.2, conv2d=0.0):
        self.calls = 0
        self.answer = {"linear": linear, "conv2d": conv2d}

    def __call__(self):
        self.calls += 1
        return {"thresholds": dict(self.answer), "rows": [], "seconds": 0.0}


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "compact-thresholds-cpu-float32-2threads.json"


def test_the_first_call_measures_and_caches_and_the_next_ones_read(cache, capsys):
    measure = Measurements(linear=0.2)
    assert thresholds.cached_or_measured(cache, _key(), measure) == {"linear": 0.2, "conv2d": 0.0}
    announced = capsys.readouterr().err.strip().splitlines()
    assert len(announced) == 1
    assert "measuring where compact mode beats dense mode" in announced[0]
    assert str(cache) in announced[0]
    assert json.loads(cache.read_text())["key"] == _key()
    for _ in range(3):
        assert thresholds.cached_or_measured(cache, _key(), measure)["linear"] == 0.2
    assert measure.calls == 1
    assert capsys.readouterr().err == ""


def test_the_real_measurement_is_cached_with_its_rows(cache, capsys):
    extension.load(extension.CPU)  # raises, naming why, when it cannot be built here
    measured = thresholds.cached_or_measured(
        cache,
        _key(),
        lambda: calibration.measure_thresholds(shapes=TINY, densities=(0.5,), pairs=1),
    )
    content = files.read_json(cache)
    assert content["thresholds"] == measured
    assert {row["kind"] for row in content["rows"]} == {"linear", "conv2d"}
    assert thresholds.read_cache(cache, _key()) == measured


@pytest.mark.parametrize("changed", ["build", "torch", "threads", "device", "dtype", "method"])
def test_a_cache_measured_under_another_key_is_measured_again(cache, changed):
    stale = Measurements(linear=0.9)
    thresholds.cached_or_measured(cache, _key(), stale)
    key = dict(_key(), **{changed: "something else"})
    fresh = Measurements(linear=0.1)
    assert thresholds.cached_or_measured(cache, key, fresh)["linear"] == 0.1
    assert fresh.calls == 1
    assert thresholds.read_cache(cache, key) == {"linear": 0.1, "conv2d": 0.0}
    assert thresholds.read_cache(cache, _key()) is None


def test_a_corrupted_cache_is_measured_again_not_trusted(cache):
    thresholds.cached_or_measured(cache, _key(), Measurements(linear=0.2))
    cache.write_text(cache.read_text().replace("0.2", "0.9"))  # the digest no longer matches
    assert thresholds.read_cache(cache, _key()) is None
    measure = Measurements(linear=0.3)
    assert thresholds.cached_or_measured(cache, _key(), measure)["linear"] == 0.3
    assert measure.calls == 1
    assert thresholds.read_cache(cache, _key())["linear"] == 0.3  # rewritten intact


@pytest.mark.parametrize(
    "content",
    [
        b"\x00 not json",
        b"[]",
        b'{"key": null}',
        json.dumps({"key": "KEY", "thresholds": {"linear": 1.5, "conv2d": 0.0}}).encode(),
        json.dumps({"key": "KEY", "thresholds": {"linear": True, "conv2d": 0.0}}).encode(),
        json.dumps({"key": "KEY", "thresholds": {"linear": 0.5}}).encode(),
        json.dumps({"key": "KEY", "thresholds": [0.5, 0.0]}).encode(),
    ],
)
def test_a_cache_with_a_valid_digest_but_unusable_content_is_measured_again(cache, content):
    files.write_artifact(cache, content.replace(b'"KEY"', json.dumps(_key()).encode()))
    assert thresholds.read_cache(cache, _key()) is None
    measure = Measurements()
    thresholds.cached_or_measured(cache, _key(), measure)
    assert measure.calls == 1


def test_a_cache_that_cannot_be_written_still_gives_the_measurement(tmp_path, capsys):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    path = blocked / "compact-thresholds.json"
    measure = Measurements(linear=0.4)
    assert thresholds.cached_or_measured(path, _key(), measure)["linear"] == 0.4
    assert "could not cache the compact-mode thresholds" in capsys.readouterr().err


def test_the_cache_is_named_and_keyed_by_what_determines_the_result(tmp_path):
    directory = tmp_path / "sparse_tickets_cpu_0123456789ab"
    threads = torch.get_num_threads()
    path = thresholds.cache_path(directory, "cpu", torch.float64)
    assert path.parent == directory
    assert path.name == f"compact-thresholds-cpu-float64-{threads}threads.json"
    assert thresholds.cache_key(directory, "cpu", torch.float64) == {
        "build": directory.name,
        "torch": torch.__version__,
        "threads": threads,
        "device": "cpu",
        "dtype": "float64",
        "method": thresholds.CALIBRATION_METHOD,
    }


def test_the_cache_lives_beside_the_compiled_extension():
    assert thresholds.cache_directory("cpu") == extension.build_directory(extension.CPU)
    assert thresholds.cache_directory("mps") is None


@pytest.fixture
def this_process(monkeypatch, tmp_path):
    """A fresh process's view (nothing obtained yet) with the build directory in tmp_path and
    tiny calibration shapes, calibration on."""
    extension.load(extension.CPU)  # raises, naming why, when it cannot be built here
    monkeypatch.setattr(thresholds, "_obtained", {})
    monkeypatch.setattr(thresholds, "cache_directory", lambda device_type: tmp_path)
    monkeypatch.setattr(calibration, "SHAPES", TINY)
    monkeypatch.setattr(calibration, "DENSITIES", (0.5,))
    monkeypatch.setattr(calibration, "PAIRS", 1)
    monkeypatch.setenv(thresholds.CALIBRATION_ENV_VAR, "auto")
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)


def test_a_process_measures_once_and_a_new_thread_count_measures_again(this_process, capsys):
    first = thresholds.machine_thresholds("cpu")
    assert thresholds.machine_thresholds("cpu") is first  # kept: never measured per call
    assert capsys.readouterr().err.count("measuring where compact mode") == 1
    threads = torch.get_num_threads()
    assert thresholds.cache_path(this_process, "cpu", torch.float32).is_file()

    thresholds._obtained.clear()  # the next process reads the cache
    assert thresholds.machine_thresholds("cpu") == first
    assert capsys.readouterr().err == ""

    torch.set_num_threads(threads + 1)
    thresholds.machine_thresholds("cpu")
    assert capsys.readouterr().err.count("measuring where compact mode") == 1
    assert thresholds.cache_path(this_process, "cpu", torch.float32).name.endswith(
        f"-{threads + 1}threads.json"
    )


def test_a_failed_measurement_falls_back_to_the_instruction_set_rule(
    this_process, monkeypatch, capsys
):
    monkeypatch.setattr(calibration, "SHAPES", {"linear": ((4, 12),), "conv2d": ()})
    assert thresholds.machine_thresholds("cpu") == thresholds.derived("cpu")
    assert "measuring the compact-mode thresholds failed (ValueError" in capsys.readouterr().err
    assert not thresholds.cache_path(this_process, "cpu", torch.float32).exists()


def test_without_calibration_nothing_is_measured_or_cached(this_process, monkeypatch, capsys):
    monkeypatch.setenv(thresholds.CALIBRATION_ENV_VAR, "off")
    assert thresholds.machine_thresholds("cpu") == thresholds.derived("cpu")
    assert capsys.readouterr().err == ""
    assert list(this_process.iterdir()) == []


def test_a_process_measures_with_the_calibration_for_its_device_and_dtype(
    this_process, monkeypatch
):
    asked = []

    def measure(device_type, dtype):
        asked.append((device_type, dtype))
        return {"thresholds": {"linear": 0.35, "conv2d": 0.05}, "rows": [], "seconds": 0.0}

    monkeypatch.setattr(calibration, "measure_thresholds", measure)
    assert thresholds.machine_thresholds("cpu", torch.float64) == {"linear": 0.35, "conv2d": 0.05}
    assert asked == [("cpu", torch.float64)]


def test_the_instruction_set_rule_leans_dense():
    for device_type in ("cpu", "cuda", "mps"):
        rule = thresholds.derived(device_type)
        assert set(rule) == {"linear", "conv2d"}
        assert rule["conv2d"] == 0.0 and 0.0 <= rule["linear"] < 1.0
    assert thresholds.derived("cuda") == {"linear": 0.0, "conv2d": 0.0}


def test_a_bad_calibration_setting_is_refused(monkeypatch):
    monkeypatch.setenv(thresholds.CALIBRATION_ENV_VAR, "sometimes")
    with pytest.raises(
        ValueError,
        match=r"SPARSE_TICKETS_CALIBRATION='sometimes'; expected "
        r"auto or off",
    ):
        thresholds.machine_thresholds("cpu")
