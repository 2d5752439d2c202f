"""What ``sparse-tickets list`` shows: every model, dataset, preset and backend by name."""

from sparse_tickets import data, models, ops
from sparse_tickets.lottery import catalogue
from sparse_tickets.lottery.presets import PRESETS


def _section(lines: list[str], heading: str) -> list[str]:
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[start:end]


def test_every_name_is_listed_under_its_heading():
    lines = catalogue.lines()
    for heading, names in (
        ("models:", models.names()),
        ("datasets:", data.names()),
        ("presets:", list(PRESETS)),
    ):
        assert [line.split()[0] for line in _section(lines, heading)] == names
    assert len(_section(lines, "backends:")) == len(ops.backends())


def test_a_dataset_read_from_files_says_where_from():
    for line in catalogue.dataset_lines()[1:]:
        name = line.split()[0]
        assert line.endswith("from --data-dir") == data.spec(name).reads_directory
        assert data.spec(name).description in line
