"""The whole-step, step-profile and whole-IMP benchmarks run with ``--quick`` and write
well-formed results. Checks the files, never the timings."""

import json

from benchmarks import imp_vs_torch, step_profile, steps
from benchmarks.step_setups import OURS, TORCH, TORCH_MASK_MULTIPLY


def test_steps_quick_writes_every_configuration_with_its_ratios(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSE_TICKETS_CALIBRATION", "off")  # no measurement: a quick test
    assert steps.main(["--quick", "--networks", "lenet", "--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / steps.JSON_NAME).read_text())
    assert set(results["networks"]) == {"lenet"}
    for network in results["networks"].values():
        providers = {(row["provider"], row["density"]) for row in network["rows"]}
        densities = {density for _, density in providers}
        assert 1.0 in densities and len(densities) == 2
        for density in densities:
            baseline = TORCH if density == 1.0 else TORCH_MASK_MULTIPLY
            assert {(p, density) for p in (baseline,) + OURS} <= providers
        for row in network["rows"]:
            assert len(row["round_ms"]) == network["rounds"]
            assert 0 < row["min_ms"] <= row["median_ms"]
            assert row["vs_baseline_min"] > 0 and row["vs_torch_dense_median"] > 0
            if row["provider"].startswith("ours"):
                assert set(row["layer_modes"].values()) <= {"dense", "compact"}
    table = (tmp_path / steps.MARKDOWN_NAME).read_text()
    assert "## lenet_300_100" in table and "| 3.5% | ours auto |" in table
    assert results["machine"]["torch_threads"] == 2 and "git_commit" in results["machine"]


def test_step_profile_quick_writes_a_table_per_configuration(tmp_path):
    assert step_profile.main(["--quick", "--output", str(tmp_path)]) == 0
    text = (tmp_path / step_profile.MARKDOWN_NAME).read_text()
    for heading in (
        "## torch at 100%",
        "## ours compact at 100%",
        "## torch mask-multiply at 3.5%",
        "## ours dense at 3.5%",
    ):
        assert heading in text
    assert text.count("Self CPU") >= 6


def test_imp_vs_torch_quick_times_three_commands_that_do_the_same_work(tmp_path, monkeypatch):
    # The commands it times are processes of their own, which inherit this environment: no
    # TRITON_INTERPRET (tests/kernels sets it for this process), no calibration.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("SPARSE_TICKETS_CALIBRATION", "off")
    assert imp_vs_torch.main(["--quick", "--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / imp_vs_torch.JSON_NAME).read_text())
    runs = results["runs"]
    assert set(runs) == {imp_vs_torch.OURS_AUTO, imp_vs_torch.OURS_DENSE, imp_vs_torch.PLAIN}
    levels = imp_vs_torch.QUICK_SCHEDULE["levels"]
    for run in runs.values():
        assert run["wall_seconds"] > 0
        assert [(lv["branch"], lv["level"]) for lv in run["levels"]] == (
            [("main", n) for n in range(levels + 1)] + [("reinit", n) for n in range(1, levels + 1)]
        )
    # The plain IMP trains the same networks on the same batches: same densities, and
    # accuracies within float rounding's reach of ours.
    for ours_level, plain_level in zip(
        runs[imp_vs_torch.OURS_DENSE]["levels"], runs[imp_vs_torch.PLAIN]["levels"]
    ):
        assert abs(ours_level["density"] - plain_level["density"]) < 1e-9
        assert (
            abs(ours_level["early_stop_test_accuracy"] - plain_level["early_stop_test_accuracy"])
            <= 0.02
        )
    assert "| sparse-tickets imp |" in (tmp_path / imp_vs_torch.MARKDOWN_NAME).read_text()
