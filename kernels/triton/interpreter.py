"""Whether triton runs kernels in its CPU interpreter (plain Python, importable without triton)."""

from sparse_tickets import settings


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET`` asks triton to interpret kernels on the CPU. Tile and
    autotune choices shrink then: the interpreter is slow and its timings mean nothing."""
    return settings.triton_interpret()
