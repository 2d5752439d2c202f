"""Fixed, seeded ways to cut a set of examples into splits.

Every function here draws from its own ``torch.Generator().manual_seed(seed)``, never from the
global generator, so a split depends only on its inputs and the seed: it is the same in every
run, whatever the caller seeded or drew before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .splits import ImageSplit


def holdout_indices(count: int, holdout: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(count)`` into ``(kept, held_out)`` index tensors.

    The rule: ``perm = torch.randperm(count, generator=torch.Generator().manual_seed(seed))``;
    the first ``holdout`` entries of ``perm`` are held out, the rest kept. Both are returned
    sorted, so each split keeps the examples in their original order.
    """
    if not 0 <= holdout <= count:
        raise ValueError(
            f"cannot hold out {holdout} of {count} examples; expected 0 <= holdout <= {count}"
        )
    permutation = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    held_out = permutation[:holdout].sort().values
    kept = permutation[holdout:].sort().values
    return kept, held_out


def stratified_indices(
    labels: torch.Tensor, per_class_counts: Sequence[int], seed: int = 0
) -> list[torch.Tensor]:
    """Cut the examples into ``len(per_class_counts)`` splits with exact per-class counts.

    The rule: one ``torch.Generator().manual_seed(seed)``; for each class ``c`` in ascending
    order, the positions holding ``c`` (in their original order) are shuffled by
    ``torch.randperm`` from that generator; split 0 takes the first ``per_class_counts[0]``
    of them, split 1 the next ``per_class_counts[1]``, and so on. Leftover examples of a class
    go to no split. Each returned index tensor is sorted.
    """
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D; got shape {tuple(labels.shape)}")
    if any(count < 0 for count in per_class_counts):
        raise ValueError(f"per-class counts must be non-negative; got {list(per_class_counts)}")
    needed = sum(per_class_counts)
    generator = torch.Generator().manual_seed(seed)
    splits: list[list[torch.Tensor]] = [[] for _ in per_class_counts]
    for label in torch.unique(labels).tolist():
        positions = torch.nonzero(labels == label).flatten()
        if positions.numel() < needed:
            raise ValueError(
                f"class {label} has {positions.numel()} examples; expected at "
                f"least {needed} for per-class counts {list(per_class_counts)}"
            )
        shuffled = positions[torch.randperm(positions.numel(), generator=generator)]
        start = 0
        for split, count in zip(splits, per_class_counts):
            split.append(shuffled[start : start + count])
            start += count
    return [
        torch.cat(parts).sort().values if parts else torch.empty(0, dtype=torch.int64)
        for parts in splits
    ]


def hold_out_validation(
    train: ImageSplit, validation_size: int, seed: int = 0
) -> tuple[ImageSplit, ImageSplit]:
    """``(train, val)``: ``validation_size`` examples of ``train`` moved into a validation split.

    The examples are chosen by :func:`holdout_indices` with ``seed``, so the same training set
    always gives the same two splits.
    """
    if isinstance(validation_size, bool) or not isinstance(validation_size, int):
        raise TypeError(f"validation_size must be an int; got {type(validation_size).__name__}")
    if not 0 <= validation_size < len(train):
        raise ValueError(
            f"validation_size {validation_size} must be in 0..{len(train) - 1}: "
            f"the training set has {len(train)} examples and must keep at least one"
        )
    kept, held_out = holdout_indices(len(train), validation_size, seed)
    return train.subset(kept), train.subset(held_out)
