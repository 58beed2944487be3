"""Errors of the encoder core (adapter encoders define their own next to their layouts)."""

from __future__ import annotations

from ..errors import DataError, DumpTreeError, UsageError

__all__ = [
    "AdapterNotInManifest",
    "EncodeDuplicateKey",
    "EncodeKeyTooLarge",
    "EncodeValueTooLarge",
    "LastCommitTSRegression",
    "UnsupportedEncodeFeature",
]


class EncodeDuplicateKey(DumpTreeError):
    """Two records of the dump tree map to the same snapshot key."""


class EncodeKeyTooLarge(DumpTreeError):
    """A record's key is over the snapshot reader's key-length limit."""


class EncodeValueTooLarge(DumpTreeError):
    """A record's value is over the snapshot reader's value-length limit."""


class LastCommitTSRegression(UsageError):
    """The requested ``last_commit_ts`` is below the manifest's (the HLC ceiling may only rise).

    A usage error: the flag's value is wrong for this tree, the tree itself is fine.
    """


class AdapterNotInManifest(DataError):
    """An adapter was selected that the manifest does not list: its subtree would be stale."""


class UnsupportedEncodeFeature(DumpTreeError):
    """The tree was decoded with a layout or option the encoder cannot reverse yet."""
