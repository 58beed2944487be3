"""The CRC32C footer of on-disk ``fsm-snap/<index>.fsm`` files.

A node appends a 4-byte big-endian CRC32C (Castagnoli) of everything before it: the kv-FSM
header plus the store stream. Whether the last 4 bytes are a footer is only known at the end
of the stream, so the running checksum always leaves the latest 4 bytes out until then.
"""

from __future__ import annotations

from typing import Final

from ..crc import crc32c
from ..errors import SnapshotFormatError

__all__ = ["RunningCrc32c"]

_HELD: Final = 4


class RunningCrc32c:
    """Incremental CRC32C of a byte stream that keeps its last 4 bytes aside.

    :meth:`update` takes the stream's bytes in order. :meth:`verify_footer` checks a footer
    against the checksum of everything before it; :meth:`payload_crc32c` is the checksum of
    the whole stream, or of the stream minus its verified footer.
    """

    def __init__(self) -> None:
        self._crc = 0
        self._held = b""
        self._footer_verified = False

    def update(self, data: bytes) -> None:
        """Add the next bytes of the stream."""
        if len(data) >= _HELD:
            self._crc = crc32c(self._held, value=self._crc)
            self._crc = crc32c(memoryview(data)[:-_HELD], value=self._crc)
            self._held = data[-_HELD:]
        else:
            joined = self._held + data
            cut = max(len(joined) - _HELD, 0)
            self._crc = crc32c(joined[:cut], value=self._crc)
            self._held = joined[cut:]

    def verify_footer(self, footer: bytes) -> None:
        """Check that ``footer`` (the stream's last 4 bytes) is the CRC32C of what precedes it.

        Raises :class:`SnapshotFormatError` (``ErrSnapshotChecksumMismatch``) otherwise.
        """
        if footer != self._held or len(footer) != _HELD:
            raise RuntimeError("the footer must be the last 4 bytes given to update()")
        stored = int.from_bytes(footer, "big")
        if stored != self._crc:
            raise SnapshotFormatError(
                f"CRC32C footer {stored:#010x} does not match the payload's {self._crc:#010x}",
                code="ErrSnapshotChecksumMismatch",
            )
        self._footer_verified = True

    def payload_crc32c(self) -> int:
        """CRC32C of the stream so far, excluding the footer once it has been verified."""
        if self._footer_verified:
            return self._crc
        return crc32c(self._held, value=self._crc)
