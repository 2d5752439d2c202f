"""``build`` and ``list``: the compiled kernels and what can be named on the command line."""

from __future__ import annotations

from ..lottery import catalogue


def run_build(args) -> int:
    from ..ops.native import extension

    failed = False
    for spec in (extension.CPU, extension.CUDA):
        reason = extension.unavailable_reason(spec, retry=True)  # a remembered failure too
        if reason is None:
            record = extension.build_record(spec)
            when = (
                "already built"
                if record.build_seconds is None
                else f"built in {record.build_seconds:.0f} s"
            )
            print(f"{spec.kind} extension: {when}: {record.library}")
        else:
            print(f"{spec.kind} extension: {reason}")
        failed |= reason is not None and spec is extension.CPU
    _print(catalogue.backend_lines())
    return 1 if failed else 0


def run_list(args) -> int:
    _print(catalogue.lines())
    return 0


def _print(lines: list[str]) -> None:
    for line in lines:
        print(line)
