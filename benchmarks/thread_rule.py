"""How many threads a CPU kernel call should take: the C++ extension of one source tree against
another's, on the ops whose thread split the rule decides. ``python -m benchmarks.thread_rule``.

The CPU kernels split a call between threads only when its work (multiply-adds) is worth the
fork and join (``threads_for_work`` in kernels/csrc/cpu/common.h). This times the ops that rule
decides for, at shapes and densities the paper's networks reach:

- the compact linear: forward (``spmm`` with bias) and backward (``spmm`` over the transposed
  index for the input gradient, ``sddmm`` for the values' gradient), LeNet-300-100's layers at
  batch 60;
- the direct sparse conv: forward and backward (both gradients), each vectorisation ("batch",
  "width"), on ResNet-20's 3x3 layers for a single image (where the work lies around the
  cut-offs) and for a training batch.

each on 1 and 2 threads, with the extension built from the ``--baseline`` commit's kernel
sources and from the working tree's. Each (tree, threads) pair runs in a process of its own
(two builds of one op library cannot share a process); rounds interleave the processes so that
a slow spell of a shared machine hits every configuration alike, and each figure is the
minimum over rounds of the fastest of many timed calls. On 1 thread the two trees run the
same code path (no rule splits anything), so that column checks that nothing else changed; on
2 threads a case whose call the two rules split differently shows which rule was right, and
the 1-thread time of the new tree is what a rule that left it on one thread would get.

    python -m benchmarks.thread_rule [--baseline REV] [--rounds 5] [--tag TAG] [--output DIR]

writes ``thread_rule.json`` and ``thread_rule.md`` (``thread_rule-TAG.*`` with ``--tag``) into
``benchmarks/results/<device>/`` (the first build of each tree takes minutes; later runs reuse
them). The table's head gives the machine's load average before and after: on a machine
shared with other work, a call on two threads can wait for a core another process holds, and
the 2-thread figures say more about that than about the kernels.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import torch

from benchmarks import result_files
from benchmarks.machine import REPO_ROOT

# (batch, in_features, out_features, density): LeNet-300-100's layers at the paper's batch.
LINEAR_CASES = [
    (60, 784, 300, 0.02),
    (60, 300, 100, 0.02),
    (60, 300, 100, 0.05),
    (60, 100, 10, 0.2),
]
# (batch, channels, image side, density): ResNet-20's 3x3 stride-1 layers (channels in = out).
CONV_CASES = [
    (1, 16, 32, 0.02),
    (1, 32, 16, 0.02),
    (1, 64, 8, 0.02),
    (1, 64, 8, 0.1),
    (16, 64, 8, 0.05),
]
VARIANTS = ("batch", "width")
THREADS = (1, 2)
MIN_CALLS = 20
BUDGET_SECONDS = 0.25
MAX_CALLS = 2000


def best_seconds(call: Callable[[], object]) -> float:
    """The fastest single call of ``call`` (seconds), of at least MIN_CALLS timed calls and as
    many more as BUDGET_SECONDS allows (at most MAX_CALLS). The fastest call, not a mean: on a
    shared machine a call on two threads waits for whichever core another process holds, and
    one such wait costs more than the whole call."""
    for _ in range(3):
        call()
    best, calls, started = float("inf"), 0, time.perf_counter()
    while calls < MIN_CALLS or (
        calls < MAX_CALLS and time.perf_counter() - started < BUDGET_SECONDS
    ):
        before = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - before)
        calls += 1
    return best


def _mask(shape: tuple, density: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator) < density


def linear_calls(batch: int, features_in: int, features_out: int, density: float) -> dict:
    """The compact linear's forward and backward as the op calls the extension makes."""
    from sparse_tickets.compact import CompactIndex

    generator = torch.Generator().manual_seed(0)
    index = CompactIndex.from_mask(_mask((features_out, features_in), density, generator))
    values = torch.randn(index.nnz, generator=generator)
    bias = torch.randn(features_out, generator=generator)
    x = torch.randn(batch, features_in, generator=generator)
    grad_y = torch.randn(batch, features_out, generator=generator)
    ops = torch.ops.sparse_tickets

    def forward():
        return ops.spmm(x, index.row_ptr, index.col_idx, values, None, bias)

    def backward():
        ops.spmm(grad_y, index.t_row_ptr, index.t_col_idx, values, index.t_value_index, None)
        return ops.sddmm(grad_y, x, index.row_ptr, index.col_idx)

    return {"forward": forward, "backward": backward}


def conv_calls(batch: int, channels: int, side: int, density: float, variant: str) -> dict:
    """The direct sparse conv's forward and backward (both gradients), 3x3, padding 1."""
    from sparse_tickets.compact import CompactIndex

    generator = torch.Generator().manual_seed(0)
    index = CompactIndex.from_mask(_mask((channels, channels, 3, 3), density, generator))
    values = torch.randn(index.nnz, generator=generator)
    bias = torch.randn(channels, generator=generator)
    x = torch.randn(batch, channels, side, side, generator=generator)
    grad_y = torch.randn(batch, channels, side, side, generator=generator)
    geometry = ([3, 3], [1, 1], [1, 1], [1, 1], 1)
    ops = torch.ops.sparse_tickets

    def forward():
        return ops.sparse_conv2d(x, index.row_ptr, index.col_idx, values, bias, *geometry, variant)

    def backward():
        return ops.sparse_conv2d_backward(
            grad_y,
            x,
            index.row_ptr,
            index.col_idx,
            index.t_row_ptr,
            index.t_col_idx,
            index.t_value_index,
            values,
            *geometry,
            variant,
            [True, True],
        )

    return {"forward": forward, "backward": backward}


def cases() -> list[tuple[str, Callable[[], dict]]]:
    """(name, the case's calls) for every case, in a fixed order."""
    listed = []
    for batch, features_in, features_out, density in LINEAR_CASES:
        name = f"linear {batch}x{features_in}->{features_out} @{density:g}"
        listed.append(
            (name, lambda a=(batch, features_in, features_out, density): linear_calls(*a))
        )
    for batch, channels, side, density in CONV_CASES:
        for variant in VARIANTS:
            name = f"conv3x3 {batch}x{channels}x{side}x{side} @{density:g} {variant}"
            listed.append(
                (name, lambda a=(batch, channels, side, density, variant): conv_calls(*a))
            )
    return listed


def load_tree(source_root: Path) -> None:
    """Build (or reuse) and load the CPU extension of the kernel sources under source_root."""
    from sparse_tickets.ops.native import extension

    units = tuple(sorted(f"cpu/{path.name}" for path in (source_root / "cpu").glob("*.cpp")))
    spec = dataclasses.replace(extension.CPU, source_root=source_root, sources=units)
    extension.load(spec)


def measure_tree(source_root: Path, threads: int) -> dict:
    """{case: {op: seconds}} for the extension of source_root on `threads` threads."""
    load_tree(source_root)
    torch.set_num_threads(threads)
    results = {}
    for name, make_calls in cases():
        results[name] = {op: best_seconds(call) for op, call in make_calls().items()}
    return results


def extract_sources(revision: str, directory: Path) -> Path:
    """The kernel sources (kernels/csrc) of a commit, written under directory; their root."""
    archive = subprocess.run(
        ["git", "archive", revision, "kernels/csrc"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return directory / "kernels" / "csrc"


def run_child(source_root: Path, threads: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.thread_rule",
        "--child",
        str(source_root),
        "--threads",
        str(threads),
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"a measuring process failed ({' '.join(command)}):\n{result.stderr}")
    return json.loads(result.stdout.splitlines()[-1])


def measure(trees: dict[str, Path], rounds: int) -> dict:
    """{tree: {threads: {case: {op: seconds}}}}: per figure the minimum over rounds; the order
    of the (tree, threads) processes alternates from round to round."""
    configs = [(tree, threads) for threads in THREADS for tree in trees]
    best: dict = {tree: {threads: {} for threads in THREADS} for tree in trees}
    for round_number in range(rounds):
        order = configs if round_number % 2 == 0 else configs[::-1]
        for tree, threads in order:
            measured = run_child(trees[tree], threads)
            for case, ops in measured.items():
                kept = best[tree][threads].setdefault(case, {})
                for op, seconds in ops.items():
                    kept[op] = min(seconds, kept.get(op, float("inf")))
        print(f"round {round_number + 1}/{rounds} done", file=sys.stderr, flush=True)
    return best


def table(best: dict) -> list[str]:
    header = ["case", "op"] + [f"{tree} {threads}t (us)" for threads in THREADS for tree in best]
    header += ["new 2t / new 1t", "new 2t / old 2t"]
    rows = []
    for case, ops in best["new"][THREADS[0]].items():
        for op in ops:
            figure = {
                (tree, threads): best[tree][threads][case][op]
                for tree in best
                for threads in THREADS
            }
            cells = [f"{1e6 * figure[tree, threads]:.1f}" for threads in THREADS for tree in best]
            rows.append(
                [case, op]
                + cells
                + [
                    f"{figure['new', 2] / figure['new', 1]:.2f}",
                    f"{figure['new', 2] / figure['old', 2]:.2f}",
                ]
            )
    return result_files.markdown_table(header, rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--baseline",
        default="main",
        help="the commit whose kernel sources are the old rule (default: main)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--tag", default=None, help="name the files thread_rule-TAG.* (e.g. the rule measured)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="directory for the results (default benchmarks/results/<device>/)",
    )
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure_tree(args.child, args.threads)))
        return
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as directory:
        trees = {
            "old": extract_sources(args.baseline, Path(directory)),
            "new": REPO_ROOT / "kernels" / "csrc",
        }
        best = measure(trees, args.rounds)
    described = result_files.describe()
    seconds = {
        tree: {str(threads): by_case for threads, by_case in by_threads.items()}
        for tree, by_threads in best.items()
    }
    load_after = os.getloadavg()[0]
    results = {
        **described,
        "baseline": args.baseline,
        "rounds": args.rounds,
        "load_average": [load_before, load_after],
        "seconds": seconds,
    }
    lines = ["# Thread rule: old kernel sources against new", ""]
    lines += result_files.machine_lines(described)
    lines += [
        f"- old: the kernel sources of `{args.baseline}`; new: the measured tree",
        f"- {args.rounds} interleaved rounds, one process per (tree, threads) each; "
        f"the minimum over rounds of the fastest of at least {MIN_CALLS} calls "
        f"({BUDGET_SECONDS} s per case and round)",
        f"- load average (1 min) before and after: {load_before:.1f}, {load_after:.1f} "
        f"on {os.cpu_count()} logical CPUs",
        "",
    ]
    lines += table(best) + [""]
    output = result_files.output_directory(args.output)
    stem = f"thread_rule-{args.tag}" if args.tag else "thread_rule"
    result_files.write_results(output, f"{stem}.json", results, f"{stem}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
