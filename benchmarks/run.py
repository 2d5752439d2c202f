"""Run the benchmark suites and write their results: ``python -m benchmarks.run --device cpu``.

Writes, into ``benchmarks/results/<device slug>/`` (or ``--output``): ``results.json``
(pytest-benchmark's JSON, without the raw per-round timings), ``results.md`` (every row with
its ratios to dense and prune-style) and one PNG per op. ``--quick`` runs every benchmark on
tiny shapes, a check that the suites work, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from . import machine, report, result_files
from .profiles import DEVICES

BENCHMARK_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCHMARK_DIR / "results"
JSON_NAME = "results.json"

# Rounds per device. CPU: at least 3 timed calls of every row and no more than fit in 0.2 s,
# which keeps the suite under 10 minutes on 2 cores; the calibration call before them warms up.
# CUDA: a GPU call is short and steady, but its first calls pay for autotuning and clocks.
TIMING_OPTIONS = {
    "cpu": ["--benchmark-min-rounds=3", "--benchmark-max-time=0.2", "--benchmark-warmup=off"],
    "cuda": [
        "--benchmark-min-rounds=5",
        "--benchmark-max-time=0.1",
        "--benchmark-warmup=on",
        "--benchmark-warmup-iterations=10",
    ],
}
# --quick: one call per row, just enough to show that every benchmark runs.
QUICK_TIMING_OPTIONS = [
    "--benchmark-min-rounds=1",
    "--benchmark-max-time=0",
    "--benchmark-min-time=0",
    "--benchmark-warmup=off",
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--device", choices=DEVICES, default="cpu", help="where the suites run (default: cpu)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny shapes and one call per row: checks the suites, times nothing",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="folder the results go in (default: benchmarks/results/<device "
        "slug>, e.g. cpu-amd-epyc-avx2-2threads)",
    )
    parser.add_argument(
        "-k",
        dest="select",
        default=None,
        help="pytest -k expression: run only the matching benchmarks",
    )
    return parser.parse_args(argv)


def pytest_command(args: argparse.Namespace, json_path: Path) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(BENCHMARK_DIR),
        "-q",
        "-p",
        "no:cacheprovider",
        "--benchmark-enable",
        f"--benchmark-json={json_path}",
        "--benchmark-quiet",
        f"--bench-device={args.device}",
    ]
    command += (
        QUICK_TIMING_OPTIONS + ["--bench-quick"] if args.quick else TIMING_OPTIONS[args.device]
    )
    if args.select:
        command += ["-k", args.select]
    return command


def strip_raw_timings(json_path: Path) -> None:
    """Drop the per-round timings from the JSON (the stats stay): they make it tens of MB."""
    results = json.loads(json_path.read_text())
    for row in results.get("benchmarks", []):
        row.get("stats", {}).pop("data", None)
    result_files.write_atomically(json_path, json.dumps(results, indent=1))


def main(argv=None) -> int:
    args = parse_args(argv)
    output = args.output or RESULTS_DIR / machine.device_slug(args.device)
    output.mkdir(parents=True, exist_ok=True)
    partial = output / f".{JSON_NAME}.partial"
    status = subprocess.run(pytest_command(args, partial), cwd=machine.REPO_ROOT).returncode
    if not partial.exists():
        print(f"benchmarks wrote no results (pytest exit status {status})", file=sys.stderr)
        return status or 1
    strip_raw_timings(partial)
    json_path = output / JSON_NAME
    os.replace(partial, json_path)
    written = report.write_report(json_path, output)
    print("\n".join(str(path) for path in written))
    return status


if __name__ == "__main__":
    sys.exit(main())
