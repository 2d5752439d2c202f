"""Whole training steps against plain PyTorch: ``python -m benchmarks.steps``.

For each network (LeNet-300-100, Conv-2, Conv-6, ResNet-20) and density, one training step
(zero_grad, forward, cross-entropy, backward, optimizer step on a batch made beforehand) of
every configuration of ``step_setups``: plain torch dense, torch mask-multiply, ours in the
dense, compact and auto modes. The configurations of one network are interleaved: after a
warm-up, ``--rounds`` rounds each run every configuration for ``steps_per_round`` steps, in an
order rotated every round. A configuration's figures are the min and median over its rounds
of the mean time per step; its ratios (baseline time / its time, above 1: faster) are to the
plain-PyTorch baseline of its density measured in the same run (torch at 100%, torch
mask-multiply below) and to plain torch dense. Writes ``steps.json`` and ``steps.md`` into
``benchmarks/results/<device slug>/`` (or ``--output``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from . import result_files, step_setups
from .step_setups import NETWORKS, TORCH, Network

JSON_NAME, MARKDOWN_NAME = "steps.json", "steps.md"
BATCHES = 4


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.steps",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--networks",
        default=",".join(NETWORKS),
        help=f"comma-separated networks (default: {','.join(NETWORKS)})",
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default: 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="batch 4, two densities, 2 rounds of 1 step: checks the benchmark runs, times nothing",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="folder for steps.json and steps.md (default: benchmarks/results/<device slug>)",
    )
    args = parser.parse_args(argv)
    args.networks = [name.strip() for name in args.networks.split(",") if name.strip()]
    unknown = [name for name in args.networks if name not in NETWORKS]
    if unknown:
        parser.error(f"unknown network {', '.join(unknown)}; expected {', '.join(NETWORKS)}")
    if args.quick:
        args.rounds = 2
    return args


def time_network(network: Network, rounds: int) -> dict:
    """Interleaved timings of every configuration of ``network``."""
    started = time.perf_counter()
    steps = network.steps_per_round
    setups = step_setups.setups(network)
    data = step_setups.batches(network, BATCHES)
    for setup in setups:  # warm-up: first calls, allocator, caches
        for index in range(max(1, steps // 4)):
            setup.step(data[index % BATCHES])
        setup.record_modes()
    per_step = {id(setup): [] for setup in setups}
    for round_index in range(rounds):
        shift = round_index % len(setups)
        for setup in setups[shift:] + setups[:shift]:
            begin = time.perf_counter()
            for index in range(steps):
                setup.step(data[index % BATCHES])
            per_step[id(setup)].append(1e3 * (time.perf_counter() - begin) / steps)
    rows = [
        {
            "provider": s.provider,
            "density": s.density,
            "round_ms": per_step[id(s)],
            "min_ms": min(per_step[id(s)]),
            "median_ms": statistics.median(per_step[id(s)]),
            "layer_modes": s.layer_modes,
        }
        for s in setups
    ]
    add_ratios(rows)
    return {
        "model": network.model,
        "batch_size": network.batch_size,
        "optimizer": network.optimizer,
        "lr": network.lr,
        "steps_per_round": steps,
        "rounds": rounds,
        "rows": rows,
        "wall_seconds": time.perf_counter() - started,
    }


def add_ratios(rows: list[dict]) -> None:
    """Each row's speedups over its density's baseline and over plain torch dense."""

    def find(provider: str, density: float) -> dict:
        return next(r for r in rows if r["provider"] == provider and r["density"] == density)

    dense = find(TORCH, 1.0)
    for row in rows:
        baseline = find(step_setups.baseline_of(row["density"]), row["density"])
        row["baseline"] = baseline["provider"]
        for stat in ("min", "median"):
            row[f"vs_baseline_{stat}"] = baseline[f"{stat}_ms"] / row[f"{stat}_ms"]
            row[f"vs_torch_dense_{stat}"] = dense[f"{stat}_ms"] / row[f"{stat}_ms"]


def modes_summary(layer_modes: dict) -> str:
    """``compact 2 / dense 1 (dense: output)``: how many layers ran in each mode."""
    if not layer_modes:
        return ""
    dense = [name for name, mode in layer_modes.items() if mode == "dense"]
    compact = len(layer_modes) - len(dense)
    if not dense or not compact:
        return f"all {len(layer_modes)} {'dense' if dense else 'compact'}"
    listed = ", ".join(dense) if len(dense) <= 4 else f"{len(dense)} layers"
    return f"compact {compact} / dense {len(dense)} (dense: {listed})"


def markdown(results: dict) -> str:
    lines = [
        "# Whole training steps against plain PyTorch",
        "",
        *result_files.machine_lines(results["machine"]),
        "",
        "A step: zero_grad, forward, cross-entropy, backward, optimizer step, on batches "
        "made beforehand. ms per step: min and median over the rounds' means. Ratios: "
        "baseline time / row time (min), above 1 means faster than the baseline; the "
        "baseline at a density is plain torch at 100% and torch mask-multiply (weight * "
        "mask before every forward) below. Masks: layerwise magnitude at initialisation, "
        "every masked layer at the density.",
        "",
    ]
    for network in results["networks"].values():
        lines += [
            f"## {network['model']} (batch {network['batch_size']}, "
            f"{network['optimizer']} lr {network['lr']:g})",
            "",
            f"{network['rounds']} rounds x {network['steps_per_round']} steps per "
            f"configuration, interleaved; {network['wall_seconds']:.0f} s in all.",
            "",
        ]
        rows = [
            [
                f"{100 * r['density']:g}%",
                r["provider"],
                f"{r['min_ms']:.3f}",
                f"{r['median_ms']:.3f}",
                "" if r["baseline"] == r["provider"] else f"{r['vs_baseline_min']:.2f}x",
                f"{r['vs_torch_dense_min']:.2f}x",
                modes_summary(r["layer_modes"]),
            ]
            for r in network["rows"]
        ]
        lines += result_files.markdown_table(
            [
                "density",
                "provider",
                "min ms",
                "median ms",
                "vs baseline",
                "vs torch dense",
                "layer modes",
            ],
            rows,
        ) + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    output = result_files.output_directory(args.output)
    results = {
        "benchmark": "steps",
        "quick": args.quick,
        "machine": result_files.describe(),
        "networks": {},
    }
    for name in args.networks:
        network = step_setups.quick(NETWORKS[name]) if args.quick else NETWORKS[name]
        print(
            f"{name}: {args.rounds} rounds x {network.steps_per_round} steps ...",
            file=sys.stderr,
            flush=True,
        )
        results["networks"][name] = time_network(network, args.rounds)
        # Written after each network, so a long run keeps what it has measured.
        result_files.write_results(output, JSON_NAME, results, MARKDOWN_NAME, markdown(results))
    print(output / MARKDOWN_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
