"""K replicates in one process against K processes: ``python -m benchmarks.replicates``.

The paper's figures are means of several trials. For a small network at high sparsity a
training step is mostly fixed cost (Python, dispatch, the optimizer's bookkeeping), so K
replicates might train faster as one stacked network in one process than as K processes. This
measures it for LeNet-300-100 (batch 60, Adam), per density and K, as the throughput of
replicate-steps (one replicate's training step; K of them per stacked step):

- ``--trials K``: what ``sparse-tickets imp --trials K`` runs: ``P = min(K, threads)``
  processes at a time (one per core), each on ``threads // P`` threads, in waves until K
  replicates have trained (each wave's time is its slowest process's);
- ``K processes``: all K worker processes started together (a barrier after their warm-up),
  each training one ordinary masked LeNet (our layers, dense mode at 100% and compact below)
  with MaskedAdam on ``max(1, threads // K)`` threads (oversubscribed when K > threads);
- ``K sequential``: one process on all threads training one replicate; K of them one after
  the other (the time of one, times K): what a loop over seeds by hand runs;
- ``stacked block-diagonal``: one process, one network whose layers hold the K replicates'
  weights as blocks of one block-diagonal masked weight (784K -> 300K -> 100K -> 10K), each
  replicate's batch a slice of the input's features; compact mode, so one kernel call serves
  all K compact indices and MaskedAdam steps all K at once;
- ``stacked bmm``: one process, plain torch: the K replicates' weights as (K, out, in) tensors,
  ``torch.baddbmm`` forward, the mask multiplied in, ``torch.optim.Adam``.

The stacked forms compute each replicate's loss on its own batch and sum them, so each block
gets exactly its replicate's gradient; ``--check`` trains the block-diagonal form and K
separate networks from the same starts on the same batches and prints the largest weight
difference. ``--configs`` picks the configurations (the first is the baseline of the
ratios). The last table estimates a whole IMP run (LeNet's 20% per level from 100% to 3.5%, 16
levels of equal length) from the measured densities, interpolated in log density. Writes
``replicates.json`` and ``replicates.md`` into
``benchmarks/results/<device slug>/`` (or ``--output``).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import sparse_tickets
from sparse_tickets.optim import MaskedAdam
from sparse_tickets.pruning import Masks, prune_to_density, weights_of

from . import result_files

JSON_NAME, MARKDOWN_NAME = "replicates.json", "replicates.md"
WIDTHS = (784, 300, 100, 10)
BATCH = 60
LR = 1.2e-3
DENSITIES = (1.0, 0.21, 0.035)
KS = (2, 4)
BATCHES = 4
CONFIGS = ("--trials K", "K processes", "K sequential", "stacked block-diagonal", "stacked bmm")
# The densities of an IMP run pruning 20% per level to 3.5% (LeNet-300-100 in the paper).
IMP_RUN_DENSITIES = tuple(0.8**level for level in range(16))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.replicates",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--ks",
        default=",".join(map(str, KS)),
        help=f"comma-separated replicate counts K (default: {','.join(map(str, KS))})",
    )
    parser.add_argument(
        "--densities",
        default=",".join(map(str, DENSITIES)),
        help="comma-separated densities (default: 1.0,0.21,0.035)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=300,
        help="timed steps per configuration and round (default: 300)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default: 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help="comma-separated configurations to time, the baseline first (default: all)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="also check the block-diagonal form against K separate networks",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="folder for the results (default: benchmarks/results/<device>)",
    )
    args = parser.parse_args(argv)
    args.ks = [int(k) for k in args.ks.split(",") if k.strip()]
    args.densities = [float(d) for d in args.densities.split(",") if d.strip()]
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown or not args.configs:
        parser.error(
            f"--configs: {', '.join(unknown) or 'empty'}; expected some of {', '.join(CONFIGS)}"
        )
    return args


# --- the networks ------------------------------------------------------------------------


def replicate_masks(density: float, seed: int) -> Masks:
    """Layerwise magnitude masks of replicate ``seed``'s initialisation at ``density``."""
    model = replicate(seed)
    masks = Masks.from_model(model)
    return masks if density >= 1.0 else prune_to_density(weights_of(model), masks, density)


def replicate(seed: int, masks: Masks | None = None) -> nn.Sequential:
    """One ordinary masked LeNet-300-100 (flattened input), initialised from ``seed``."""
    torch.manual_seed(seed)
    layers = []
    for index, (width_in, width_out) in enumerate(zip(WIDTHS, WIDTHS[1:])):
        layers.append(sparse_tickets.MaskedLinear(width_in, width_out))
        if index < len(WIDTHS) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    if masks is not None:
        masks.apply_to(model)
    return model


def masked_linears(model: nn.Module) -> list:
    return [layer for layer in model if isinstance(layer, sparse_tickets.MaskedLinear)]


def block_diagonal(replicates: list[nn.Sequential]) -> nn.Sequential:
    """One network holding ``replicates`` as diagonal blocks of each layer's weight, their
    masks as the blocks of its mask (everything off the diagonal pruned)."""
    k = len(replicates)
    layers = []
    for index, (width_in, width_out) in enumerate(zip(WIDTHS, WIDTHS[1:])):
        stacked = sparse_tickets.MaskedLinear(k * width_in, k * width_out)
        weight = torch.zeros(k * width_out, k * width_in)
        mask = torch.zeros(k * width_out, k * width_in, dtype=torch.bool)
        with torch.no_grad():
            for r, model in enumerate(replicates):
                layer = masked_linears(model)[index]
                rows = slice(r * width_out, (r + 1) * width_out)
                columns = slice(r * width_in, (r + 1) * width_in)
                weight[rows, columns] = layer.weight
                mask[rows, columns] = layer.mask
                stacked.bias[rows] = layer.bias
            stacked.weight.copy_(weight)
        stacked.set_mask(mask)
        layers.append(stacked)
        if index < len(WIDTHS) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def diagonal_blocks(stacked: nn.Sequential, k: int) -> list[list[torch.Tensor]]:
    """Replicate r's weights, per layer, out of a block-diagonal network."""
    blocks = [[] for _ in range(k)]
    for index, layer in enumerate(masked_linears(stacked)):
        width_in, width_out = WIDTHS[index], WIDTHS[index + 1]
        weight = layer.weight.detach()
        for r in range(k):
            blocks[r].append(
                weight[r * width_out : (r + 1) * width_out, r * width_in : (r + 1) * width_in]
            )
    return blocks


class StackedBmm(nn.Module):
    """K LeNets as (K, out, in) weights, in plain torch: the mask multiplied in."""

    def __init__(self, replicates: list[nn.Sequential]) -> None:
        super().__init__()
        linears = [masked_linears(model) for model in replicates]
        count = len(WIDTHS) - 1
        self.weights = nn.ParameterList(
            [
                nn.Parameter(torch.stack([layers[i].weight.detach() for layers in linears]))
                for i in range(count)
            ]
        )
        self.biases = nn.ParameterList(
            [
                nn.Parameter(
                    torch.stack([layers[i].bias.detach() for layers in linears]).unsqueeze(1)
                )
                for i in range(count)
            ]
        )
        for i in range(count):
            self.register_buffer(f"mask_{i}", torch.stack([layers[i].mask for layers in linears]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (K, B, 784)
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            masked = weight * getattr(self, f"mask_{i}")
            x = torch.baddbmm(bias, x, masked.transpose(1, 2))
            if i < len(self.weights) - 1:
                x = F.relu(x)
        return x


# --- the steps ---------------------------------------------------------------------------


def batches(k: int, count: int = BATCHES) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """``count`` batches per replicate (replicate r's from seed r), made before timing."""
    result = []
    for r in range(k):
        generator = torch.Generator().manual_seed(100 + r)
        result.append(
            [
                (
                    torch.randn(BATCH, WIDTHS[0], generator=generator),
                    torch.randint(0, WIDTHS[-1], (BATCH,), generator=generator),
                )
                for _ in range(count)
            ]
        )
    return result


def single_step(model, optimizer, batch) -> None:
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def stacked_input(per_replicate: list, index: int, stack_dim: int):
    """Replicate r's batch ``index`` as slice r of one input; targets as (B, K) or (K, B)."""
    xs = [batches_[index][0] for batches_ in per_replicate]
    ys = [batches_[index][1] for batches_ in per_replicate]
    return torch.cat(xs, dim=1) if stack_dim == 1 else torch.stack(xs), torch.stack(ys, dim=1)


def block_diagonal_step(model, optimizer, batch, k: int) -> None:
    x, y = batch
    optimizer.zero_grad(set_to_none=True)
    logits = model(x).view(BATCH, k, WIDTHS[-1])
    # The sum of the replicates' mean losses: block r gets exactly replicate r's gradient.
    loss = F.cross_entropy(logits.permute(0, 2, 1), y, reduction="sum") / BATCH
    loss.backward()
    optimizer.step()


def bmm_step(model, optimizer, batch) -> None:
    x, y = batch  # x: (K, B, 784), y: (B, K)
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)  # (K, B, 10)
    loss = F.cross_entropy(logits.permute(1, 2, 0), y, reduction="sum") / BATCH
    loss.backward()
    optimizer.step()


def _timed(step, inputs: list, steps: int) -> float:
    for i in range(3):  # warm-up: auto decisions, allocator, first-call costs
        step(inputs[i % len(inputs)])
    started = time.perf_counter()
    for i in range(steps):
        step(inputs[i % len(inputs)])
    return time.perf_counter() - started


def _ordinary(density: float, seed: int):
    model = replicate(seed, replicate_masks(density, seed))
    for layer in masked_linears(model):
        layer.set_mode("dense" if density >= 1.0 else "compact")
    model.train()
    return model, MaskedAdam(model.parameters(), lr=LR, masks=model)


def _worker(density: float, seed: int, threads: int, steps: int, barrier, results) -> None:
    torch.set_num_threads(threads)
    model, optimizer = _ordinary(density, seed)
    inputs = batches(seed + 1)[seed]
    for i in range(3):
        single_step(model, optimizer, inputs[i % len(inputs)])
    barrier.wait()
    started = time.perf_counter()
    for i in range(steps):
        single_step(model, optimizer, inputs[i % len(inputs)])
    results.put(time.perf_counter() - started)


def _concurrent(density: float, seeds: range, threads_each: int, steps: int) -> float:
    """Wall seconds for one worker process per seed to train ``steps`` steps each, from a
    common start after their warm-up (the longest worker's time)."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(seeds)), context.Queue()
    workers = [
        context.Process(target=_worker, args=(density, r, threads_each, steps, barrier, results))
        for r in seeds
    ]
    for worker in workers:
        worker.start()
    times = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    return max(times)


def time_processes(density: float, k: int, threads: int, steps: int) -> float:
    return _concurrent(density, range(k), max(1, threads // k), steps)


def time_trials(density: float, k: int, threads: int, steps: int) -> float:
    """As ``--trials K`` runs them: waves of one process per core, the cores split."""
    at_once = min(k, threads)
    return sum(
        _concurrent(density, range(start, min(start + at_once, k)), threads // at_once, steps)
        for start in range(0, k, at_once)
    )


def time_sequential(density: float, k: int, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    model, optimizer = _ordinary(density, 0)
    inputs = batches(1)[0]
    return k * _timed(lambda batch: single_step(model, optimizer, batch), inputs, steps)


def time_block_diagonal(density: float, k: int, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    model = block_diagonal([replicate(r, replicate_masks(density, r)) for r in range(k)])
    for layer in masked_linears(model):
        layer.set_mode("compact")
    model.train()
    optimizer = MaskedAdam(model.parameters(), lr=LR, masks=model)
    per_replicate = batches(k)
    inputs = [stacked_input(per_replicate, i, 1) for i in range(BATCHES)]
    return _timed(lambda batch: block_diagonal_step(model, optimizer, batch, k), inputs, steps)


def time_bmm(density: float, k: int, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    model = StackedBmm([replicate(r, replicate_masks(density, r)) for r in range(k)])
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    per_replicate = batches(k)
    inputs = [stacked_input(per_replicate, i, 0) for i in range(BATCHES)]
    return _timed(lambda batch: bmm_step(model, optimizer, batch), inputs, steps)


TIMERS = {
    "--trials K": time_trials,
    "K processes": time_processes,
    "K sequential": time_sequential,
    "stacked block-diagonal": time_block_diagonal,
    "stacked bmm": time_bmm,
}


def check_block_diagonal(density: float, k: int, steps: int = 20) -> float:
    """The largest difference between the block-diagonal form's blocks and K separate
    networks after ``steps`` steps from the same starts on the same batches."""
    separate = [_ordinary(density, r) for r in range(k)]
    model = block_diagonal([m for m, _ in separate])
    for layer in masked_linears(model):
        layer.set_mode("compact" if density < 1.0 else "dense")
    optimizer = MaskedAdam(model.parameters(), lr=LR, masks=model)
    per_replicate = batches(k)
    for i in range(steps):
        for r, (m, o) in enumerate(separate):
            single_step(m, o, per_replicate[r][i % BATCHES])
        block_diagonal_step(model, optimizer, stacked_input(per_replicate, i % BATCHES, 1), k)
    worst = 0.0
    for r, blocks in enumerate(diagonal_blocks(model, k)):
        for layer, block in zip(masked_linears(separate[r][0]), blocks):
            worst = max(worst, (layer.weight.detach() - block).abs().max().item())
    return worst


# --- the run -----------------------------------------------------------------------------


def measure(args) -> list[dict]:
    rows = []
    for density in args.densities:
        for k in args.ks:
            configs = args.configs
            seconds = {config: [] for config in configs}
            for round_ in range(args.rounds):
                order = configs[round_ % len(configs) :] + configs[: round_ % len(configs)]
                for config in order:
                    seconds[config].append(TIMERS[config](density, k, args.threads, args.steps))
            for config in configs:
                best = min(seconds[config])
                rows.append(
                    {
                        "density": density,
                        "k": k,
                        "config": config,
                        "seconds_min": best,
                        "seconds_median": statistics.median(seconds[config]),
                        "us_per_replicate_step": best / (k * args.steps) * 1e6,
                    }
                )
            print(
                f"density {density:.3f}, K {k}: "
                + ", ".join(
                    f"{r['config']} {r['us_per_replicate_step']:.0f} us"
                    for r in rows[-len(configs) :]
                ),
                flush=True,
            )
    return rows


def per_step(rows: list[dict], density: float, k: int) -> dict:
    """Microseconds per replicate-step of each configuration at ``density`` and ``k``."""
    return {
        r["config"]: r["us_per_replicate_step"]
        for r in rows
        if r["density"] == density and r["k"] == k
    }


def whole_run(results: dict, k: int, config: str) -> float:
    """Seconds per replicate for 1,000 iterations of each level of the IMP run's densities,
    each level's step time interpolated linearly in log density between the measured ones
    (the nearest measured one outside their range)."""
    measured = sorted(
        (math.log(d), per_step(results["rows"], d, k)[config]) for d in results["densities"]
    )
    total = 0.0
    for density in IMP_RUN_DENSITIES:
        x = math.log(density)
        if x <= measured[0][0]:
            us = measured[0][1]
        elif x >= measured[-1][0]:
            us = measured[-1][1]
        else:
            (x0, y0), (x1, y1) = next(
                (a, b) for a, b in zip(measured, measured[1:]) if a[0] <= x <= b[0]
            )
            us = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        total += us * 1000 / 1e6
    return total


def markdown(results: dict) -> str:
    configs = results["configs"]
    baseline = configs[0]
    lines = [
        "# K replicates in one process against K processes (LeNet-300-100, batch 60, Adam)",
        "",
        *result_files.machine_lines(results["machine"]),
        f"- {results['steps']} timed steps per configuration, min of "
        f"{results['rounds']} rounds (configurations interleaved)",
        "",
        f"Time per replicate-step (lower is faster); ratio: {baseline}'s time / this "
        f"one's (above 1: faster than {baseline}).",
        "",
    ]
    header = ["density", "K", *[f"{c} us" for c in configs], *[f"{c} ratio" for c in configs[1:]]]
    table = []
    for density in results["densities"]:
        for k in results["ks"]:
            row = per_step(results["rows"], density, k)
            table.append(
                [
                    f"{density * 100:.1f}%",
                    k,
                    *[f"{row[c]:.0f}" for c in configs],
                    *[f"{row[baseline] / row[c]:.2f}x" for c in configs[1:]],
                ]
            )
    lines += result_files.markdown_table(header, table)
    if len(results["densities"]) > 1:
        lines += [
            "",
            f"A whole IMP run estimated from these densities ({len(IMP_RUN_DENSITIES)} "
            f"levels of equal length, 20% pruned per level, 100% to "
            f"{IMP_RUN_DENSITIES[-1] * 100:.1f}%; each level's time interpolated in "
            f"log density): seconds per 1,000 iterations of every level, per "
            f"replicate.",
            "",
        ]
        run_table = []
        for k in results["ks"]:
            totals = {c: whole_run(results, k, c) for c in configs}
            run_table.append(
                [
                    k,
                    *[f"{totals[c]:.1f}" for c in configs],
                    *[f"{totals[baseline] / totals[c]:.2f}x" for c in configs[1:]],
                ]
            )
        lines += result_files.markdown_table(
            ["K", *[f"{c} s" for c in configs], *[f"{c} ratio" for c in configs[1:]]], run_table
        )
    if results.get("checks"):
        lines += [
            "",
            "Block-diagonal form against K separate networks after 20 steps "
            "(largest weight difference):",
            "",
        ]
        lines += [
            f"- density {c['density'] * 100:.1f}%, K {c['k']}: {c['max_difference']:.2e}"
            for c in results["checks"]
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    checks = []
    if args.check:
        for density in args.densities:
            for k in args.ks:
                checks.append(
                    {"density": density, "k": k, "max_difference": check_block_diagonal(density, k)}
                )
                print(f"check density {density}, K {k}: {checks[-1]['max_difference']:.2e}")
    rows = measure(args)
    results = {
        "machine": result_files.describe(),
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": args.threads,
        "ks": args.ks,
        "densities": args.densities,
        "configs": args.configs,
        "rows": rows,
        "checks": checks,
        "wall_seconds": time.perf_counter() - started,
    }
    output = result_files.output_directory(args.output)
    result_files.write_results(output, JSON_NAME, results, MARKDOWN_NAME, markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
