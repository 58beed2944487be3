"""CRC32C (Castagnoli), from the ``crc32c`` package's extension module alone.

The package's ``__init__`` looks its own version up with :mod:`importlib.metadata`, whose
import (email parsing, zip and CSV readers, a scan of the installed distributions) costs a
short decode more than the checksum of its whole input. The function lives in the extension
module ``crc32c._crc32c``, which needs none of that: it is found beside the package and
loaded without running the package. Should the package ever be laid out otherwise, the
ordinary import is used.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from typing import Final

__all__ = ["crc32c"]

_EXTENSION: Final = "crc32c._crc32c"


def _load() -> Callable[..., int]:
    module = sys.modules.get(_EXTENSION)
    if module is None:
        package = importlib.util.find_spec("crc32c")  # a top-level spec: nothing runs
        locations = package.submodule_search_locations if package is not None else None
        spec = importlib.machinery.PathFinder.find_spec(_EXTENSION, locations)
        if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            from crc32c import crc32c as imported

            return imported
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        # Shared with a later ``import crc32c`` (the package imports this very module).
        sys.modules[_EXTENSION] = module
    function: Callable[..., int] = module.crc32c
    return function


_crc32c: Final = _load()


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """The CRC32C of ``data``, continuing from ``value`` (the CRC of what preceded it)."""
    return _crc32c(data, value)
