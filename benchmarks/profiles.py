"""Which shapes, sparsities and dtypes a run times: one :class:`Profile` per kind of run.

``cuda`` times everything, in fp32 and bf16; ``cpu`` times the same shapes in fp32 and skips
what a few CPU cores cannot train in a 10-minute run (named in ``Profile.omitted``, so the
report says so); ``quick`` swaps in tiny shapes so that every benchmark runs in seconds (the
smoke test). The 2:4 rows of the masked linear (``two_four_shapes`` that torch's 2:4 kernels
take, in ``two_four_dtypes``) run on CUDA only and are skipped, with the reason, elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import shapes

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class TrainedModel:
    """A network trained end to end: a ``sparse_tickets.models`` name, or an MLP of masked
    linear layers of the given ``widths``; its batch, input and timed iterations per call."""

    name: str
    batch: int
    iterations: int
    input_shape: tuple = (1, 28, 28)
    widths: tuple = ()

    @property
    def label(self) -> str:
        layers = "-".join(map(str, self.widths)) + " " if self.widths else ""
        return f"{self.name} {layers}batch {self.batch}"


@dataclass(frozen=True)
class Profile:
    name: str
    device: str
    dtypes: tuple
    sparsities: tuple
    linear_shapes: tuple
    conv_shapes: tuple
    optimizer_models: tuple
    optimizer_sparsity: float
    mlp_models: tuple
    conv_net_models: tuple
    densities: tuple
    # One training step (forward, backward, Adam) of a single layer, at these sparsities.
    train_step_shapes: tuple
    train_step_sparsities: tuple
    omitted: tuple = ()
    # The masked linear with a 2:4 mask: candidate shapes (the suite keeps those torch's 2:4
    # kernels take) and the half types sparse tensor cores run.
    two_four_shapes: tuple = ()
    two_four_dtypes: tuple = (torch.float16, torch.bfloat16)


_PAPER_CONVS = shapes.CONV6_LAYERS + shapes.VGG19_LAYERS + shapes.RESNET20_LAYERS
_PAPER_GEMMS = (
    (shapes.LENET_FC1,)
    + tuple(c.as_gemm() for c in shapes.VGG19_LAYERS)
    + tuple(c.as_gemm() for c in shapes.RESNET20_LAYERS)
)
LENET_300_100 = TrainedModel("lenet_300_100", shapes.LENET_BATCH, iterations=20)
_MLPS = (
    LENET_300_100,
    TrainedModel("wide_mlp", shapes.LENET_BATCH, iterations=4, widths=(784, 2048, 2048, 10)),
)
_CONV_NETS = (
    TrainedModel("conv6", shapes.CONV6_BATCH, iterations=10, input_shape=(3, 32, 32)),
    TrainedModel("resnet20", shapes.RESNET20_BATCH, iterations=10, input_shape=(3, 32, 32)),
)
# On the CPU, Conv-2 (two 64-channel convs at 32x32, then 16384 -> 256 -> 256 -> 10) stands for
# the conv nets: Conv-6 and ResNet-20 levels take many minutes per 1,000 iterations on a few
# cores, so they are trained end to end on a GPU only.
CONV2 = TrainedModel("conv2", shapes.CONV6_BATCH, iterations=5, input_shape=(3, 32, 32))
_CONV_NETS_ON_CPU = "trained end to end on a GPU only: a level takes many minutes on a few cores"
# The same layers as the masked linear's; the suite keeps those whose weights torch can compress.
_TWO_FOUR_GEMMS = _PAPER_GEMMS + (shapes.LARGE_BATCH64, shapes.LARGE_BATCH512)
TWO_FOUR_ON_CPU = (
    "2:4 rows run on CUDA only (--bench-device cuda): torch's semi-structured "
    "sparse kernels need a GPU of compute capability 8.0+"
)


def profile_for(device: str, quick: bool = False) -> Profile:
    """The profile of a run on ``device`` ("cpu" or "cuda"); ``quick`` for tiny shapes."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    if quick:
        return Profile(
            name="quick",
            device=device,
            dtypes=(torch.float32,),
            sparsities=(0.0, 0.9),
            linear_shapes=(shapes.TINY_GEMM,),
            conv_shapes=(shapes.TINY_CONV,),
            optimizer_models=("lenet_300_100",),
            optimizer_sparsity=0.8,
            mlp_models=(TrainedModel("tiny_mlp", 4, iterations=2, widths=(784, 8, 10)),),
            conv_net_models=(TrainedModel("conv2", 2, iterations=1, input_shape=(3, 8, 8)),),
            densities=(1.0, 0.21),
            train_step_shapes=(shapes.TINY_GEMM,),
            train_step_sparsities=(0.9,),
            two_four_shapes=(shapes.TINY_2TO4,),
        )
    if device == "cuda":
        return Profile(
            name="cuda",
            device=device,
            dtypes=(torch.float32, torch.bfloat16),
            sparsities=shapes.SPARSITIES,
            linear_shapes=_PAPER_GEMMS + (shapes.LARGE_BATCH64, shapes.LARGE_BATCH512),
            conv_shapes=_PAPER_CONVS,
            optimizer_models=("vgg19", "resnet20"),
            optimizer_sparsity=0.8,
            mlp_models=_MLPS,
            conv_net_models=_CONV_NETS,
            densities=shapes.IMP_DENSITIES,
            train_step_shapes=(shapes.LARGE_BATCH64,),
            train_step_sparsities=shapes.TRAIN_STEP_SPARSITIES,
            two_four_shapes=_TWO_FOUR_GEMMS,
        )
    return Profile(
        name="cpu",
        device=device,
        dtypes=(torch.float32,),
        sparsities=shapes.SPARSITIES,
        linear_shapes=_PAPER_GEMMS + (shapes.LARGE_BATCH64, shapes.LARGE_BATCH512),
        conv_shapes=_PAPER_CONVS,
        optimizer_models=("vgg19", "resnet20"),
        optimizer_sparsity=0.8,
        mlp_models=_MLPS,
        conv_net_models=(CONV2,),
        densities=shapes.IMP_DENSITIES,
        train_step_shapes=(shapes.LARGE_BATCH64,),
        train_step_sparsities=shapes.TRAIN_STEP_SPARSITIES,
        omitted=(
            f"end-to-end training of {', '.join(m.name for m in _CONV_NETS)}: {_CONV_NETS_ON_CPU}",
            f"the 2:4 masked linear: {TWO_FOUR_ON_CPU}",
        ),
        two_four_shapes=_TWO_FOUR_GEMMS,
    )


def profile_of(config) -> Profile:
    """The profile a pytest run was asked for (``--bench-device``, ``--bench-quick``)."""
    return profile_for(config.getoption("bench_device"), config.getoption("bench_quick"))
