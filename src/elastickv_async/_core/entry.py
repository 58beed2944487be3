"""The ``elastickv-async`` command's entry point.

``--version`` is answered here, before the command line parser is built: building it loads
every adapter (their options are flags), which costs more than printing a version should.
Every other invocation goes to :func:`elastickv_async._core.cli.main`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Final

from .._version import __version__

__all__ = ["PROG", "main"]

PROG: Final = "elastickv-async"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
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
    from .cli import main as run

    return run(args)
