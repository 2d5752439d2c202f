"""The data a run trains on: the directory a dataset needs or refuses, the synthetic splits,
the fixed training subset."""

import pytest
import torch

from sparse_tickets import data
from sparse_tickets.lottery.datasets import (
    DataChoiceError,
    check_data_dir,
    load_splits,
    synthetic_sizes,
    training_subset,
)
from sparse_tickets.lottery.hparams import Hparams


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_a_dataset_read_from_files_needs_its_directory(dataset, tmp_path):
    with pytest.raises(
        DataChoiceError,
        match=f"dataset {dataset} is read from its standard files: pass --data-dir DIR",
    ):
        check_data_dir(dataset, None)
    assert check_data_dir(dataset, tmp_path) is True


@pytest.mark.parametrize("dataset, source", [("mnist5k", "embedded"), ("synthetic", "generated")])
def test_a_dataset_not_read_from_files_refuses_a_directory(dataset, source):
    with pytest.raises(DataChoiceError) as refused:
        check_data_dir(dataset, "somewhere")
    assert str(refused.value) == (
        f"dataset {dataset} is {source} and reads no directory, but "
        f"--data-dir somewhere was given; expected no --data-dir "
        f"(the mnist and cifar10 datasets read one)"
    )
    assert check_data_dir(dataset, None) is False


@pytest.mark.parametrize(
    "train_size, expected",
    [(0, (5000, 1000)), (2500, (2500, 500)), (200, (200, 100)), (100_000, (100_000, 1000))],
)
def test_synthetic_held_out_sets_are_a_fifth_of_training_within_bounds(train_size, expected):
    sizes = synthetic_sizes(train_size)
    assert (sizes["train_size"], sizes["val_size"]) == expected
    assert sizes["test_size"] == sizes["val_size"]


def test_synthetic_data_has_the_models_shape_and_ignores_the_data_seed():
    hp = Hparams(model="conv2", dataset="synthetic", train_size=30)
    splits = load_splits(hp, None)
    assert splits.input_shape == (3, 32, 32)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 100, 100)
    other = load_splits(hp.replace(data_seed=hp.data_seed + 1), None)
    assert torch.equal(other.train.images, splits.train.images)


def _splits(examples: int) -> data.DatasetSplits:
    return data.synthetic(input_shape=(1, 2, 2), train_size=examples, val_size=3, test_size=4)


def test_the_training_subset_is_fixed_and_keeps_the_held_out_sets_whole():
    splits = _splits(50)
    subset = training_subset(splits, 20)
    assert len(subset.train) == 20
    assert subset.val is splits.val and subset.test is splits.test
    again = training_subset(_splits(50), 20)
    assert torch.equal(again.train.images, subset.train.images)
    rows = {tuple(image.flatten().tolist()) for image in splits.train.images}
    assert all(tuple(image.flatten().tolist()) in rows for image in subset.train.images)


def test_a_training_subset_larger_than_the_set_is_refused():
    with pytest.raises(
        DataChoiceError, match="train_size is 51; synthetic has 50 training examples"
    ):
        training_subset(_splits(50), 51)
