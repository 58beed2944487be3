"""Errors of the DynamoDB adapter: one constructor per direction, the fault named by its code.

Decode faults are :class:`AdapterRecordError` (a malformed snapshot record), encode faults
:class:`DumpTreeError` (a malformed dump tree); both exit 2. Codes are the reference's
sentinel names; mypy checks every raise site's code against the lists below.
"""

from __future__ import annotations

from typing import Literal

from ..._core.errors import AdapterRecordError, DumpTreeError

__all__ = ["RecordCode", "TreeCode", "record_error", "tree_error"]

ADAPTER = "dynamodb"

RecordCode = Literal[
    "ErrDDBMalformedKey",
    "ErrDDBInvalidSchema",
    "ErrDDBInvalidItem",
]
TreeCode = Literal[
    "ErrDDBEncodeInvalidSchema",
    "ErrDDBEncodeInvalidItem",
]


def record_error(code: RecordCode, message: str, *, key: bytes | None = None) -> AdapterRecordError:
    """The error for a malformed DynamoDB record (``key`` is the snapshot key when known)."""
    return AdapterRecordError(message, code=code, adapter=ADAPTER, key=key)


def tree_error(code: TreeCode, message: str, *, path: str | None = None) -> DumpTreeError:
    """The error for a malformed ``dynamodb/`` subtree (``path`` relative to the tree's root)."""
    return DumpTreeError(message, code=code, adapter=ADAPTER, path=path)
