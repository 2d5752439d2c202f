"""``report``, ``export`` and ``runs``: what finished and running runs hold."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import PROG, UsageError, note


def run_report(args) -> int:
    from ..lottery.report import write_report
    from ..lottery.report.results import load_runs
    from ..lottery.runs import Run

    directories = [Run.open(Path(d)).directory for d in args.run_dirs]  # before making output
    output = (
        Path(args.output)
        if args.output
        else (directories[0] / "report" if len(directories) == 1 else Path("report"))
    )
    for path in write_report(directories, output, on_skip=note):
        print(f"wrote {path}")
    for run in load_runs(directories):
        for level in run.diverged:
            print(
                f"{PROG}: note: {level.branch} level {level.level} of {run.directory} "
                f"diverged at iteration {level.iteration} ({level.cause}); it is listed "
                f"apart in report.md",
                file=sys.stderr,
            )
    return 0


def run_export(args) -> int:
    from ..lottery.export import export_ticket

    path = export_ticket(
        Path(args.run_dir),
        args.level,
        branch=args.branch,
        output=Path(args.output) if args.output else None,
    )
    print(f"wrote {path}")
    return 0


def run_runs(args) -> int:
    from ..lottery import listing

    root = Path(args.directory)
    if not root.is_dir():
        raise UsageError(
            f"{PROG} runs: {root} is not a directory; expected a directory of run "
            f"directories (--runs-dir of imp and train)"
        )
    found = listing.find_runs(root)
    if not found:
        print(f"no runs under {root}")
        return 0
    print(listing.table([listing.read_state(directory) for directory in found], root))
    return 0
