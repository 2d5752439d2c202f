"""Writing the whole-step and whole-IMP results: where they go, atomically, with the machine
they were measured on at the top of every table."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from . import machine

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def output_directory(output: Path | None) -> Path:
    """``output``, or ``benchmarks/results/<device slug>/``; made if missing."""
    directory = Path(output) if output is not None else RESULTS_DIR / machine.device_slug("cpu")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``: a
    reader sees the old file or the new one, never half of one."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        f.write(text)
    os.chmod(f.name, 0o644)  # NamedTemporaryFile makes it private; results are for reading
    os.replace(f.name, path)


def write_json(path: Path, data: dict) -> None:
    write_atomically(path, json.dumps(data, indent=1) + "\n")


def write_results(
    output: Path, json_name: str, results: dict, markdown_name: str, markdown: str
) -> None:
    """A benchmark's results as JSON and its markdown tables, each written atomically."""
    write_json(output / json_name, results)
    write_atomically(output / markdown_name, markdown)


def machine_lines(described: dict) -> list[str]:
    """The markdown lines naming the CPU, threads, torch and commit of a result."""
    return [
        f"- CPU: {described['device_name']}",
        f"- torch threads: {described['torch_threads']}",
        f"- torch: {described['torch_version']}",
        f"- commit: {described['git_commit']}"
        + (
            f" plus uncommitted changes to {', '.join(described['uncommitted_changes'])}"
            if described.get("uncommitted_changes")
            else ""
        ),
    ]


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def uncommitted_changes() -> list[str]:
    """Tracked files that differ from the commit (``git status --porcelain``): a result
    measured on a working tree that is not the commit says so."""
    try:
        result = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=machine.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line[3:] for line in result.stdout.splitlines() if line.strip()]


def describe() -> dict:
    """The machine fields, plus the uncommitted changes the measured code had."""
    return {**machine.describe("cpu"), "uncommitted_changes": uncommitted_changes()}
