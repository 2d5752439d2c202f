"""A run's hyperparameters: a preset with the values given over it, checked."""

import pytest

from sparse_tickets.lottery.hparams import HparamsError
from sparse_tickets.lottery.presets import DEFAULT_PRESET, PRESETS, resolve


def test_nothing_given_is_the_default_preset():
    assert resolve({}) == PRESETS[DEFAULT_PRESET]


def test_the_preset_follows_the_model_and_dataset_given():
    assert resolve({"model": "conv2"}) == PRESETS["conv2/cifar10"]
    hp = resolve({"model": "conv2", "dataset": "synthetic", "lr": 0.01})
    assert (hp.dataset, hp.lr, hp.iterations) == ("synthetic", 0.01, "20000")


def test_a_named_preset_takes_precedence():
    assert resolve({"dataset": "synthetic"}, "conv4/cifar10").model == "conv4"


def test_naming_a_rewind_iteration_rewinds_to_it():
    assert resolve({"rewind_iteration": "100"}).rewind == "iteration"
    assert resolve({"rewind_iteration": "100", "rewind": "lr"}).rewind == "lr"


@pytest.mark.parametrize(
    "given, preset, message",
    [
        ({}, "lenet/mnist", "unknown preset 'lenet/mnist'; expected one of"),
        ({"model": "lenet"}, None, "unknown model 'lenet'; expected one of lenet_300_100"),
        ({"dataset": "imagenet"}, None, "unknown dataset 'imagenet'; expected one of cifar10"),
        ({"momentum": 0.9}, None, "--momentum 0.9 given, but optimizer adam takes no momentum"),
        ({"lr": -1.0}, None, "lr is -1.0; expected a positive learning rate"),
    ],
)
def test_values_that_cannot_be_used_are_refused_in_one_line(given, preset, message):
    with pytest.raises(HparamsError, match=message) as refused:
        resolve(given, preset)
    assert "\n" not in str(refused.value)
