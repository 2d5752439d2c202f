"""One writer per run directory: a second holder is refused with the first one's name, waits
with ``wait=True``, and a holder that died leaves no lock behind."""

import os
import signal

import pytest

from sparse_tickets.lottery import locking


def test_a_second_holder_is_refused_and_told_who_holds_it(tmp_path, lock_holder):
    holder = lock_holder(tmp_path)
    with pytest.raises(locking.RunLocked) as refused:
        with locking.held(tmp_path):
            pass
    message = str(refused.value)
    assert f"run directory {tmp_path} is in use by process {holder.pid}" in message
    assert "holder --of the lock" in message and "pass --wait" in message
    assert "\n" not in message
    holder.stdin.close()  # lets go
    holder.wait()
    with locking.held(tmp_path):
        assert locking.describe_holder(tmp_path / locking.LOCK_FILE).startswith(
            f"process {os.getpid()} ("
        )


def test_wait_blocks_until_the_holder_lets_go(tmp_path, lock_holder):
    holder = lock_holder(tmp_path)
    said = []

    def on_wait(text):
        said.append(text)
        holder.stdin.close()  # the holder ends only once this process waits

    with locking.held(tmp_path, wait=True, on_wait=on_wait):
        assert holder.wait() == 0  # it had to let go for this block to run
    assert len(said) == 1 and f"in use by process {holder.pid}" in said[0]
    assert "waiting for it to end" in said[0]


def test_a_killed_holder_leaves_no_lock(tmp_path, lock_holder):
    holder = lock_holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert "holder --of the lock" in (tmp_path / locking.LOCK_FILE).read_text()  # stale words
    with locking.held(tmp_path):  # but no stale lock
        pass


def test_the_lock_is_per_open_file_so_one_process_excludes_itself_too(tmp_path):
    with locking.held(tmp_path, command="first"):
        with pytest.raises(locking.RunLocked, match=rf"process {os.getpid()} \(first, since"):
            with locking.held(tmp_path):
                pass
    with locking.held(tmp_path):  # released at the end of the block
        pass


def test_a_refused_holder_leaves_the_holders_name_in_place(tmp_path, lock_holder):
    holder = lock_holder(tmp_path)
    for _ in range(2):
        with pytest.raises(locking.RunLocked, match=f"in use by process {holder.pid} "):
            with locking.held(tmp_path):
                pass
