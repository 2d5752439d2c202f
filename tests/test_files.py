import torch

from sparse_tickets import files


def test_artifacts_round_trip_and_keep_tensor_order(tmp_path):
    tensors = {"features.10.weight": torch.ones(2), "features.3.weight": torch.zeros(3, 1),
               "mask": torch.tensor([True, False])}
    files.write_tensors(tmp_path / "t.safetensors", tensors)
    loaded = files.read_tensors(tmp_path / "t.safetensors")
    assert list(loaded) == list(tensors)
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    files.write_json(tmp_path / "m.json", {"a": [1, 2.5, None]})
    assert files.read_json(tmp_path / "m.json") == {"a": [1, 2.5, None]}
    files.write_torch(tmp_path / "c.pt", {"iteration": 3, "state": torch.arange(4)})
    assert files.read_torch(tmp_path / "c.pt")["iteration"] == 3


def test_missing_incomplete_or_corrupted_artifacts_read_as_absent(tmp_path):
    path = tmp_path / "m.json"
    assert files.read_json(path) is None
    files.write_json(path, {"level": 1})
    path.write_text('{"level": 2}\n')  # changed behind the sidecar's back
    assert files.read_json(path) is None
    files.write_json(path, {"level": 3})
    (tmp_path / "m.json.sha256").unlink()  # killed between the file and its digest
    assert files.read_json(path) is None
    files.write_json(path, {"level": 4})
    files.remove_artifact(path)
    assert not path.exists() and not (tmp_path / "m.json.sha256").exists()


def test_atomic_write_leaves_no_temporary_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "f.bin"
    files.write_atomically(path, lambda handle: handle.write(b"old"))

    def fail(handle):
        handle.write(b"half")
        raise RuntimeError("disk full")

    try:
        files.write_atomically(path, fail)
    except RuntimeError:
        pass
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
