"""The encoder core: a dump tree in, a byte-exact ``.fsm`` snapshot out.

Adapter encoders (``adapters/<name>/encode.py``) yield ``(user_key, user_value)`` records;
this package stamps, sorts (with bounded memory), frames, self-tests and publishes them.
"""

from __future__ import annotations

from .api import EncodeResult, encode_snapshot, parse_last_commit_ts

__all__ = ["EncodeResult", "encode_snapshot", "parse_last_commit_ts"]
