"""Tables and plots from lottery-ticket run directories (``sparse-tickets report``).

``write_report(run_directories, output_directory)`` writes:

- ``accuracy.png``: test accuracy at early stop against percent of weights remaining;
- ``early_stop.png``: the early-stop iteration against percent of weights remaining;
- ``training_curves.png``: test accuracy against iteration, a line per level (up to six);
- ``report.md``: a table per configuration, a row per level, columns per branch;
- ``summary.csv``: the same numbers at full precision, a row per configuration, branch and
  level, in the units of metrics.json;
- when some run is one-shot (pruning at initialisation with SNIP, GraSP or SynFlow, or one-shot
  magnitude): ``one_shot.png``, those runs against the IMP tickets of the same model and
  dataset, also tabled in report.md at equal density;
- when some run has instability analyses: ``instability.png`` (the error along each linear
  path, and the barrier against density) and ``instability.csv``, also tabled in report.md.

Runs that differ only in their seeds form one configuration and are shown as the mean over
seeds with their spread; configurations are labelled by model, dataset and the fields in which
they differ. Levels whose training diverged are listed apart and flagged in the tables.

Each file is written atomically; temporary files that a killed report left behind are removed
when the next one is written, and :func:`report_problem` tells whether the files in a report
directory are whole (``imp`` writes the report again when they are not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ... import files
from .comparison import OneShotComparison, is_one_shot, one_shot_comparisons
from .figures import (
    accuracy_png,
    density_ticks,
    early_stop_png,
    instability_png,
    one_shot_png,
    training_curves_png,
)
from .results import (
    BRANCH_LABELS,
    Configuration,
    InstabilitySummary,
    LevelSummary,
    Spread,
    configuration_labels,
    load_configurations,
)
from .tables import CSV_COLUMNS, instability_csv, markdown_report, summary_csv

REPORT_FILES = ("accuracy.png", "early_stop.png", "report.md", "summary.csv", "training_curves.png")
# Written after those, when the runs have what they show.
ONE_SHOT_FILES = ("one_shot.png",)
INSTABILITY_FILES = ("instability.png", "instability.csv")


def write_report(
    run_directories: Iterable,
    output_directory: Path,
    on_skip: Callable[[str], None] = lambda line: None,
) -> list[Path]:
    """Write the report of ``run_directories`` into ``output_directory`` (made if missing);
    return the paths written, in the order of :data:`REPORT_FILES`.

    Raises ValueError when no directory is given or the output directory is a file, and
    :class:`~sparse_tickets.lottery.runs.RunError` for a directory that is not a run, or when no
    run has a finished level; a run with none yet is left out, said in one line to ``on_skip``.
    """
    configurations = load_configurations(run_directories, on_skip)
    # Everything is rendered before anything is written, so a failure leaves the previous
    # report whole rather than half replaced.
    contents = dict(
        zip(
            REPORT_FILES,
            (
                accuracy_png(configurations),
                early_stop_png(configurations),
                markdown_report(configurations).encode(),
                summary_csv(configurations).encode(),
                training_curves_png(configurations),
            ),
        )
    )
    if any(map(is_one_shot, configurations)):
        contents["one_shot.png"] = one_shot_png(configurations)
    if any(configuration.instability for configuration in configurations):
        contents["instability.png"] = instability_png(configurations)
        contents["instability.csv"] = instability_csv(configurations).encode()
    output = Path(output_directory)
    if output.exists() and not output.is_dir():
        raise ValueError(f"output directory {output} is a file; expected a directory")
    files.make_directory(output)
    files.remove_temporaries(output)  # left by a report that was killed while writing
    written = []
    for name, data in contents.items():
        path = output / name
        files.write_atomically(path, lambda file, data=data: file.write(data))
        written.append(path)
    return written


# How each report file starts when whole: PNG's signature, the markdown title, the CSV header.
_SIGNATURES = {
    ".png": b"\x89PNG\r\n\x1a\n",
    ".md": b"# Lottery-ticket report\n",
    ".csv": ",".join(CSV_COLUMNS).encode() + b"\n",
}


def report_problem(output_directory: Path) -> str | None:
    """Why the report in ``output_directory`` is not whole (a file missing, empty, not what it
    should be, or a temporary file left by a killed writer), or None when it is."""
    output = Path(output_directory)
    for name in REPORT_FILES:
        path = output / name
        try:
            with open(path, "rb") as file:
                head = file.read(64)
        except OSError:
            return f"{path} is missing"
        if not head.startswith(_SIGNATURES[path.suffix][: len(head) or 1]):
            return f"{path} is not a whole report file"
    leftovers = sorted(output.glob(f".*{files.TEMPORARY_SUFFIX}"))
    if leftovers:
        return f"{leftovers[0]} was left by a report that was killed"
    return None


__all__ = [
    "BRANCH_LABELS",
    "CSV_COLUMNS",
    "Configuration",
    "INSTABILITY_FILES",
    "InstabilitySummary",
    "LevelSummary",
    "ONE_SHOT_FILES",
    "OneShotComparison",
    "REPORT_FILES",
    "Spread",
    "accuracy_png",
    "configuration_labels",
    "density_ticks",
    "early_stop_png",
    "instability_csv",
    "instability_png",
    "is_one_shot",
    "load_configurations",
    "markdown_report",
    "one_shot_comparisons",
    "one_shot_png",
    "report_problem",
    "summary_csv",
    "write_report",
]
