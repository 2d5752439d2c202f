import inspect

import pytest

from sparse_tickets import data


def test_names():
    assert data.names() == ["cifar10", "mnist", "mnist5k", "synthetic"]


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(
        ValueError,
        match="unknown dataset 'imagenet'; expected one of cifar10, mnist, mnist5k, synthetic",
    ):
        data.load("imagenet")


def test_name_must_be_a_string():
    with pytest.raises(TypeError, match="dataset name must be a str"):
        data.load(None)


@pytest.mark.parametrize(
    "name, files", [("mnist", "t10k-labels-idx1-ubyte"), ("cifar10", "test_batch")]
)
def test_directory_datasets_require_root(name, files):
    with pytest.raises(ValueError, match=f"{name} needs a directory .*{files}"):
        data.load(name)


def test_root_is_refused_where_nothing_is_read():
    with pytest.raises(ValueError, match="'synthetic' reads no directory"):
        data.load("synthetic", root="/somewhere")


def test_unknown_option_lists_the_accepted_ones():
    with pytest.raises(TypeError, match="'mnist' has no option seed; expected validation_size"):
        data.load("mnist", root="/somewhere", seed=1)


def test_options_reach_the_loader():
    splits = data.load("synthetic", input_shape=(1, 4, 4), train_size=12, val_size=3, test_size=2)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 3, 2)


def test_root_reaches_the_loader(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent")):
        data.load("cifar10", root=tmp_path / "absent")


def test_mnist5k_by_name(tmp_path):
    splits = data.load("mnist5k", cache_dir=tmp_path)
    assert splits.name == "mnist5k" and len(splits.train) == 3_500


def test_a_dataset_reads_a_directory_exactly_when_its_loader_takes_one():
    for spec in data.DATASETS.values():
        first = next(iter(inspect.signature(spec.loader).parameters))
        assert spec.reads_directory == (first == "root"), spec.name
        assert "root" not in spec.options


def test_spec_by_name():
    assert data.spec("mnist").source == "files" and data.spec("mnist").reads_directory
    assert data.spec("mnist5k").source == "embedded"
    assert data.spec("synthetic").options == (
        "input_shape",
        "num_classes",
        "train_size",
        "val_size",
        "test_size",
        "seed",
        "noise",
    )
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; expected one of"):
        data.spec("imagenet")


def test_a_spec_of_an_unknown_source_is_refused():
    with pytest.raises(
        ValueError, match="source 'web'; expected one of files, embedded, generated"
    ):
        data.DatasetSpec("web", data.synthetic, "web", "downloaded")
