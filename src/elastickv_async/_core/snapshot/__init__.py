"""Reading ``.fsm`` snapshots.

``framing`` decodes the byte stream (kv-FSM header, ``EKVPBBL1`` entries, raw store keys),
``footer`` checks the CRC32C footer, ``reader`` is the async API over a file, ``mvcc``
reduces raw versions to what a client sees at ``last_commit_ts``, ``source`` reads the
snapshot index from a file name, ``entry`` holds the shared data types.
"""
