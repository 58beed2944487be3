"""Names in the SQS part of a dump tree (REFERENCE_NOTES §3.4).

``sqs/<EncodeSegment(queue name)>/`` holds ``_queue.json``, ``messages.jsonl`` and, with
``--include-sqs-side-records``, ``_internals/side_records.jsonl``. Side records of a queue
without meta go to ``sqs/<base64url queue segment>.orphan/_internals/``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MESSAGES_FILE", "ORPHAN_SUFFIX", "QUEUE_FILE", "ROOT", "SIDE_RECORDS_FILE"]

ROOT: Final = "sqs"
QUEUE_FILE: Final = "_queue.json"
MESSAGES_FILE: Final = "messages.jsonl"
SIDE_RECORDS_FILE: Final = "_internals/side_records.jsonl"
ORPHAN_SUFFIX: Final = ".orphan"
