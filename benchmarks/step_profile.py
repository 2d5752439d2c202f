"""Where a LeNet-300-100 training step's time goes: ``python -m benchmarks.step_profile``.

At 100% and 3.5% density, plain torch (dense at 100%, mask-multiply at 3.5%) and ours in the
dense and compact modes (``step_setups``), each warmed up, timed without the profiler, then run
under ``torch.profiler`` (CPU). Writes ``step_profile.md`` into ``benchmarks/results/<device
slug>/`` (or ``--output``): per configuration, the wall time per step, the self CPU time the
profiler attributes to ops per step, the gap between the two (Python and dispatch outside any
op), and the top ops by self CPU time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from . import result_files, step_setups
from .step_setups import NETWORKS, TORCH, TORCH_MASK_MULTIPLY

MARKDOWN_NAME = "step_profile.md"
DENSITIES = (1.0, 0.035)
PROVIDERS = ("ours dense", "ours compact")
TOP_OPS = 15


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step_profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=200, help="profiled steps (default: 200)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--quick", action="store_true", help="5 steps: checks it runs")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="folder for step_profile.md (default: benchmarks/results/<device slug>)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 5
    return args


def profile_setup(setup: step_setups.Setup, data: list, steps: int) -> list[str]:
    for index in range(max(steps // 4, 2)):
        setup.step(data[index % len(data)])
    begin = time.perf_counter()
    for index in range(steps):
        setup.step(data[index % len(data)])
    wall_ms = 1e3 * (time.perf_counter() - begin) / steps
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for index in range(steps):
            setup.step(data[index % len(data)])
    averages = profiler.key_averages()
    ops_ms = sum(event.self_cpu_time_total for event in averages) / 1e3 / steps
    table = averages.table(sort_by="self_cpu_time_total", row_limit=TOP_OPS)
    return [
        f"## {setup.provider} at {100 * setup.density:g}%",
        "",
        f"- wall time per step, not profiled: {wall_ms:.3f} ms",
        f"- self CPU time of all profiled ops per step: {ops_ms:.3f} ms (the profiler's "
        f"own cost included); outside any op (Python, hooks): about "
        f"{max(wall_ms - ops_ms, 0):.3f} ms",
        f"- layer modes: {setup.layer_modes or 'plain torch layers'}",
        "",
        "```",
        table.rstrip(),
        "```",
        "",
    ]


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    output = result_files.output_directory(args.output)
    network = NETWORKS["lenet"]
    data = step_setups.batches(network, 4)
    described = result_files.describe()
    lines = [
        "# Where a LeNet-300-100 training step's time goes",
        "",
        *result_files.machine_lines(described),
        "",
        f"Batch {network.batch_size}, Adam; {args.steps} steps profiled per "
        f"configuration (torch.profiler, CPU), top {TOP_OPS} ops by self CPU time. Times "
        f"in the tables are totals over the profiled steps.",
        "",
    ]
    for density in DENSITIES:
        masks = step_setups.masks_at(network, density)
        baseline = TORCH if density == 1.0 else TORCH_MASK_MULTIPLY
        for provider in (baseline,) + PROVIDERS:
            setup = step_setups.build(network, provider, density, masks)
            lines += profile_setup(setup, data, args.steps)
    result_files.write_atomically(output / MARKDOWN_NAME, "\n".join(lines))
    print(output / MARKDOWN_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
