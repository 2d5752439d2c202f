"""The layer shapes the suites time: layers of the networks in Frankle & Carbin (ICLR 2019,
Figure 2), each at the batch size the paper trains it with, plus one large layer.

A convolution is timed two ways: as itself (:class:`ConvShape`) and as the matrix product an
im2col implementation runs (:class:`GemmShape` via :meth:`ConvShape.as_gemm`): rows
M = batch * H_out * W_out, reduction K = C_in * kH * kW, columns N = C_out. The GEMM view is
what a sparse linear kernel faces when it serves a conv layer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GemmShape:
    """``x (batch, in_features) @ W^T``, W of shape ``(out_features, in_features)``."""

    name: str
    batch: int
    in_features: int
    out_features: int

    @property
    def label(self) -> str:
        return f"{self.name} {self.batch}x{self.in_features}->{self.out_features}"


@dataclass(frozen=True)
class ConvShape:
    """A 3x3 (by default) convolution of a ``(batch, in_channels, size, size)`` input."""

    name: str
    batch: int
    in_channels: int
    out_channels: int
    size: int
    kernel: int = 3
    stride: int = 1
    padding: int = 1

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def label(self) -> str:
        return (
            f"{self.name} {self.batch}x{self.in_channels}x{self.size}x{self.size}"
            f"->{self.out_channels} k{self.kernel}"
        )

    def as_gemm(self) -> GemmShape:
        """The im2col matrix product of this convolution."""
        return GemmShape(
            f"{self.name} (GEMM)",
            self.batch * self.out_size**2,
            self.in_channels * self.kernel**2,
            self.out_channels,
        )


# Batch sizes of the paper: 60 for LeNet and Conv-2/4/6, 64 for VGG-19, 128 for ResNet-20.
LENET_BATCH, CONV6_BATCH, VGG19_BATCH, RESNET20_BATCH = 60, 60, 64, 128

# LeNet-300-100 on MNIST: fc1 takes the 28x28 image (784) to 300 units.
LENET_FC1 = GemmShape("lenet_300_100.fc1", LENET_BATCH, 784, 300)

# Conv-6 on CIFAR-10 (64, 64, pool, 128, 128, pool, 256, 256, pool): the second conv of the
# first stage at 32x32 and the last conv, 256 -> 256 at 8x8.
CONV6_LAYERS = (
    ConvShape("conv6.conv2", CONV6_BATCH, 64, 64, 32),
    ConvShape("conv6.conv6", CONV6_BATCH, 256, 256, 8),
)

# VGG-19 on CIFAR-10: the first conv (3 -> 64 at 32x32), a middle one of the third stage
# (256 -> 256 at 8x8) and one of the last stage (512 -> 512 at 2x2).
VGG19_LAYERS = (
    ConvShape("vgg19.conv1", VGG19_BATCH, 3, 64, 32),
    ConvShape("vgg19.conv7", VGG19_BATCH, 256, 256, 8),
    ConvShape("vgg19.conv16", VGG19_BATCH, 512, 512, 2),
)

# ResNet-20 on CIFAR-10: one 3x3 conv of each stage's basic blocks (16 channels at 32x32, 32 at
# 16x16, 64 at 8x8).
RESNET20_LAYERS = (
    ConvShape("resnet20.stage1", RESNET20_BATCH, 16, 16, 32),
    ConvShape("resnet20.stage2", RESNET20_BATCH, 32, 32, 16),
    ConvShape("resnet20.stage3", RESNET20_BATCH, 64, 64, 8),
)

# A layer as large as those of big fully connected heads, at a training batch and a larger one.
LARGE_BATCH64 = GemmShape("large", 64, 4096, 4096)
LARGE_BATCH512 = GemmShape("large", 512, 4096, 4096)

# Tiny stand-ins with awkward sizes, for the smoke test of the suites.
TINY_GEMM = GemmShape("tiny", 5, 7, 3)
TINY_CONV = ConvShape("tiny", 2, 3, 4, 5)
# The smallest weight every 2:4 layout of torch takes (CUTLASS: 32 x 64), at an odd batch.
TINY_2TO4 = GemmShape("tiny", 5, 64, 32)

# Densities of the paper's IMP levels at 20% pruned per level (0.8^n: levels 0, 3, 7, 11, 15,
# 19), which the end-to-end suite walks down.
IMP_DENSITIES = (1.0, 0.512, 0.21, 0.086, 0.035, 0.014)

# Sparsities (fraction of weights pruned) of the per-op suites.
SPARSITIES = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99)

# Sparsities of the single-layer training step: where a compact level should pay off.
TRAIN_STEP_SPARSITIES = (0.9, 0.95, 0.98)
