"""Trials: seed offsets, the split of cores, and the child processes that run them."""

import pytest

from sparse_tickets.lottery import trials
from sparse_tickets.lottery.trials import Trial, TrialsError


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0-4", [0, 1, 2, 3, 4]),
        ("3", [3]),
        ("0,3,7", [0, 3, 7]),
        (" 1 - 2 , 5", [1, 2, 5]),
        ("2-2", [2]),
    ],
)
def test_seeds_parse_ranges_and_lists(text, expected):
    assert trials.parse_seeds(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "expected seed offsets like 0-4"),
        ("a-b", "expected seed offsets like 0-4"),
        ("-1", "expected seed offsets like 0-4"),
        ("4-0", "expected first <= last"),
        ("0-2,1", "names a seed twice"),
        ("0-5000", "expected at most 1000"),
    ],
)
def test_bad_seeds_are_refused_in_one_line(text, message):
    with pytest.raises(TrialsError, match=message) as error:
        trials.parse_seeds(text)
    assert "\n" not in str(error.value)


def test_trials_are_offsets_from_zero_and_exclude_seeds():
    assert trials.seed_offsets(3, None) == [0, 1, 2]
    assert trials.seed_offsets(None, "2,4") == [2, 4]
    assert trials.seed_offsets(None, None) is None
    with pytest.raises(TrialsError, match="expected one of them"):
        trials.seed_offsets(2, "0-1")
    with pytest.raises(TrialsError, match="expected 1 to 1000"):
        trials.seed_offsets(0, None)


@pytest.mark.parametrize(
    "count, parallel, cores, expected",
    [
        (3, None, 2, (2, 1)),  # one process per core, the third waits
        (1, None, 8, (1, 8)),  # one trial takes every core
        (4, None, 16, (4, 4)),
        (5, 2, 2, (2, 1)),
        (2, 1, 4, (1, 4)),
        (3, 8, 2, (3, 1)),
    ],
)  # asked for more processes than cores: one thread each
def test_cores_are_split_between_the_processes(count, parallel, cores, expected):
    assert trials.split_cores(count, parallel, cores) == expected


def test_a_parallel_below_one_is_refused():
    with pytest.raises(TrialsError, match="expected at least 1"):
        trials.split_cores(2, 0, 4)


def test_children_run_at_most_parallel_at_once_with_their_threads_and_logs(tmp_path, monkeypatch):
    # Real child processes of a real command: `python -m sparse_tickets --version`, whose output
    # lands in each trial's log; the thread count is seen through the child's environment.
    made = [Trial(offset, tmp_path / f"run-{offset}", ("--version",)) for offset in range(3)]
    started, ended, at_once = [], [], []

    def start(trial):
        started.append(trial)
        at_once.append(len(started) - len(ended))

    outcomes = trials.run_local(made, parallel=2, threads=3, on_start=start, on_end=ended.append)
    assert max(at_once) == 2
    assert [outcome.returncode for outcome in outcomes] == [0, 0, 0]
    assert [outcome.trial for outcome in outcomes] == made
    assert started == made and sorted(o.trial.offset for o in ended) == [0, 1, 2]
    for trial in made:
        log = trial.log.read_text()
        assert log.startswith("\n$ sparse-tickets --version\n") and "sparse-tickets 0." in log


def test_a_failing_child_is_reported_by_its_status(tmp_path):
    made = [Trial(0, tmp_path / "run-0", ("no-such-command",))]
    (outcome,) = trials.run_local(made, parallel=1, threads=1)
    assert outcome.returncode == 2
    assert "no-such-command" in made[0].log.read_text()


def test_the_threads_reach_the_child_environment():
    environment = trials.thread_environment(3)
    assert environment["OMP_NUM_THREADS"] == "3" and environment["MKL_NUM_THREADS"] == "3"
