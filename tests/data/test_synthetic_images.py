import pytest
import torch

from sparse_tickets.data import synthetic


def test_shapes_sizes_and_dtypes():
    splits = synthetic(input_shape=(3, 8, 6), num_classes=4, train_size=40, val_size=9, test_size=0)
    assert splits.name == "synthetic"
    assert splits.input_shape == (3, 8, 6) and splits.num_classes == 4
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 9, 0)
    assert splits.train.images.shape == (40, 3, 8, 6)
    assert splits.train.images.dtype == torch.uint8 and splits.train.labels.dtype == torch.int64
    image, label = splits.train[0]
    assert image.shape == (3, 8, 6) and image.dtype == torch.float32 and 0 <= label < 4


def test_classes_are_balanced():
    splits = synthetic(num_classes=7, train_size=100, val_size=14, test_size=13)
    for split in (splits.train, splits.val, splits.test):
        counts = split.class_counts(7)
        assert int(counts.max() - counts.min()) <= 1 and int(counts.sum()) == len(split)


def test_same_seed_gives_identical_data_whatever_the_global_generator():
    first = synthetic(input_shape=(2, 5, 5), train_size=64, seed=3)
    torch.manual_seed(77)
    second = synthetic(input_shape=(2, 5, 5), train_size=64, seed=3)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(first, name).images, getattr(second, name).images)
        assert torch.equal(getattr(first, name).labels, getattr(second, name).labels)
    assert first.train.mean == second.train.mean


def test_different_seed_gives_different_data():
    first = synthetic(input_shape=(1, 6, 6), train_size=32, seed=0)
    second = synthetic(input_shape=(1, 6, 6), train_size=32, seed=1)
    assert not torch.equal(first.train.images, second.train.images)


def test_splits_are_generated_independently():
    small = synthetic(input_shape=(1, 6, 6), train_size=50, val_size=5, test_size=5)
    large = synthetic(input_shape=(1, 6, 6), train_size=50, val_size=500, test_size=5)
    assert torch.equal(small.train.images, large.train.images)
    assert torch.equal(small.test.images, large.test.images)
    assert not torch.equal(small.train.images[:5], small.val.images)


def test_training_split_is_normalised_and_classes_sit_near_their_prototype():
    splits = synthetic(input_shape=(1, 10, 10), num_classes=3, train_size=300, noise=0.1)
    images, labels = splits.train.batch(torch.arange(300))
    assert abs(float(images.mean())) < 1e-4 and abs(float(images.std()) - 1) < 1e-2
    # Low noise: every example is nearer its own class mean than any other class mean.
    means = torch.stack([images[labels == c].mean(dim=0) for c in range(3)])
    distances = torch.cdist(images.flatten(1), means.flatten(1))
    assert torch.equal(distances.argmin(dim=1), labels)


def test_chunked_generation_covers_large_sets():
    splits = synthetic(input_shape=(3, 32, 32), train_size=3_000, val_size=0, test_size=0)
    assert splits.train.images.shape == (3_000, 3, 32, 32)
    # Rows past the first chunk (1,365 rows of 3x32x32) are filled, not left uninitialised.
    per_row_mean = splits.train.images[1_365:].flatten(1).float().mean(dim=1)
    assert bool((per_row_mean > 60).all()) and bool((per_row_mean < 195).all())


@pytest.mark.parametrize(
    "options, error, words",
    [
        ({"input_shape": (28, 28)}, ValueError, "three positive ints"),
        ({"input_shape": (1, 0, 28)}, ValueError, "three positive ints"),
        ({"num_classes": 0}, ValueError, "num_classes must be at least 1"),
        ({"train_size": 0}, ValueError, "train_size must be at least 1"),
        ({"val_size": -1}, ValueError, "val_size must be at least 0"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
        ({"noise": -0.1}, ValueError, "noise must be a non-negative number"),
    ],
)
def test_invalid_options(options, error, words):
    with pytest.raises(error, match=words):
        synthetic(**options)


def test_a_dataset_larger_than_memory_is_refused_before_allocating():
    with pytest.raises(
        ValueError,
        match=r"synthetic data of 100000000000000000000 \+ 10 \+ 10 "
        r"examples of shape \(3, 32, 32\) needs .* GiB; this "
        r"machine has .* GiB of memory; expected fewer",
    ):
        synthetic(input_shape=(3, 32, 32), train_size=10**20, val_size=10, test_size=10)
