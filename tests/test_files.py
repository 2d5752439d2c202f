import errno
import json
import math
import os
from pathlib import Path

import pytest
import torch

from sparse_tickets import files


def test_artifacts_round_trip_and_keep_tensor_order(tmp_path):
    tensors = {
        "features.10.weight": torch.ones(2),
        "features.3.weight": torch.zeros(3, 1),
        "mask": torch.tensor([True, False]),
    }
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


def _full_disk(monkeypatch):
    """The kernel's answer on a full disk: fsync (where delayed allocation reports it) fails
    with ENOSPC."""

    def fsync(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_is_one_line_naming_the_path_and_keeps_the_old_artifact(tmp_path, monkeypatch):
    path = tmp_path / "level_1" / "metrics.json"
    files.write_json(path, {"level": 1})
    _full_disk(monkeypatch)
    with pytest.raises(files.WriteError) as refused:
        files.write_json(path, {"level": 2})
    message = str(refused.value)
    assert message.startswith(f"cannot write {path}: No space left on device; free some space")
    assert "run the same command again" in message and "\n" not in message
    assert refused.value.errno == errno.ENOSPC
    assert refused.value.__suppress_context__ and refused.value.__cause__ is None
    monkeypatch.undo()
    assert files.read_json(path) == {"level": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json", "metrics.json.sha256"]


def test_a_cleanup_that_fails_too_does_not_bury_the_cause(tmp_path, monkeypatch):
    # On a read-only or full file system the temporary file's unlink can fail as well; the
    # error raised must still be the write's, alone, with no second traceback chained to it.
    _full_disk(monkeypatch)
    original_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(files.WriteError, match="No space left on device") as refused:
        files.write_atomically(tmp_path / "report.md", lambda handle: handle.write(b"x"))
    assert refused.value.__suppress_context__ and refused.value.__cause__ is None
    monkeypatch.setattr(Path, "unlink", original_unlink)
    leftover = list(tmp_path.glob(".*.tmp"))
    assert len(leftover) == 1  # what the failed cleanup left is removed by the next run
    files.remove_temporaries(tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "code, advice",
    [
        (errno.EROFS, "remount it read-write"),
        (errno.EACCES, "make it writable for this user"),
        (errno.EDQUOT, "within your quota"),
        (errno.ENOSPC, "free some space there"),
    ],
)
def test_each_refusal_says_what_to_do(tmp_path, code, advice):
    error = files.WriteError(tmp_path / "x", OSError(code, os.strerror(code)))
    assert str(error).startswith(f"cannot write {tmp_path / 'x'}: {os.strerror(code)}; ")
    assert advice in str(error) and "\n" not in str(error)


def _strict_json(text: str):
    """json.loads refusing the bare NaN / Infinity tokens that are not JSON."""

    def refuse(token):
        raise ValueError(f"bare {token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_valid_json_and_read_back_as_floats(tmp_path):
    path = tmp_path / "metrics.json"
    files.write_json(
        path, {"losses": [math.nan, math.inf, -math.inf, 1.5, None], "name": "level_1"}
    )
    stored = _strict_json(path.read_text())
    assert stored["losses"] == ["NaN", "Infinity", "-Infinity", 1.5, None]
    loaded = files.read_json(path)
    assert math.isnan(loaded["losses"][0])
    assert loaded["losses"][1:] == [math.inf, -math.inf, 1.5, None]
    assert loaded["name"] == "level_1"


@pytest.mark.parametrize(
    "name, read, content, expected",
    [
        ("metrics.json", files.read_json, b"{not json", "not JSON"),
        (
            "masks.safetensors",
            files.read_tensors,
            b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage",
            "not a safetensors file",
        ),
        ("checkpoint.pt", files.read_torch, b"\x80\x04garbage", ""),
    ],
)
def test_bytes_that_match_their_digest_but_not_their_format_are_named(
    tmp_path, name, read, content, expected
):
    path = tmp_path / name
    files.write_artifact(path, content)  # the digest is right: the content is not
    with pytest.raises(files.DamagedArtifact) as damaged:
        read(path)
    message = str(damaged.value)
    assert message.startswith(f"{path} is not a file this tool wrote, or it is damaged (")
    assert expected in message and "\n" not in message and "weights_only" not in message
    assert message.endswith(f"delete it and its {name}.sha256, then run the command again")


class _RunsCode:
    def __reduce__(self):
        return os.system, ("echo this must never run",)


def test_a_checkpoint_that_would_run_code_is_refused_with_the_cause(tmp_path):
    import io

    buffer = io.BytesIO()
    torch.save({"iteration": 3, "payload": _RunsCode()}, buffer)
    path = tmp_path / "checkpoint.pt"
    files.write_artifact(path, buffer.getvalue())
    with pytest.raises(files.DamagedArtifact, match="posix.system") as damaged:
        files.read_torch(path)
    assert "weights_only" not in str(damaged.value) and "\n" not in str(damaged.value)
