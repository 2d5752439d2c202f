"""The ``sparse-tickets`` command line: imp, train, instability, report, runs, export, build, list.

The experiment it runs lives in :mod:`sparse_tickets.lottery`; this package only turns the
command line into calls to it: :mod:`.parser` builds the parser, one module per command group
(:mod:`.training` for ``imp`` and ``train``, :mod:`.instability`, :mod:`.trials` for
``--trials``, :mod:`.results`, :mod:`.installation`) translates its arguments, and :func:`main`
says what went wrong in one line. Every hyperparameter of
:class:`~sparse_tickets.lottery.hparams.Hparams` is a flag of ``imp`` and ``train``, generated
from the dataclass, with the preset (``--preset``, or the paper's preset for
``--model``/``--dataset``) supplying the values not given. A mistake (an invalid flag, an
unknown name, a missing data directory, a model that does not fit a dataset) is reported in one
line with exit status 2; ``SPARSE_TICKETS_DEBUG=1`` shows the traceback instead. Every value is
checked before anything trains or any directory is made. A disk that refuses a write (full,
read-only, not permitted) is one line naming the file, exit status 1; the run stays resumable.

``imp``, ``train`` and ``instability`` hold the run directory's lock while they work (see
:mod:`sparse_tickets.lottery.locking`): a second command on the same run says which process
holds it and exits with status 2, or with ``--wait`` waits for it.

``imp`` and ``train`` also run under torchrun (``torchrun --nproc_per_node N -m sparse_tickets
imp ...``): every process runs the same command, rank 0 alone writes files and shows progress
(see :mod:`sparse_tickets.lottery.distributed`).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence

from .. import files, ops, settings
from ..lottery import distributed, locking
from ..lottery.runs import Diverged
from ..ops.native.extension import ExtensionUnavailable
from . import devices, flags
from .common import FAILURE, PROG, USAGE_ERROR, UsageError
from .parser import build_parser

__all__ = ["FAILURE", "PROG", "USAGE_ERROR", "UsageError", "build_parser", "main"]

# The names these had when the command line was one module, for callers that reach into it.
_build_parser = build_parser
_hparams = flags.hparams
_named_device = devices.named_device


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return USAGE_ERROR
        args.command_line = " ".join(
            [PROG, *map(shlex.quote, sys.argv[1:] if argv is None else argv)]
        )
        return args.handler(args) or 0
    except UsageError as error:
        # Every process of a torchrun job parses the same command line: rank 0 tells.
        return _fail(str(error), quiet=distributed.launched_rank() != 0)
    except KeyboardInterrupt:
        if distributed.launched_rank() == 0:
            print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except distributed.MainRankFailed:
        return FAILURE  # rank 0 has reported its error
    except locking.RunLocked as error:
        return _fail(f"{PROG}: {error}")
    except files.WriteError as error:
        return _fail_with(error, FAILURE)
    except ExtensionUnavailable as error:  # a failed build under SPARSE_TICKETS_*_EXTENSION=force
        return _fail_with(error, FAILURE)
    except Diverged as error:  # the experiment failed, not the command line
        return _fail_with(error, FAILURE)
    except (
        ValueError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        ModuleNotFoundError,
        ops.BackendError,
        distributed.DistributedError,
    ) as error:
        # The library reports bad input as these; anything else is a bug and shows its trace.
        return _fail_with(error, USAGE_ERROR)
    except OSError as error:
        # The system refused something the command needs (a file it may not read, ...): not a
        # bug, and nothing a traceback would explain better than the error's own words.
        if error.filename is not None and error.strerror:
            error = f"cannot use {error.filename}: {error.strerror}"
        return _fail_with(error, FAILURE)


def _fail_with(error, status: int) -> int:
    if settings.debug():
        raise
    message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    rank = distributed.launched_rank()
    _fail(f"{PROG}: error: {message}" if rank == 0 else f"{PROG}: rank {rank}: error: {message}")
    return status


def _fail(message: str, quiet: bool = False) -> int:
    if not quiet:
        print(message, file=sys.stderr)
    return USAGE_ERROR
