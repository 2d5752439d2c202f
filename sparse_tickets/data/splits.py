"""The containers every dataset returns: one :class:`ImageSplit` per split, gathered in a
:class:`DatasetSplits`.

Images stay in memory in their stored dtype, uint8 for every dataset here (CIFAR-10's training
set takes 150 MB so, and would take 600 MB as float32), and become normalised float32 only when
read, one item or one whole batch at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

# Rows of float32 images converted to float64 at a time by channel_statistics: bounds the
# temporary memory.
_STATISTICS_CHUNK_ROWS = 4096


class ImageSplit(Dataset):
    """One split of an image dataset: images (N, C, H, W), int64 labels (N,), normalisation.

    ``images`` is uint8 (read as ``value / 255``) or float32 (read as is). ``mean`` and ``std``
    hold one float per channel on that [0, 1] scale; reading an image returns
    ``(pixel - mean[c]) / std[c]`` in float32, computed as one scale and one shift per channel
    (so it may differ from that formula in the last bit).

    ``split[i]`` gives ``(image (C, H, W) float32, label int)`` for ``torch.utils.data``
    pipelines; :meth:`batch` gathers and normalises a whole batch in one vectorised call, which
    is what a training loop that draws its own index batches should use.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise TypeError(f"images must be a 4-D tensor (N, C, H, W); got {_describe(images)}")
        if images.dtype not in (torch.uint8, torch.float32):
            raise TypeError(f"images must be uint8 or float32; got {images.dtype}")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype != torch.int64:
            raise TypeError(f"labels must be a 1-D int64 tensor; got {_describe(labels)}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{images.shape[0]} images but {labels.shape[0]} labels; expected "
                f"one label per image"
            )
        if labels.device != images.device:
            raise ValueError(
                f"labels are on {labels.device} but images on {images.device}; expected one device"
            )
        channels = images.shape[1]
        mean = _per_channel(mean, channels, "mean")
        std = _per_channel(std, channels, "std")
        if any(not s > 0 for s in std):
            raise ValueError(f"std must be positive in every channel; got {std}")
        self.images = images
        self.labels = labels
        self.mean = mean
        self.std = std
        # (pixel * to_unit - mean) / std folded into one scale and one shift per channel.
        to_unit = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0
        self._scale = torch.tensor([to_unit / s for s in std], device=images.device).view(-1, 1, 1)
        self._shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=images.device).view(
            -1, 1, 1
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    @property
    def device(self) -> torch.device:
        """Where the images and labels live."""
        return self.images.device

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        # copy=True: for float32 images, indexing gives a view that mul_ would overwrite.
        image = self.images[index].to(torch.float32, copy=True)
        image.mul_(self._scale).add_(self._shift)
        return image, int(self.labels[index])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float32 images (B, C, H, W) and int64 labels (B,) at ``indices``.

        ``indices`` is a 1-D integer tensor on any device; it is moved to the split's device,
        so a loop can keep a CPU permutation while the split lives on the GPU.
        """
        if (
            not isinstance(indices, torch.Tensor)
            or indices.dim() != 1
            or indices.dtype not in (torch.int64, torch.int32)
        ):
            raise TypeError(
                f"indices must be a 1-D int64 or int32 tensor; got {_describe(indices)}"
            )
        indices = indices.to(self.images.device)
        images = self.images[indices].to(torch.float32)
        return images.mul_(self._scale).add_(self._shift), self.labels[indices]

    def subset(self, indices: torch.Tensor) -> ImageSplit:
        """A new split holding the rows at ``indices`` (copied), with the same normalisation."""
        return ImageSplit(self.images[indices], self.labels[indices], self.mean, self.std)

    def to(self, device: torch.device | str) -> ImageSplit:
        """This split with its images and labels on ``device``, in their stored dtype."""
        return ImageSplit(self.images.to(device), self.labels.to(device), self.mean, self.std)

    def class_counts(self, num_classes: int) -> torch.Tensor:
        """How many examples of each class 0..num_classes-1 this split holds."""
        return torch.bincount(self.labels, minlength=num_classes).cpu()

    def __repr__(self) -> str:
        return (
            f"ImageSplit({len(self)} images of shape {self.image_shape}, "
            f"{self.images.dtype}, on {self.device})"
        )


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset as a training loop sees it: three splits, the image shape, the class count."""

    name: str
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    input_shape: tuple[int, int, int]
    num_classes: int

    def __post_init__(self):
        for split_name in ("train", "val", "test"):
            split = getattr(self, split_name)
            if not isinstance(split, ImageSplit):
                raise TypeError(
                    f"{self.name} {split_name} must be an ImageSplit; got {type(split).__name__}"
                )
            if split.image_shape != tuple(self.input_shape):
                raise ValueError(
                    f"{self.name} {split_name} images have shape "
                    f"{split.image_shape}; expected input_shape "
                    f"{tuple(self.input_shape)}"
                )

    def __repr__(self) -> str:
        return (
            f"DatasetSplits({self.name!r}: train {len(self.train)}, val {len(self.val)}, "
            f"test {len(self.test)}, input_shape {self.input_shape}, "
            f"{self.num_classes} classes)"
        )


def channel_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``images`` (N, C, H, W) on the [0, 1] scale.

    uint8 images count as ``value / 255`` and are summarised exactly through a 256-bin
    histogram per channel; float32 images are accumulated in float64 over chunks of rows. A
    large set is never converted to float as a whole.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(
            f"images must be a non-empty 4-D tensor (N, C, H, W); got {_describe(images)}"
        )
    if images.dtype == torch.uint8:
        levels = torch.arange(256, dtype=torch.float64) / 255.0
        histograms = (
            torch.stack(
                [
                    torch.bincount(images[:, c].reshape(-1), minlength=256)
                    for c in range(images.shape[1])
                ]
            )
            .cpu()
            .to(torch.float64)
        )
        total, total_squares = histograms @ levels, histograms @ levels.square()
    else:
        total = torch.zeros(images.shape[1], dtype=torch.float64)
        total_squares = torch.zeros(images.shape[1], dtype=torch.float64)
        for start in range(0, images.shape[0], _STATISTICS_CHUNK_ROWS):
            chunk = images[start : start + _STATISTICS_CHUNK_ROWS].to(torch.float64)
            total += chunk.sum(dim=(0, 2, 3)).cpu()
            total_squares += chunk.square().sum(dim=(0, 2, 3)).cpu()
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    variance = (total_squares / count - mean.square()).clamp_min(0.0)
    return tuple(mean.tolist()), tuple(variance.sqrt().tolist())


def _per_channel(values: Sequence[float], channels: int, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of {channels} floats; got {values!r}") from None
    if len(values) != channels:
        raise ValueError(f"{name} has {len(values)} values; expected one per channel ({channels})")
    return values


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
