import os

import pytest
import safetensors.torch
import torch

from sparse_tickets.pruning import Masks
from sparse_tickets.pruning.storage import load_tensors, save_tensors
from tests.conftest import DEVICES
from tests.pruning.helpers import one_line

SUFFIXES = [".safetensors", ".pt", ".pth"]


def masks():
    # Names that sort differently as text than in layer order, and an empty layer.
    return Masks(
        {
            "features.3.weight": torch.rand(4, 2, 3, 3) < 0.5,
            "features.10.weight": torch.rand(5, 7) < 0.5,
            "classifier.weight": torch.zeros(3, 0, dtype=torch.bool),
        }
    )


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_keeps_values_dtype_and_layer_order(tmp_path, suffix):
    original = masks()
    path = tmp_path / f"masks{suffix}"
    original.save(path)
    loaded = Masks.load(path)
    assert loaded == original and list(loaded) == list(original)
    assert all(mask.dtype == torch.bool and mask.device.type == "cpu" for mask in loaded.values())
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.parametrize("device", DEVICES)
def test_masks_from_a_device_save_and_load_onto_a_named_device(tmp_path, device):
    path = tmp_path / "masks.safetensors"
    original = masks().to(device)
    original.save(str(path))
    assert all(mask.device.type == "cpu" for mask in Masks.load(path).values())
    loaded = Masks.load(path, device=device)
    assert all(mask.device.type == device for mask in loaded.values()) and loaded == original


def test_safetensors_files_written_elsewhere_load_in_their_own_order(tmp_path):
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file(
        {"b": torch.ones(2, dtype=torch.bool), "a": torch.zeros(3, dtype=torch.bool)}, str(path)
    )
    assert sorted(Masks.load(path)) == ["a", "b"]


@pytest.mark.parametrize("suffix, writer", [(".safetensors", "safetensors"), (".pt", "torch")])
def test_a_failing_write_leaves_the_existing_file_intact_and_no_temp_file(
    tmp_path, monkeypatch, suffix, writer
):
    path = tmp_path / f"masks{suffix}"
    original = masks()
    original.save(path)
    before = path.read_bytes()

    def torch_save_then_fail(obj, file):
        file.write(b"half a file")
        raise OSError("disk full")

    def safetensors_save_fail(tensors, metadata=None):
        raise OSError("disk full")

    if writer == "torch":
        monkeypatch.setattr(torch, "save", torch_save_then_fail)
    else:
        monkeypatch.setattr(safetensors.torch, "save", safetensors_save_fail)
    with pytest.raises(OSError, match="disk full"):
        Masks({"w": torch.ones(2, dtype=torch.bool)}).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]
    monkeypatch.undo()
    assert Masks.load(path) == original


def test_saving_replaces_an_existing_file(tmp_path):
    path = tmp_path / "masks.pt"
    masks().save(path)
    replacement = Masks({"w": torch.tensor([True, False])})
    replacement.save(path)
    assert Masks.load(path) == replacement


def test_saving_into_a_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory .*nowhere' does not exist") as error:
        masks().save(tmp_path / "nowhere" / "masks.pt")
    assert one_line(error)


def test_loading_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file at .*absent.safetensors") as error:
        Masks.load(tmp_path / "absent.safetensors")
    assert one_line(error)


@pytest.mark.parametrize(
    "suffix, expected",
    [
        (".safetensors", "expected a safetensors file"),
        (".pt", "expected a torch.save'd dict of name -> tensor"),
    ],
)
def test_loading_garbage_names_the_file_and_the_expected_format(tmp_path, suffix, expected):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(b"\x00\xffnot a tensor file at all" * 3)
    with pytest.raises(ValueError, match=f"cannot read .*garbage{suffix}'.*{expected}") as error:
        Masks.load(path)
    assert one_line(error)


def test_loading_a_file_that_holds_something_else_is_refused(tmp_path):
    listed = tmp_path / "list.pt"
    torch.save([torch.ones(2)], listed)
    with pytest.raises(ValueError, match="holds a list that is not a dict of name -> tensor"):
        load_tensors(listed)
    not_binary = tmp_path / "float.pt"
    torch.save({"fc1.weight": torch.full((2,), 0.5)}, not_binary)
    with pytest.raises(
        ValueError,
        match=r"float.pt' does not hold masks: masks\['fc1.weight'\] "
        r"holds the value 0.5",
    ) as error:
        Masks.load(not_binary)
    assert one_line(error)


def test_a_pickled_model_is_refused_with_the_cause_not_advice_to_unpickle_it(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(ValueError, match="Unsupported global.*Linear") as error:
        Masks.load(path)
    assert one_line(error) and "weights_only" not in str(error.value)


def test_tensors_are_copied_to_the_cpu_for_writing(tmp_path):
    tensor = torch.arange(12).reshape(3, 4).t()  # not contiguous
    save_tensors(tmp_path / "t.safetensors", {"t": tensor})
    assert torch.equal(load_tensors(tmp_path / "t.safetensors")["t"], tensor)
