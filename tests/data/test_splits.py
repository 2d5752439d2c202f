import pytest
import torch

from sparse_tickets.data import DatasetSplits, ImageSplit, channel_statistics


def _split(count=6, channels=3, dtype=torch.uint8):
    if dtype == torch.uint8:
        images = torch.randint(0, 256, (count, channels, 4, 5), dtype=torch.uint8)
    else:
        images = torch.rand(count, channels, 4, 5)
    labels = torch.arange(count) % 3
    mean = [0.1 * (c + 1) for c in range(channels)]
    std = [0.2 * (c + 1) for c in range(channels)]
    return ImageSplit(images, labels, mean, std)


def test_uint8_items_are_normalised_per_channel():
    split = _split()
    image, label = split[2]
    expected = (
        split.images[2].double() / 255 - torch.tensor([0.1, 0.2, 0.3]).double().view(3, 1, 1)
    ) / torch.tensor([0.2, 0.4, 0.6]).double().view(3, 1, 1)
    assert image.dtype == torch.float32 and image.shape == (3, 4, 5)
    torch.testing.assert_close(image.double(), expected, rtol=1e-6, atol=1e-6)
    assert label == 2 and isinstance(label, int)


def test_batch_matches_items_and_keeps_label_dtype():
    split = _split()
    indices = torch.tensor([4, 0, 4, 1])
    images, labels = split.batch(indices)
    assert images.shape == (4, 3, 4, 5) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == [1, 0, 1, 1]
    for row, index in enumerate(indices.tolist()):
        torch.testing.assert_close(images[row], split[index][0])


def test_float_images_are_read_as_is_and_never_modified():
    split = _split(dtype=torch.float32)
    stored = split.images.clone()
    image, _ = split[1]
    split.batch(torch.tensor([1, 2]))
    assert torch.equal(split.images, stored)
    expected = (stored[1] - torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1)) / torch.tensor(
        [0.2, 0.4, 0.6]
    ).view(3, 1, 1)
    torch.testing.assert_close(image, expected)


def test_subset_and_to_keep_normalisation():
    split = _split()
    subset = split.subset(torch.tensor([5, 1]))
    assert len(subset) == 2 and subset.mean == split.mean and subset.std == split.std
    torch.testing.assert_close(subset[0][0], split[5][0])
    moved = split.to("cpu")
    assert moved.images.dtype == torch.uint8 and len(moved) == len(split)


def test_class_counts():
    assert _split(count=7).class_counts(4).tolist() == [3, 2, 2, 0]


@pytest.mark.parametrize(
    "images, labels, mean, std, error, words",
    [
        (
            torch.zeros(2, 4, 4, dtype=torch.uint8),
            torch.zeros(2, dtype=torch.int64),
            [0],
            [1],
            TypeError,
            "4-D",
        ),
        (
            torch.zeros(2, 1, 4, 4, dtype=torch.int32),
            torch.zeros(2, dtype=torch.int64),
            [0],
            [1],
            TypeError,
            "uint8 or float32",
        ),
        (
            torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
            torch.zeros(2, dtype=torch.int32),
            [0],
            [1],
            TypeError,
            "int64",
        ),
        (
            torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
            torch.zeros(3, dtype=torch.int64),
            [0],
            [1],
            ValueError,
            "one label per image",
        ),
        (
            torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
            torch.zeros(2, dtype=torch.int64),
            [0],
            [1],
            ValueError,
            "one per channel",
        ),
        (
            torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
            torch.zeros(2, dtype=torch.int64),
            [0],
            [0],
            ValueError,
            "positive",
        ),
    ],
)
def test_invalid_splits_are_rejected(images, labels, mean, std, error, words):
    with pytest.raises(error, match=words):
        ImageSplit(images, labels, mean, std)


def test_batch_rejects_non_integer_indices():
    with pytest.raises(TypeError, match="1-D int64"):
        _split().batch(torch.tensor([0.0, 1.0]))


def test_dataset_splits_checks_image_shape():
    split = _split()
    DatasetSplits("toy", split, split, split, (3, 4, 5), 3)
    with pytest.raises(ValueError, match="expected input_shape"):
        DatasetSplits("toy", split, split, split, (1, 4, 5), 3)
    with pytest.raises(TypeError, match="ImageSplit"):
        DatasetSplits("toy", split, None, split, (3, 4, 5), 3)


def test_channel_statistics_uint8_matches_float64():
    images = torch.randint(0, 256, (50, 2, 3, 3), dtype=torch.uint8)
    mean, std = channel_statistics(images)
    as_float = images.double() / 255
    torch.testing.assert_close(
        torch.tensor(mean, dtype=torch.float64), as_float.mean(dim=(0, 2, 3))
    )
    torch.testing.assert_close(
        torch.tensor(std, dtype=torch.float64),
        as_float.transpose(0, 1).reshape(2, -1).std(dim=1, correction=0),
    )
    float_mean, float_std = channel_statistics(as_float.float())
    torch.testing.assert_close(float_mean, mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(float_std, std, rtol=1e-6, atol=1e-6)


@pytest.mark.cuda
def test_batch_on_gpu_with_cpu_indices_matches_cpu():
    split = _split()
    on_gpu = split.to("cuda")
    assert on_gpu.images.dtype == torch.uint8 and on_gpu.device.type == "cuda"
    indices = torch.tensor([3, 0, 5])
    images, labels = on_gpu.batch(indices)
    assert images.device.type == "cuda" and labels.device.type == "cuda"
    expected_images, expected_labels = split.batch(indices)
    torch.testing.assert_close(images.cpu(), expected_images)
    assert torch.equal(labels.cpu(), expected_labels)
