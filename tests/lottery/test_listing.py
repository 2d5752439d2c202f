"""The runs listing: state and progress read from a run's files."""

from sparse_tickets import files
from sparse_tickets.lottery import listing, locking
from sparse_tickets.lottery.hparams import Hparams
from sparse_tickets.lottery.runs import HPARAMS, Run


def _run(root, **changes):
    hp = Hparams().replace(levels=2, controls="reinit", **changes)
    run = Run.make_directory(root, hp)
    files.write_json(run.directory / HPARAMS, hp.as_dict())
    return run


def _finish(run, branch, level, **extra):
    evaluations = [{"iteration": 0, "train_loss": 2.3, "val_loss": 2.3, "test_accuracy": 0.1}]
    metrics = {"level": level, "branch": branch, "evaluations": evaluations, **extra}
    files.write_json(run.level(branch, level).metrics, metrics)


def test_a_new_run_is_stopped_with_its_planned_levels(tmp_path):
    state = listing.read_state(_run(tmp_path).directory)
    assert state.state == "stopped" and state.progress == "levels 0/3, reinit 0/2"


def test_a_run_whose_every_planned_level_finished_is_done(tmp_path):
    run = _run(tmp_path)
    for level in range(3):
        _finish(run, "main", level)
    for level in (1, 2):
        _finish(run, "reinit", level)
    state = listing.read_state(run.directory)
    assert state.state == "done" and state.progress == "levels 3/3, reinit 2/2"


def test_a_diverged_level_names_where(tmp_path):
    run = _run(tmp_path)
    _finish(run, "main", 0)
    _finish(run, "main", 1, diverged=True, divergence={"iteration": 50, "cause": "nan loss"})
    state = listing.read_state(run.directory)
    assert state.state == "diverged (main level 1, iteration 50)"
    assert state.progress.startswith("levels 1/3")


def test_a_run_whose_lock_is_held_is_running(tmp_path):
    run = _run(tmp_path)
    with locking.held(run.directory, command="sparse-tickets imp"):
        assert listing.read_state(run.directory).state.startswith("running (process ")
    assert listing.read_state(run.directory).state == "stopped"


def test_a_damaged_run_is_listed_with_the_reason(tmp_path):
    run = _run(tmp_path)
    metrics = run.level("main", 0).metrics
    metrics.parent.mkdir(parents=True)
    metrics.write_text("{not json")
    (metrics.parent / (metrics.name + ".sha256")).write_text(
        __import__("hashlib").sha256(b"{not json").hexdigest()
    )
    assert listing.read_state(run.directory).state.startswith("unreadable: ")


def test_the_table_shows_only_the_settings_that_differ(tmp_path):
    runs = [_run(tmp_path), _run(tmp_path, lr=0.01), _run(tmp_path, model_seed=3)]
    states = [listing.read_state(run.directory) for run in runs]
    assert listing.differing_fields(states) == ["lr"]
    lines = listing.table(states, tmp_path).splitlines()
    assert lines[0].split() == ["run", "name", "model/dataset", "seeds", "lr", "state", "progress"]
    assert len(lines) == 4 and any(" 3/0/1 " in line for line in lines)
    assert listing.find_runs(tmp_path) == sorted(run.directory for run in runs)
