"""Iterative magnitude pruning in plain PyTorch, open_lth style: the baseline of
``benchmarks.imp_vs_torch``. ``python -m benchmarks.plain_imp --json FILE``.

The same work as the default ``sparse-tickets imp``: LeNet-300-100 (``nn.Linear`` layers that
multiply the weight by the 0/1 mask before every forward) on the embedded mnist5k digits
(loaded with ``sparse_tickets.data.load``, the only library code used), Glorot normal weights
and zero biases from the model seed, torch.optim.Adam (lr 1.2e-3), batch 60 drawn from a
permutation per epoch seeded by (data seed, epoch), 1,000 iterations per level, validation
and test evaluated (chunks of 1,000) at iteration 0 and every 50, early stopping at the
minimum validation loss; layerwise magnitude pruning of 20% of each hidden layer's remaining
weights and 10% of the output layer's per level, rewinding to the initialisation; then the
random-reinitialisation control at every pruned level (same masks, a fresh initialisation).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparse_tickets.data import load

from .plain_torch import MASK_MULTIPLY, LeNet300100, prunable_layers

EVAL_CHUNK = 1000


def seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def initialised_model(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LeNet300100(MASK_MULTIPLY)
        for layer in prunable_layers(model).values():
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
    return model


def batch_indices(
    iteration: int, size: int, batch_size: int, data_seed: int, cache: dict
) -> torch.Tensor:
    """Epoch ``e`` visits the training set in a permutation seeded by (data seed, ``e``)."""
    per_epoch = size // batch_size
    epoch, position = divmod(iteration, per_epoch)
    if cache.get("epoch") != epoch:
        generator = torch.Generator().manual_seed(seed_of(data_seed, epoch))
        cache.update(epoch=epoch, permutation=torch.randperm(size, generator=generator))
    return cache["permutation"][position * batch_size : (position + 1) * batch_size]


@torch.no_grad()
def evaluate(model: nn.Module, split) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(split), EVAL_CHUNK):
        x, y = split.batch(torch.arange(start, min(start + EVAL_CHUNK, len(split))))
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum().item())
    model.train()
    return loss / len(split), correct / len(split)


def train_level(model: nn.Module, splits, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    cache, evaluations = {}, []
    loss_sum = torch.zeros((), dtype=torch.float64)

    def record(iteration: int) -> None:
        row = {"iteration": iteration}
        for name, split in (("val", splits.val), ("test", splits.test)):
            row[f"{name}_loss"], row[f"{name}_accuracy"] = evaluate(model, split)
        evaluations.append(row)

    record(0)
    model.train()
    for iteration in range(1, args.iterations + 1):
        x, y = splits.train.batch(
            batch_indices(iteration - 1, len(splits.train), args.batch_size, args.data_seed, cache)
        )
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
        if iteration % args.eval_every == 0 or iteration == args.iterations:
            record(iteration)
    best = min(evaluations, key=lambda row: row["val_loss"])
    return {
        "early_stop_iteration": best["iteration"],
        "early_stop_test_accuracy": best["test_accuracy"],
        "final_test_accuracy": evaluations[-1]["test_accuracy"],
        "wall_time_seconds": time.perf_counter() - started,
    }


@torch.no_grad()
def prune_layerwise(model: nn.Module, fractions: dict) -> None:
    """Remove ``round(f * remaining)`` of each layer's lowest-magnitude kept weights."""
    for name, layer in prunable_layers(model).items():
        kept = layer.mask.bool().reshape(-1)
        remaining = int(kept.sum())
        count = math.floor(Fraction(repr(fractions[name])) * remaining + Fraction(1, 2))
        positions = kept.nonzero().squeeze(1)
        scores = layer.weight.abs().reshape(-1)[positions]
        lowest = positions[torch.sort(scores, stable=True).indices[:count]]
        layer.mask.view(-1)[lowest] = 0.0


def start_level(seed: int, masks: dict) -> nn.Module:
    """A fresh model from ``seed`` with ``masks`` (layer -> 0/1 float) and its pruned
    weights zeroed: the rewind to the initialisation, or a control's reinitialisation."""
    model = initialised_model(seed)
    with torch.no_grad():
        for name, layer in prunable_layers(model).items():
            layer.mask.copy_(masks[name])
            layer.weight.mul_(layer.mask)
    return model


def density(masks: dict) -> float:
    return sum(float(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    splits = load("mnist5k")
    fractions = {
        "hidden.1": args.fc_fraction,
        "hidden.3": args.fc_fraction,
        "output": args.output_fraction,
    }
    model = initialised_model(args.model_seed)
    masks = {name: layer.mask.clone() for name, layer in prunable_layers(model).items()}
    levels, level_masks = [], {}
    for level in range(args.levels + 1):
        model = start_level(args.model_seed, masks)
        metrics = train_level(model, splits, args)
        levels.append({"branch": "main", "level": level, "density": density(masks), **metrics})
        level_masks[level] = masks
        prune_layerwise(model, fractions)
        masks = {name: layer.mask.clone() for name, layer in prunable_layers(model).items()}
    for level in range(1, args.levels + 1):
        model = start_level(seed_of(args.control_seed, level), level_masks[level])
        metrics = train_level(model, splits, args)
        levels.append(
            {"branch": "reinit", "level": level, "density": density(level_masks[level]), **metrics}
        )
    return {"levels": levels, "wall_seconds": time.perf_counter() - started}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.plain_imp",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", type=Path, required=True, help="where the results go")
    parser.add_argument("--levels", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=60)
    parser.add_argument("--lr", type=float, default=1.2e-3)
    parser.add_argument("--fc-fraction", type=float, default=0.2)
    parser.add_argument("--output-fraction", type=float, default=0.1)
    parser.add_argument("--model-seed", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--control-seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.json.write_text(json.dumps(run(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
