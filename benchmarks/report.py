"""Turn a results JSON into ``results.md`` and one PNG per op family, beside it or elsewhere.

python -m benchmarks.report benchmarks/results/<device>/results.json [--output DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import plots, result_files, table
from .rows import load_results

TABLE_NAME = "results.md"


def write_report(json_path: Path, output: Path) -> list[Path]:
    """Write ``results.md`` and the plots of ``json_path`` into ``output``; return the paths."""
    machine_info, rows = load_results(json_path)
    if not rows:
        raise ValueError(f"{json_path} holds no benchmark rows; expected a run's results")
    output.mkdir(parents=True, exist_ok=True)
    table_path = output / TABLE_NAME
    result_files.write_atomically(table_path, table.render(machine_info, rows))
    device_name = machine_info.get("device_name", "unknown device")
    return [table_path] + plots.plot_all(rows, output, device_name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("json_path", type=Path, help="results JSON of python -m benchmarks.run")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="folder for results.md and the plots (default: the JSON's folder)",
    )
    args = parser.parse_args(argv)
    try:
        written = write_report(args.json_path, args.output or args.json_path.parent)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
