"""Names in the SQS part of a dump tree (REFERENCE_NOTES §3.4).

``sqs/<EncodeSegment(queue name)>/`` holds ``_queue.json``, ``messages.jsonl`` and, with
``--include-sqs-side-records``, ``_internals/side_records.jsonl``. Side records of a queue
without meta go to ``sqs/<base64url queue segment>.orphan/_internals/``.
"""

from __future__ import annotations

from typing import Final

import orjson

from ..base import BYTES, FileComparison
from .keys import RESTORE_GENERATION

__all__ = [
    "MESSAGES_FILE",
    "ORPHAN_SUFFIX",
    "QUEUE_FILE",
    "ROOT",
    "SIDE_RECORDS_FILE",
    "same_after_restore",
    "self_test_comparison",
]

ROOT: Final = "sqs"
QUEUE_FILE: Final = "_queue.json"
MESSAGES_FILE: Final = "messages.jsonl"
SIDE_RECORDS_FILE: Final = "_internals/side_records.jsonl"
ORPHAN_SUFFIX: Final = ".orphan"

#: The top-level field of a ``messages.jsonl`` line that a restore rewrites.
_GENERATION_FIELD: Final = b'"queue_generation":'


def _restore_generation(line: bytes) -> bytes | None:
    """``line`` with its top-level ``queue_generation`` value set to the restore generation."""
    try:
        generation = orjson.loads(line).get("queue_generation")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if type(generation) is not int:
        return None
    token = _GENERATION_FIELD + str(generation).encode()
    # The top-level field follows every field that can hold nested keys (message_attributes),
    # and inside strings a quote is always escaped, so its last occurrence is the field itself.
    at = line.rfind(token)
    end = at + len(token)
    if at < 0 or line[end : end + 1] not in (b",", b"}"):
        return None
    return line[:at] + _GENERATION_FIELD + str(RESTORE_GENERATION).encode() + line[end:]


def same_after_restore(input_line: bytes, decoded_line: bytes) -> bool:
    """Whether a re-decoded ``messages.jsonl`` line is ``input_line`` after a restore.

    The encoder restores every queue at generation 1, so a message's ``queue_generation``
    legitimately changes from the dump's value to 1 (the reference reports every such queue
    as differing). Exactly that one token may differ; every other byte must match.
    """
    return _restore_generation(input_line) == decoded_line


_MESSAGES: Final = FileComparison(lines_match=same_after_restore)


def self_test_comparison(path: str) -> FileComparison:
    """How the self-test compares ``path`` (inside ``sqs/``): messages with the generation
    rebased, everything else byte for byte."""
    parts = path.split("/")
    return _MESSAGES if len(parts) == 2 and parts[1] == MESSAGES_FILE else BYTES
