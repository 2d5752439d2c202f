"""What installing the package puts on the path: sparse_tickets alone, its kernels inside it."""

import importlib.metadata
import os
import subprocess
import sys

import pytest


def _installed():
    try:
        return importlib.metadata.distribution("sparse_tickets")
    except importlib.metadata.PackageNotFoundError:
        # The README's test command installs it: a test of the install needs one.
        pytest.fail(
            'sparse_tickets is not installed (pip install -e ".[test]", as the '
            "README's test command does)",
            pytrace=False,
        )


def test_the_only_top_level_package_installed_is_sparse_tickets():
    top_level = (_installed().read_text("top_level.txt") or "").split()
    assert top_level == ["sparse_tickets"]


def test_the_kernels_import_from_inside_the_package_anywhere(tmp_path):
    _installed()
    # From another directory (not the repository's root, whose kernels/ folder would be found
    # as a top-level package), with nothing added to the path.
    code = (
        "import importlib.util, pathlib, sparse_tickets.kernels as k; "
        "ours = pathlib.Path(k.__file__).parent; "
        "other = importlib.util.find_spec('kernels'); "
        "print(ours.name, other is None or pathlib.Path(other.origin).parent != ours)"
    )
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["kernels", "True"]


def test_triton_is_a_declared_dependency_where_it_has_wheels():
    requirements = _installed().requires or []
    (triton,) = [r for r in requirements if r.startswith("triton")]
    assert ">=3.6" in triton and "platform_system" in triton


def test_the_version_is_written_once_in_the_package_and_setup_reads_it():
    import sparse_tickets

    assert _installed().version == sparse_tickets.__version__
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    setup = subprocess.run(
        [sys.executable, "setup.py", "--version"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    )
    assert setup.stdout.split()[-1] == sparse_tickets.__version__
