"""The ``elastickv-async`` command's entry point.

``--version`` is answered here, before the command line parser is built: building it loads
every adapter (their options are flags), which costs more than printing a version should.
Every other invocation goes to :func:`elastickv_async._core.cli.main`, with the cyclic
garbage collector paused until the command starts: the start-up (imports, the parser) makes
many objects that live as long as the process and next to no garbage, so collections would
only traverse them. When the command starts they are frozen (:func:`gc.freeze`), out of
reach of every later collection, and collecting resumes.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from typing import Final

from .._version import __version__

__all__ = ["PROG", "main"]

PROG: Final = "elastickv-async"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    Meant to be the process's entry point: the objects alive when it returns stay frozen
    out of the garbage collector's reach (the collector itself is as the caller had it).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-version"]):
        try:
            print(f"{PROG} {__version__}", flush=True)
        except BrokenPipeError:
            import signal

            from .console import silence_stdout

            # As every other command ends on a closed stdout.
            silence_stdout()
            return 128 + signal.SIGPIPE
        return 0
    collecting = gc.isenabled()

    def started() -> None:
        gc.freeze()
        if collecting:
            gc.enable()

    gc.disable()
    try:
        from .cli import main as run

        return run(args, started=started)
    finally:
        # Frozen, not collected: this process ends now (unfrozen, or left to a command that
        # never started, they would all be traversed once more by its final collection).
        gc.freeze()
        if collecting:
            gc.enable()
