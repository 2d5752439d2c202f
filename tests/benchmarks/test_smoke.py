"""The benchmark suites run end to end on tiny shapes, and the report turns their JSON into the
table and the plots: ``python -m benchmarks.run --quick`` in a subprocess, as a user runs it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARK_DIR = REPO_ROOT / "benchmarks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def benchmark_functions() -> set[tuple[str, str]]:
    """``(module file, test function)`` of every benchmark in the suites."""
    functions = set()
    for module in BENCHMARK_DIR.glob("test_*.py"):
        for name in re.findall(r"^def (test_\w+)\(", module.read_text(), re.MULTILINE):
            functions.add((module.name, name))
    return functions


def test_quick_run_times_every_benchmark_and_writes_the_report(tmp_path):
    # Without TRITON_INTERPRET (tests/kernels sets it for this process): interpreted kernels
    # would make the triton backend available on the CPU, with meaningless and slow timings.
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--output", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The 2:4 rows of the masked linear need an sm80+ GPU: skipped, saying why, not failed.
    assert "2:4 rows run on CUDA only" in result.stdout

    results = json.loads((tmp_path / "results.json").read_text())
    timed = {
        (Path(row["fullname"].split("::")[0]).name, row["name"].split("[")[0])
        for row in results["benchmarks"]
    }
    assert benchmark_functions() <= timed
    assert len(benchmark_functions()) >= 7
    # Machine fields of the conftest hook, and raw per-round timings stripped.
    for field in ("device_name", "torch_threads", "torch_version", "triton_version", "git_commit"):
        assert field in results["machine_info"]
    assert all("data" not in row["stats"] for row in results["benchmarks"])
    # Every group has its dense row, so every row gets a ratio to dense.
    groups = {row["group"] for row in results["benchmarks"]}
    dense_groups = {
        row["group"] for row in results["benchmarks"] if row["extra_info"]["provider"] == "dense"
    }
    assert groups == dense_groups

    # Every suite times the compact mode, each row naming the backend it was given.
    compact = [row for row in results["benchmarks"] if row["extra_info"]["provider"] == "compact"]
    assert {Path(row["fullname"].split("::")[0]).name for row in compact} == {
        module for module, _ in benchmark_functions()
    }
    assert all(row["extra_info"]["backend"] for row in compact)

    table = (tmp_path / "results.md").read_text()
    for family in ("masked_linear", "masked_conv2d", "optimizer", "train_step", "end_to_end"):
        assert f"## {family}" in table
        assert (tmp_path / f"{family}.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "| reference |" in table and "| prune_style |" in table
    assert f"| compact ({compact[0]['extra_info']['backend']}) |" in table
    assert not list(tmp_path.glob(".*partial*"))
