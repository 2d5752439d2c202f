"""The whole IMP run against a plain-PyTorch IMP: ``python -m benchmarks.imp_vs_torch``.

Times, wall clock, each as a subprocess in the same run: the default ``sparse-tickets imp``
(LeNet-300-100 on mnist5k, 11 levels and 10 random-reinit control levels of 1,000 iterations,
``--mode auto``), the same command with ``--mode dense``, and ``benchmarks.plain_imp`` (the
same work in plain PyTorch, open_lth style). Per level: the training wall time each recorded,
and the test accuracies at early stopping, so the reader sees the two do the same work. Writes
``imp_vs_torch.json`` and ``imp_vs_torch.md`` into ``benchmarks/results/<device slug>/`` (or
``--output``). ``--quick``: 1 level of 10 iterations, a check that it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import machine, result_files

JSON_NAME, MARKDOWN_NAME = "imp_vs_torch.json", "imp_vs_torch.md"
OURS_AUTO, OURS_DENSE, PLAIN = (
    "sparse-tickets imp",
    "sparse-tickets imp --mode dense",
    "plain PyTorch IMP",
)
QUICK_SCHEDULE = {"levels": 1, "iterations": 10, "eval_every": 5}
FULL_SCHEDULE = {"levels": 10, "iterations": 1000, "eval_every": 50}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.imp_vs_torch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 level of 10 iterations: checks it runs, times nothing",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="folder for imp_vs_torch.json and .md (default: benchmarks/results/<device slug>)",
    )
    return parser.parse_args(argv)


def schedule_flags(schedule: dict) -> list[str]:
    return [f"--{name.replace('_', '-')}={value}" for name, value in schedule.items()]


def ours_command() -> list[str]:
    """The installed ``sparse-tickets`` script beside this Python, else ``-m sparse_tickets``."""
    script = Path(sys.executable).parent / "sparse-tickets"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sparse_tickets"]


def run_timed(command: list[str], threads: int, log: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    begin = time.perf_counter()
    with open(log, "w") as out:
        status = subprocess.run(
            command, cwd=machine.REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    wall = time.perf_counter() - begin
    if status != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {status}; see its output:\n{log.read_text()[-3000:]}"
        )
    return wall


def ours(mode: str, schedule: dict, threads: int, workdir: Path) -> dict:
    runs = workdir / f"runs-{mode}"
    command = ours_command() + ["imp", "--runs-dir", str(runs), "--mode", mode]
    if schedule != FULL_SCHEDULE:
        command += schedule_flags(schedule)
    wall = run_timed(command, threads, workdir / f"ours-{mode}.log")
    (run_directory,) = [path for path in runs.iterdir() if path.is_dir()]
    levels = []
    for branch in ("main", "reinit"):
        for level_dir in sorted(
            (run_directory / branch).glob("level_*"), key=lambda path: int(path.name.split("_")[1])
        ):
            metrics = json.loads((level_dir / "metrics.json").read_text())
            levels.append(
                {
                    key: metrics[key]
                    for key in (
                        "branch",
                        "level",
                        "density",
                        "early_stop_iteration",
                        "early_stop_test_accuracy",
                        "final_test_accuracy",
                        "wall_time_seconds",
                    )
                }
            )
    return {
        "command": " ".join(["sparse-tickets"] + command[command.index("imp") :]),
        "wall_seconds": wall,
        "levels": levels,
    }


def plain(schedule: dict, threads: int, workdir: Path) -> dict:
    json_path = workdir / "plain.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.plain_imp",
        "--json",
        str(json_path),
        f"--threads={threads}",
    ] + schedule_flags(schedule)
    wall = run_timed(command, threads, workdir / "plain.log")
    result = json.loads(json_path.read_text())
    return {"command": " ".join(command[1:]), "wall_seconds": wall, "levels": result["levels"]}


def markdown(results: dict) -> str:
    runs = results["runs"]
    base = runs[PLAIN]["wall_seconds"]
    lines = [
        "# The whole IMP run against a plain-PyTorch IMP",
        "",
        *result_files.machine_lines(results["machine"]),
        "",
        f"LeNet-300-100 on mnist5k: {results['schedule']['levels'] + 1} levels and "
        f"{results['schedule']['levels']} reinit control levels of "
        f"{results['schedule']['iterations']} iterations, evaluation every "
        f"{results['schedule']['eval_every']}. Wall clock of each command (process start, "
        f"data, training, evaluation, ours' checkpoints, files and report included); "
        f"ratio = plain time / row time, above 1: faster than plain PyTorch.",
        "",
    ]
    lines += result_files.markdown_table(
        ["command", "wall s", "sum of level training s", "vs plain PyTorch"],
        [
            [
                name,
                f"{run['wall_seconds']:.1f}",
                f"{sum(level['wall_time_seconds'] for level in run['levels']):.1f}",
                f"{base / run['wall_seconds']:.2f}x",
            ]
            for name, run in runs.items()
        ],
    ) + [""]
    lines += [
        "Per level: training wall time in seconds (s) and test accuracy at early stopping (%).",
        "",
    ]
    header = ["branch", "level", "density"]
    for name in runs:
        header += [f"{name} s", f"{name} acc"]
    rows = []
    for index, level in enumerate(runs[PLAIN]["levels"]):
        row = [level["branch"], level["level"], f"{100 * level['density']:.1f}%"]
        for run in runs.values():
            other = run["levels"][index]
            row += [
                f"{other['wall_time_seconds']:.2f}",
                f"{100 * other['early_stop_test_accuracy']:.1f}",
            ]
        rows.append(row)
    return "\n".join(lines + result_files.markdown_table(header, rows) + [""])


def main(argv=None) -> int:
    args = parse_args(argv)
    schedule = QUICK_SCHEDULE if args.quick else FULL_SCHEDULE
    output = result_files.output_directory(args.output)
    results = {
        "benchmark": "imp_vs_torch",
        "quick": args.quick,
        "machine": {**result_files.describe(), "torch_threads": args.threads},
        "schedule": schedule,
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        for name, timed in (
            (OURS_AUTO, lambda: ours("auto", schedule, args.threads, workdir)),
            (PLAIN, lambda: plain(schedule, args.threads, workdir)),
            (OURS_DENSE, lambda: ours("dense", schedule, args.threads, workdir)),
        ):
            print(f"{name} ...", file=sys.stderr, flush=True)
            results["runs"][name] = timed()
            print(f"  {results['runs'][name]['wall_seconds']:.1f} s", file=sys.stderr)
    for run in results["runs"].values():
        run["levels"].sort(key=lambda level: (level["branch"] != "main", level["level"]))
    result_files.write_results(output, JSON_NAME, results, MARKDOWN_NAME, markdown(results))
    print(output / MARKDOWN_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
