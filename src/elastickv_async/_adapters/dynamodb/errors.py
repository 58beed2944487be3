"""Typed errors of the DynamoDB adapter (both directions).

Decode errors are :class:`AdapterRecordError` subclasses (bad data in the snapshot, exit 2);
encode errors are :class:`DumpTreeError` subclasses (bad dump tree, exit 2).
"""

from __future__ import annotations

from ..._core.errors import AdapterRecordError, DumpTreeError

__all__ = [
    "DynamoDBEncodeError",
    "DynamoDBEncodeInvalidItem",
    "DynamoDBEncodeInvalidSchema",
    "DynamoDBError",
    "DynamoDBInvalidItem",
    "DynamoDBInvalidSchema",
    "DynamoDBMalformedKey",
    "DynamoDBUnsafeTableName",
]


class DynamoDBError(AdapterRecordError):
    """A DynamoDB record in the snapshot cannot be decoded."""


class DynamoDBMalformedKey(DynamoDBError):
    """A ``!ddb|`` key does not have the documented layout (reference: ``ErrDDBMalformedKey``)."""


class DynamoDBUnsafeTableName(DynamoDBMalformedKey):
    """A table is named ``.`` or ``..``; its directory would escape ``dynamodb/``."""


class DynamoDBInvalidSchema(DynamoDBError):
    """A ``!ddb|meta|table|`` value lacks its magic or is not a schema (``ErrDDBInvalidSchema``)."""


class DynamoDBInvalidItem(DynamoDBError):
    """An item value or its primary key cannot be turned into a file (``ErrDDBInvalidItem``)."""


class DynamoDBEncodeError(DumpTreeError):
    """The ``dynamodb/`` subtree of a dump cannot be encoded."""


class DynamoDBEncodeInvalidSchema(DynamoDBEncodeError):
    """A ``_schema.json`` is malformed or inconsistent (``ErrDDBEncodeInvalidSchema``)."""


class DynamoDBEncodeInvalidItem(DynamoDBEncodeError):
    """An item file is malformed or lacks its key attributes (``ErrDDBEncodeInvalidItem``)."""
