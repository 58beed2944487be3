"""The CRC32C loaded from the extension module alone is the package's function."""

from __future__ import annotations

import random

import crc32c as package

from elastickv_async._core.crc import crc32c


def test_the_extension_checksum_is_the_packages_in_one_piece_and_continued() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    rng = random.Random(7)
    for size in (0, 1, 3, 4, 5, 1000, 65_537):
        data = rng.randbytes(size)
        assert crc32c(data) == package.crc32c(data)
        cut = size // 3
        assert crc32c(memoryview(data)[cut:], crc32c(data[:cut])) == package.crc32c(data)
