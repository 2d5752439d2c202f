"""Whether triton runs kernels in its CPU interpreter (plain Python, importable without triton)."""

import os


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET`` asks triton to interpret kernels on the CPU. Tile and
    autotune choices shrink then: the interpreter is slow and its timings mean nothing."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")
