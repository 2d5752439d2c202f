"""``synthetic``: deterministic generated images of any shape, for tests and benchmarks."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from numbers import Integral

import numpy as np
import torch

from .splits import DatasetSplits, ImageSplit, channel_statistics

# Rows generated at a time: bounds the float32 scratch memory for large sets.
_CHUNK_ELEMENTS = 1 << 22


def synthetic(
    input_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    train_size: int = 5_000,
    val_size: int = 1_000,
    test_size: int = 1_000,
    seed: int = 0,
    noise: float = 0.5,
) -> DatasetSplits:
    """A learnable image dataset generated from ``seed``: class prototypes plus noise.

    Each class ``c`` has a prototype image with pixels uniform in [0, 1]; an example of class
    ``c`` is its prototype plus Gaussian noise of standard deviation ``noise``, clipped to
    [0, 1] and stored as uint8 (``round(255 * value)``), like the real datasets. Labels cycle
    through the classes (``i % num_classes``) in a shuffled order, so every split is balanced to
    within one example per class.

    The prototypes and each split draw from their own ``torch.Generator``, seeded by the
    children of ``numpy.random.SeedSequence(seed)``: the same arguments give bit-identical
    data (with the same torch), a different seed gives different data, and one split's size
    does not change the others' contents. Normalisation: per-channel mean and std computed
    from the training split.
    """
    input_shape = _validated_shape(input_shape)
    _check_int("num_classes", num_classes, minimum=1)
    _check_int("train_size", train_size, minimum=1)
    _check_int("val_size", val_size, minimum=0)
    _check_int("test_size", test_size, minimum=0)
    _check_int("seed", seed, minimum=0)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise must be a non-negative number; got {noise!r}")

    _check_fits_in_memory(input_shape, (train_size, val_size, test_size))

    prototype_seed, *split_seeds = _stream_seeds(seed, 4)
    prototypes = torch.rand(
        (num_classes, *input_shape), generator=torch.Generator().manual_seed(prototype_seed)
    )
    generated = [
        _generate(prototypes, size, float(noise), split_seed)
        for size, split_seed in zip((train_size, val_size, test_size), split_seeds)
    ]
    mean, std = channel_statistics(generated[0][0])
    # A constant channel (noise 0, one class) has std 0; leave it unscaled rather than divide.
    std = tuple(s if s > 0 else 1.0 for s in std)
    train, val, test = (ImageSplit(images, labels, mean, std) for images, labels in generated)
    return DatasetSplits("synthetic", train, val, test, input_shape, num_classes)


def _stream_seeds(seed: int, count: int) -> list[int]:
    # SeedSequence.spawn gives statistically independent child seeds, where seed + i would
    # make seed 0's validation stream equal to seed 1's training stream.
    return [
        int(child.generate_state(1, dtype=np.uint64)[0])
        for child in np.random.SeedSequence(int(seed)).spawn(count)
    ]


def _generate(
    prototypes: torch.Tensor, size: int, noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    num_classes, image_shape = prototypes.shape[0], prototypes.shape[1:]
    labels = torch.randperm(size, generator=generator) % num_classes
    images = torch.empty((size, *image_shape), dtype=torch.uint8)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // prototypes[0].numel())
    for start in range(0, size, rows_per_chunk):
        chunk_labels = labels[start : start + rows_per_chunk]
        values = torch.randn((len(chunk_labels), *image_shape), generator=generator)
        values.mul_(noise).add_(prototypes[chunk_labels]).clamp_(0.0, 1.0)
        images[start : start + len(chunk_labels)] = values.mul_(255.0).round_()
    return images, labels


def _validated_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or any(
        isinstance(d, bool) or not isinstance(d, Integral) or d < 1 for d in shape
    ):
        raise ValueError(f"input_shape must be three positive ints (C, H, W); got {input_shape!r}")
    return tuple(int(d) for d in shape)


def _check_fits_in_memory(input_shape: tuple[int, int, int], sizes: Sequence[int]) -> None:
    """Refuse, before allocating, a dataset larger than the machine's memory: torch would fail
    deep in the allocator (or with an int64 overflow) instead of naming the size."""
    needed = sum(sizes) * math.prod(input_shape)  # uint8 images
    available = _physical_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"synthetic data of {' + '.join(map(str, sizes))} examples of shape "
            f"{input_shape} needs {needed / 2**30:.3g} GiB; this machine has "
            f"{available / 2**30:.3g} GiB of memory; expected fewer examples"
        )


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not a POSIX system: no bound
        return None


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}")
