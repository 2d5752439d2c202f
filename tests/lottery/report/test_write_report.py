import csv

import pytest

from sparse_tickets.lottery.report import REPORT_FILES, write_report
from sparse_tickets.lottery.runs import RunError
from tests.lottery.report.fabricate import make_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_write_report_writes_every_file(tmp_path):
    runs = [make_run(tmp_path / "runs", seed=seed) for seed in (0, 1, 2)]
    output = tmp_path / "out" / "report"
    written = write_report(runs, output)
    assert written == [output / name for name in REPORT_FILES]
    for path in written[:2]:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert "91.20 [91.00, 91.40]" in (output / "report.md").read_text()
    with open(output / "summary.csv", newline="") as file:
        assert len(list(csv.DictReader(file))) == 7
    assert sorted(p.name for p in output.iterdir()) == sorted(REPORT_FILES)  # no temporaries


def test_write_report_replaces_an_earlier_report(tmp_path):
    run = make_run(tmp_path / "runs")
    output = tmp_path / "report"
    write_report([run], output)
    other = make_run(tmp_path / "runs", rewind="lr")
    write_report([run, other], output)
    assert "rewind=lr" in (output / "report.md").read_text()


def test_a_failing_report_leaves_the_earlier_one_whole(tmp_path):
    run = make_run(tmp_path / "runs")
    output = tmp_path / "report"
    write_report([run], output)
    before = {path.name: path.read_bytes() for path in output.iterdir()}
    with pytest.raises(RunError):
        write_report([run, tmp_path / "not_a_run"], output)
    assert {path.name: path.read_bytes() for path in output.iterdir()} == before


def test_an_output_path_that_is_a_file_is_an_error(tmp_path):
    occupied = tmp_path / "report"
    occupied.write_text("")
    with pytest.raises(ValueError, match="is a file; expected a directory"):
        write_report([make_run(tmp_path / "runs")], occupied)


def test_no_run_directories_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no run directories given"):
        write_report([], tmp_path / "report")
    assert not (tmp_path / "report").exists()
