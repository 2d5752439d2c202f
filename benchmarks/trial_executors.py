"""K trials of the default IMP run, as processes and stacked: ``python -m
benchmarks.trial_executors``.

Times, wall clock, each started as a subprocess in the same benchmark run (one after the other,
on an otherwise idle machine):

- ``imp --trials K``: the trials as processes, one per core at a time, the cores split;
- ``imp --trials K --executor stacked``: the levels trained as one stacked network in one
  process wherever that is measured to be faster, the other levels as processes;
- plain PyTorch IMP as K processes: ``benchmarks.plain_imp`` (the same IMP in plain
  PyTorch, ``nn.Linear`` with the mask multiplied in and ``torch.optim.Adam``), run as
  ``--trials`` runs its processes (one per core at a time, one thread each);
- K sequential runs: ``imp --model-seed S --data-seed S --control-seed 1+S`` for S = 0..K-1
  one after the other, each on every core: the loop over seeds a user writes by hand.

The work: LeNet-300-100 on the embedded mnist5k digits, the default schedule (``--levels``
levels of ``--iterations`` iterations, evaluated every 50, then the random-reinitialisation
control at every pruned level), K trials of seed offsets 0..K-1. Also written: the mean early-stop
test accuracy of the trials at each level, per configuration, so the reader sees they did the
same work, and the stacked command's choices. Writes ``trial_executors.json`` and
``trial_executors.md`` into ``benchmarks/results/<device slug>/`` (or ``--output``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import machine, result_files

JSON_NAME, MARKDOWN_NAME = "trial_executors.json", "trial_executors.md"
PROCESSES, STACKED, PLAIN, SEQUENTIAL = (
    "imp --trials K",
    "imp --trials K --executor stacked",
    "plain PyTorch IMP as K processes",
    "K sequential runs",
)
CONFIGS = (PROCESSES, STACKED, PLAIN, SEQUENTIAL)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.trial_executors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ks", default="2,4", help="comma-separated trial counts (default 2,4)")
    parser.add_argument("--levels", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS[:3]),
        help="comma-separated configurations (default: the first three): " + "; ".join(CONFIGS),
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="times each configuration is run, the configurations interleaved; the table "
        "gives the median (default 1)",
    )
    parser.add_argument("--output", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    args.ks = [int(k) for k in args.ks.split(",") if k.strip()]
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        parser.error(f"--configs: {', '.join(unknown)}; expected some of {', '.join(CONFIGS)}")
    return args


def cores() -> int:
    return len(os.sched_getaffinity(0))


def _imp_command(args, directory: Path) -> list:
    return [
        sys.executable,
        "-m",
        "sparse_tickets",
        "imp",
        "--levels",
        str(args.levels),
        "--iterations",
        str(args.iterations),
        "--eval-every",
        str(args.eval_every),
        "--runs-dir",
        str(directory),
        "--quiet",
        "--no-report",
    ]


def _run_command(command: list) -> tuple[float, str]:
    """(seconds, standard error) of ``command``, which must succeed."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stderr


def _accuracies(directory: Path) -> dict:
    accuracies = {}
    for metrics_file in directory.glob("**/level_*/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        key = f"{metrics['branch']} {metrics['level']}"
        accuracies.setdefault(key, []).append(metrics["early_stop_test_accuracy"])
    return accuracies


def run_ours(k: int, args, stacked: bool, directory: Path) -> dict:
    command = [*_imp_command(args, directory), "--trials", str(k)]
    if stacked:
        command += ["--executor", "stacked"]
    seconds, errors = _run_command(command)
    choices = [line for line in errors.splitlines() if "measured: " in line or "plan: " in line]
    return {"seconds": seconds, "accuracies": _accuracies(directory), "choices": choices}


def run_sequential(k: int, args, directory: Path) -> dict:
    """The K trials' seeds as K ordinary commands, one after the other, on every core."""
    seconds = 0.0
    for seed in range(k):
        seeds = ["--model-seed", str(seed), "--data-seed", str(seed)]
        seeds += ["--control-seed", str(1 + seed)]
        seconds += _run_command([*_imp_command(args, directory), *seeds])[0]
    return {"seconds": seconds, "accuracies": _accuracies(directory), "choices": []}


def run_plain(k: int, args, directory: Path) -> dict:
    """K plain-PyTorch IMP processes, one per core at a time, one thread each."""
    at_once = min(k, cores())
    threads = max(1, cores() // at_once)
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    waiting, running, outputs = list(range(k)), [], []
    started = time.perf_counter()
    while waiting or running:
        while waiting and len(running) < at_once:
            seed = waiting.pop(0)
            output = directory / f"plain-{seed}.json"
            outputs.append(output)
            command = [
                sys.executable,
                "-m",
                "benchmarks.plain_imp",
                "--json",
                str(output),
                "--levels",
                str(args.levels),
                "--iterations",
                str(args.iterations),
                "--eval-every",
                str(args.eval_every),
                "--threads",
                str(threads),
                "--model-seed",
                str(seed),
                "--data-seed",
                str(seed),
                "--control-seed",
                str(1 + seed),
            ]
            running.append(subprocess.Popen(command, env=environment, cwd=machine.REPO_ROOT))
        for process in [p for p in running if p.poll() is not None]:
            if process.returncode:
                raise SystemExit(f"benchmarks.plain_imp failed ({process.returncode})")
            running.remove(process)
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    accuracies = {}
    for output in outputs:
        for level in json.loads(output.read_text())["levels"]:
            key = f"{level['branch']} {level['level']}"
            accuracies.setdefault(key, []).append(level["early_stop_test_accuracy"])
    return {"seconds": seconds, "accuracies": accuracies, "choices": []}


def markdown(results: dict, args) -> str:
    lines = [
        "# K trials of the default IMP run: processes, stacked, plain PyTorch",
        "",
        *result_files.machine_lines(results["machine"]),
        f"- schedule: {args.levels} levels of {args.iterations} iterations, evaluated every "
        f"{args.eval_every}, then the reinit control at every pruned level (LeNet-300-100, "
        f"mnist5k, Adam, batch 60)",
        "",
        f"Wall clock of the whole command (lower is faster), the median of {args.rounds} "
        f"round(s), the configurations interleaved; ratio: `{PROCESSES}` / this.",
        "",
    ]
    rows = []
    for k, by_config in results["runs"].items():
        base = by_config.get(PROCESSES, {}).get("seconds")
        for config, run in by_config.items():
            ratio = f"{base / run['seconds']:.2f}x" if base else ""
            each = ", ".join(f"{seconds:.1f}" for seconds in run.get("rounds", [run["seconds"]]))
            rows.append([k, config, f"{run['seconds']:.1f}", each, ratio])
    lines += result_files.markdown_table(
        ["K", "configuration", "seconds", "each round", "ratio"], rows
    )
    lines += ["", "Mean early-stop test accuracy of the K trials, per level:", ""]
    for k, by_config in results["runs"].items():
        configs = list(by_config)
        keys = sorted(
            next(iter(by_config.values()))["accuracies"],
            key=lambda key: (key.split()[0] != "main", int(key.split()[1])),
        )
        table = [
            [key]
            + [
                f"{statistics.mean(by_config[c]['accuracies'].get(key, [float('nan')])):.4f}"
                for c in configs
            ]
            for key in keys
        ]
        lines += [f"K {k}:", ""]
        lines += result_files.markdown_table(["level", *configs], table)
        lines.append("")
        stacked = by_config.get(STACKED)
        if stacked and stacked["choices"]:
            lines += [f"The stacked command's choices (K {k}):", ""]
            lines += [f"- {choice}" for choice in stacked["choices"]]
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    results = {"machine": result_files.describe(), "runs": {}}
    for k in args.ks:
        results["runs"][k] = {}
        for round_ in range(args.rounds):
            for config in args.configs:
                with tempfile.TemporaryDirectory() as scratch:
                    directory = Path(scratch)
                    if config == PLAIN:
                        run = run_plain(k, args, directory)
                    elif config == SEQUENTIAL:
                        run = run_sequential(k, args, directory)
                    else:
                        run = run_ours(k, args, config == STACKED, directory)
                kept = results["runs"][k].setdefault(config, {**run, "rounds": []})
                kept["rounds"].append(run["seconds"])
                kept["seconds"] = statistics.median(kept["rounds"])
                print(f"K {k}, round {round_ + 1}, {config}: {run['seconds']:.1f} s", flush=True)
    output = result_files.output_directory(args.output)
    result_files.write_results(output, JSON_NAME, results, MARKDOWN_NAME, markdown(results, args))
    print(f"wrote {output / MARKDOWN_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
