"""The report's instability and one-shot sections, figures and CSV, on fabricated runs."""

import csv

import pytest

from sparse_tickets.lottery.report import (
    INSTABILITY_FILES,
    ONE_SHOT_FILES,
    REPORT_FILES,
    load_configurations,
    one_shot_comparisons,
    write_report,
)
from sparse_tickets.lottery.runs import RunError
from tests.lottery.report.fabricate import add_instability, make_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_instability_is_averaged_over_seeds_and_tabled(tmp_path):
    runs = [make_run(tmp_path / "runs", seed=seed) for seed in (0, 1)]
    for seed, run in enumerate(runs):
        add_instability(run, level=2, iteration=0, seed=seed)
        add_instability(run, level=2, iteration=100, seed=seed)
    add_instability(runs[0], level=3, iteration=0, seed=0)
    (configuration,) = load_configurations(runs)
    summaries = configuration.instability
    assert [(s.level, s.iteration, s.n_seeds) for s in summaries] == [
        (2, 0, 2),
        (2, 100, 2),
        (3, 0, 1),
    ]
    # Barriers 0.21 - 0.11 = 0.10 and 0.22 - 0.11 = 0.11: mean 0.105.
    assert summaries[0].test_barrier.mean == pytest.approx(0.105)
    assert summaries[0].test_error == pytest.approx((0.1, 0.215, 0.12))
    assert summaries[0].percent_remaining == pytest.approx(64.0)

    output = tmp_path / "report"
    written = write_report(runs, output)
    assert [path.name for path in written] == [*REPORT_FILES, *INSTABILITY_FILES]
    assert (output / "instability.png").read_bytes().startswith(PNG_MAGIC)
    report = (output / "report.md").read_text()
    assert "## Instability (linear mode connectivity)" in report
    assert "| 10.50 [10.00, 11.00] |" in report  # test barrier in points: mean [min, max]
    with open(output / "instability.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3 and float(rows[0]["test_barrier_mean"]) == pytest.approx(0.105)
    assert rows[0]["alphas"] == "0.0 0.5 1.0"


def test_a_report_without_analyses_or_one_shot_runs_has_only_the_usual_files(tmp_path):
    run = make_run(tmp_path / "runs")
    written = write_report([run], tmp_path / "report")
    assert [path.name for path in written] == list(REPORT_FILES)
    assert "Instability" not in (tmp_path / "report" / "report.md").read_text()


def test_a_malformed_instability_result_is_a_one_line_error(tmp_path):
    run = make_run(tmp_path / "runs")
    add_instability(run, level=1, iteration=0, seed=0)
    path = run / "instability" / "main" / "level_1" / "iteration_0" / "path_3.json"
    from sparse_tickets import files

    result = files.read_json(path)
    del result["test_barrier"]
    files.write_json(path, result)
    with pytest.raises(RunError, match="lacks test_barrier") as error:
        load_configurations([run])
    assert "\n" not in str(error.value)


def test_one_shot_runs_meet_the_imp_level_nearest_in_density(tmp_path):
    imp = make_run(tmp_path / "runs")  # main levels at 100, 80, 64, 51.2 %
    snip = make_run(
        tmp_path / "runs",
        main_levels=(0, 1),
        control_levels=(),
        strategy="snip",
        one_shot_density=0.64,
    )
    synflow = make_run(
        tmp_path / "runs",
        main_levels=(0, 1),
        control_levels=(),
        strategy="synflow",
        one_shot_density=0.64,
    )
    configurations = load_configurations([imp, snip, synflow])
    rows = one_shot_comparisons(configurations)
    assert [row.method for row in rows] == ["snip", "synflow"]
    # The fabricated level 1 sits at 80%, so the nearest IMP level is level 1.
    assert all(
        row.imp.label == configurations[0].label and row.imp_level.level == 1 for row in rows
    )
    output = tmp_path / "report"
    written = write_report([imp, snip, synflow], output)
    assert [path.name for path in written] == [*REPORT_FILES, *ONE_SHOT_FILES]
    assert (output / "one_shot.png").read_bytes().startswith(PNG_MAGIC)
    report = (output / "report.md").read_text()
    assert "## One-shot pruning against IMP at equal density" in report
    assert "| snip |" in report and "+0.00 |" in report


def test_the_nearest_level_is_sought_across_imp_runs_of_the_same_structure(tmp_path):
    short = make_run(tmp_path / "runs", main_levels=(0, 1))  # 100 and 80 %
    long = make_run(tmp_path / "runs", levels=3)  # down to 51.2 %
    structured = make_run(tmp_path / "runs", nm="2:4")
    snip = make_run(
        tmp_path / "runs",
        main_levels=(0, 1),
        control_levels=(),
        strategy="snip",
        one_shot_density=0.5,
        nm="2:4",
    )
    plain = make_run(
        tmp_path / "runs",
        main_levels=(0, 1),
        control_levels=(),
        strategy="snip",
        one_shot_density=0.5,
    )
    # Fabricated pruned levels sit at 80 %: equally near in both unstructured IMP runs, so
    # the first run's level 1 wins; the 2:4 one-shot run meets the 2:4 IMP run only.
    rows = one_shot_comparisons(load_configurations([short, long, structured, snip, plain]))
    assert len(rows) == 2
    assert rows[0].imp.hparams["nm"] == "2:4" and rows[0].imp_level.level == 1
    assert rows[1].imp.hparams["levels"] == 10 and rows[1].imp_level.level == 1


def test_a_one_shot_run_alone_says_there_is_no_imp_to_compare(tmp_path):
    grasp = make_run(
        tmp_path / "runs",
        main_levels=(0, 1),
        control_levels=(),
        strategy="grasp",
        one_shot_density=0.1,
    )
    (row,) = one_shot_comparisons(load_configurations([grasp]))
    assert row.imp is None and row.imp_level is None
    write_report([grasp], tmp_path / "report")
    assert (
        "(no IMP run of this model, dataset and N:M pattern)"
        in (tmp_path / "report" / "report.md").read_text()
    )
