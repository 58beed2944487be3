"""One exception hierarchy for the whole package.

Every error the engine raises on purpose is an :class:`ElasticKVError`. The CLI maps the
hierarchy to exit codes through :attr:`ElasticKVError.exit_code`: usage and environment
problems exit 1, problems with the data (the snapshot or the dump tree) exit 2.
Adapters define their own subclasses of :class:`AdapterRecordError` / :class:`DumpTreeError`
next to their key layouts.
"""

from __future__ import annotations


class ElasticKVError(Exception):
    """Base class of every error raised on purpose by elastickv-async."""

    exit_code: int = 2


class UsageError(ElasticKVError):
    """Bad flags, bad options or a missing input: the caller must change the call."""

    exit_code = 1


class OutputError(ElasticKVError):
    """The output location cannot be written safely (symlink, escape, I/O failure)."""

    exit_code = 1


class DataError(ElasticKVError):
    """The input data (snapshot or dump tree) is malformed or inconsistent."""

    exit_code = 2


# --- snapshot stream -------------------------------------------------------------------------


class SnapshotFormatError(DataError):
    """The .fsm stream violates the framing rules."""


class SnapshotBadMagic(SnapshotFormatError):
    """The stream does not start with a known magic."""


class SnapshotUnsupportedFormat(SnapshotFormatError):
    """A recognised but unsupported snapshot format (e.g. SST-ingest ``EKVSSTI1``)."""


class SnapshotUnknownHeader(SnapshotFormatError):
    """A kv-FSM header ``EKVTHLC?`` of an unknown version or with a bad length."""


class SnapshotTruncated(SnapshotFormatError):
    """The stream ends inside a header, a length field or a key/value body."""


class SnapshotKeyTooLarge(SnapshotFormatError):
    """A key length prefix is over the reference's limit."""


class SnapshotValueTooLarge(SnapshotFormatError):
    """A value length prefix is over the reference's limit."""


class SnapshotShortKey(SnapshotFormatError):
    """An encoded key is shorter than its 8-byte timestamp suffix."""


class SnapshotShortValue(SnapshotFormatError):
    """An encoded value is shorter than its 9-byte value header."""


class SnapshotEncryptedEntry(SnapshotFormatError):
    """An entry is encrypted; the decoder cannot read it."""


class SnapshotEncryptedReserved(SnapshotFormatError):
    """An entry's value header uses reserved bits or a reserved encryption state."""


class SnapshotChecksumMismatch(SnapshotFormatError):
    """The CRC32C footer does not match the payload."""


# --- adapters and dump trees -----------------------------------------------------------------


class AdapterRecordError(DataError):
    """An adapter met a malformed key or value in the snapshot."""


class DumpTreeError(DataError):
    """A dump tree (encoder input) is malformed."""


class UnsafeDumpEntry(DumpTreeError):
    """A dump tree entry that must not be read: a symlink, a special file, a hard link, or
    a file replaced while the tree was read. The message names its path."""


class ManifestError(DumpTreeError):
    """MANIFEST.json is missing fields, malformed or of an unsupported version."""


class InvalidEncodedSegment(DataError):
    """A filename segment is not a valid encoded key segment."""


class ShaFallbackNeedsKeymap(InvalidEncodedSegment):
    """A SHA-fallback filename cannot be decoded without its KEYMAP record."""


class InvalidKeymapRecord(DumpTreeError):
    """A KEYMAP.jsonl line is malformed."""


class SelfTestMismatch(DataError):
    """The encoder's self-test decoded its own output to a different tree."""
