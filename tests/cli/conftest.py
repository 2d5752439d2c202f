import pytest

from sparse_tickets.cli import main

# A short IMP on the embedded digits: small enough for the test suite, long enough to prune,
# rewind, run both controls and checkpoint mid-level.
SHORT = [
    "--iterations",
    "60",
    "--levels",
    "2",
    "--eval-every",
    "20",
    "--checkpoint-every",
    "25",
    "--train-size",
    "600",
    "--quiet",
]


@pytest.fixture(scope="session")
def short_run(tmp_path_factory):
    """One finished short IMP run with both controls and its report: (runs dir, run dir)."""
    runs = tmp_path_factory.mktemp("runs")
    assert (
        main(["imp", *SHORT, "--controls", "reinit,random_pruning", "--runs-dir", str(runs)]) == 0
    )
    (run_directory,) = runs.iterdir()
    return runs, run_directory
