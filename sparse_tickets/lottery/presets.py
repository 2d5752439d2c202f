"""The paper's hyperparameters (Frankle & Carbin, ICLR 2019, Figure 2 and Appendix), by name.

A preset is a complete :class:`~sparse_tickets.lottery.hparams.Hparams`; every field can be
overridden by its command-line flag (:func:`resolve`). ``lenet_300_100/mnist5k`` is the
embedded default: the paper's LeNet settings on the 3,500 training digits shipped with the
package, with a schedule short enough to find tickets on two CPU cores in minutes.
"""

from __future__ import annotations

from .. import data, models
from .distributed import global_batch
from .hparams import Hparams, HparamsError, validate

_LENET = dict(
    model="lenet_300_100",
    optimizer="adam",
    lr=1.2e-3,
    batch_size=60,
    scope="layerwise",
    conv_fraction=0.0,
    fc_fraction=0.2,
    output_fraction=0.1,
)
# The paper's deeper networks add weight decay 1e-4 (its Appendix; open_lth uses the same).
_CIFAR_SGD = dict(
    dataset="cifar10",
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    scope="global",
    conv_fraction=0.2,
    fc_fraction=0.0,
    output_fraction=0.0,
    eval_every=1000,
    levels=20,
)


def _conv(model: str, lr: float, iterations: int, conv_fraction: float) -> Hparams:
    return Hparams(
        model=model,
        dataset="cifar10",
        optimizer="adam",
        lr=lr,
        batch_size=60,
        iterations=str(iterations),
        scope="layerwise",
        conv_fraction=conv_fraction,
        fc_fraction=0.2,
        output_fraction=0.1,
        eval_every=500,
        levels=20,
    )


PRESETS: dict[str, Hparams] = {
    # 1,000 iterations is 17 epochs of the 3,500 digits: the validation loss of the dense
    # network bottoms out after 200-300, so early stopping has room to move either way; 10
    # levels reach 11% of the weights.
    "lenet_300_100/mnist5k": Hparams(
        **_LENET, dataset="mnist5k", iterations="1000", eval_every=50, levels=10
    ),
    "lenet_300_100/mnist": Hparams(
        **_LENET, dataset="mnist", iterations="50000", eval_every=500, levels=20
    ),
    "conv2/cifar10": _conv("conv2", 2e-4, 20_000, 0.1),
    "conv4/cifar10": _conv("conv4", 3e-4, 25_000, 0.1),
    "conv6/cifar10": _conv("conv6", 3e-4, 30_000, 0.15),
    # lr 0.1 divided by 10 at 20K and 25K; the paper also tried 20K iterations of warmup at
    # lr 0.03 (--lr 0.03 --warmup 20000).
    "resnet20/cifar10": Hparams(
        **_CIFAR_SGD, model="resnet20", batch_size=128, iterations="30000", milestones="20000,25000"
    ),
    # lr 0.1 divided by 10 at epochs 80 and 120 of 160; the paper also tried 10K iterations of
    # warmup (--warmup 10000).
    "vgg19/cifar10": Hparams(
        **_CIFAR_SGD, model="vgg19", batch_size=64, iterations="160ep", milestones="80ep,120ep"
    ),
}

DEFAULT_PRESET = "lenet_300_100/mnist5k"


def preset_for(model: str, dataset: str) -> str:
    """The preset for a model and dataset: ``model/dataset`` when the paper has one, else the
    model's own preset (its dataset replaced by the caller), else the default."""
    if f"{model}/{dataset}" in PRESETS:
        return f"{model}/{dataset}"
    for name, hp in PRESETS.items():
        if hp.model == model:
            return name
    return DEFAULT_PRESET


def resolve(given: dict, preset: str | None = None, scale_batch: bool = False) -> Hparams:
    """The hyperparameters of a run: ``preset`` (by default the paper's for the model and
    dataset ``given``) with the values ``given`` replacing its own, checked; HparamsError (one
    line) for a value that cannot be used.

    Naming a rewind iteration means rewinding to it. Under torchrun the batch is the job's
    global batch, or with ``scale_batch`` each process's (:func:`.distributed.global_batch`).
    """
    if preset is not None and preset not in PRESETS:
        raise HparamsError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    if preset is None:
        default = PRESETS[DEFAULT_PRESET]
        preset = preset_for(
            given.get("model", default.model), given.get("dataset", default.dataset)
        )
    hp = PRESETS[preset].replace(**given)
    if "rewind_iteration" in given and "rewind" not in given and hp.rewind == "init":
        hp = hp.replace(rewind="iteration")
    hp = global_batch(hp, scale_batch)
    if hp.model not in models.names():
        raise HparamsError(
            f"unknown model {hp.model!r}; expected one of {', '.join(models.names())}"
        )
    if hp.dataset not in data.names():
        raise HparamsError(
            f"unknown dataset {hp.dataset!r}; expected one of {', '.join(data.names())}"
        )
    if given.get("momentum") and hp.optimizer != "sgd":
        raise HparamsError(
            f"--momentum {given['momentum']} given, but optimizer {hp.optimizer} "
            f"takes no momentum; expected --optimizer sgd or no --momentum"
        )
    validate(hp)
    return hp
