import numpy as np

from sparse_tickets.data.cache import cache_directory, load_arrays, save_arrays, source_fingerprint


def test_round_trip_leaves_only_the_entry(tmp_path):
    arrays = {
        "images": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "labels": np.array([2, 0, 1], dtype=np.uint8),
    }
    assert save_arrays(tmp_path / "cache", "entry", arrays)
    loaded = load_arrays(tmp_path / "cache", "entry")
    assert set(loaded) == {"images", "labels"}
    assert all(
        np.array_equal(loaded[name], arrays[name]) and loaded[name].dtype == np.uint8
        for name in arrays
    )
    assert [path.name for path in (tmp_path / "cache").iterdir()] == ["entry.npz"]


def test_absent_or_unreadable_entries_read_as_none(tmp_path):
    assert load_arrays(tmp_path, "absent") is None
    (tmp_path / "broken.npz").write_bytes(b"\x00" * 10)
    assert load_arrays(tmp_path, "broken") is None
    assert load_arrays(None, "anything") is None


def test_unwritable_directory_saves_nothing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert not save_arrays(blocker / "cache", "entry", {"x": np.zeros(1)})
    assert not save_arrays(None, "entry", {"x": np.zeros(1)})
    assert list(tmp_path.iterdir()) == [blocker]


def test_directory_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSE_TICKETS_CACHE", str(tmp_path))
    assert cache_directory() == tmp_path
    monkeypatch.delenv("SPARSE_TICKETS_CACHE")
    assert cache_directory().parts[-2:] == (".cache", "sparse_tickets")


def test_fingerprint_follows_size_and_mtime(tmp_path):
    path = tmp_path / "source"
    path.write_bytes(b"abc")
    first = source_fingerprint(path)
    path.write_bytes(b"abcd")
    assert source_fingerprint(path) != first
