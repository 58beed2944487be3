"""Semantic comparison of a decoded dump tree with the state the clients read back (issue #6).

Both sides load into one neutral model, :data:`State`: per adapter, a dict from a readable
name to a normalised value. :func:`compare` then lists every discrepancy as one readable line.

Names (``/`` separates a container from what it holds, so dropping a table, bucket or queue
covers its contents):

- ``dynamodb``: ``<table>`` (key schema, attribute definitions, GSIs) and
  ``<table>/[<hash>]`` or ``<table>/[<hash>, <range>]`` (items, keyed by their key attributes,
  numbers in canonical form: ``N:10000``, ``S:user#alice``, ``B:<std base64>``);
- ``s3``: ``<bucket>``, ``<bucket>/<object key>`` and ``<bucket>/<key> (incomplete upload)``;
- ``redis``: the user key;
- ``sqs``: ``<queue>`` (queue attributes) and ``<queue>/<message id>``.

Normalisation (what "semantically equal" means here):

- DynamoDB values become ``(type, payload)`` with numbers as :class:`~decimal.Decimal` (so
  ``1`` equals ``1.0`` and ``-1.5e3`` equals ``-1500``) and SS/NS/BS as frozensets.
- S3 objects are compared by body sha256 and size plus the sidecar's ``size_bytes``, etag
  (without the quotes the API adds), content type and user metadata (names case-folded: S3
  metadata names are case-insensitive, the server stores them lowercase and the API answered
  with them capitalised).
- Redis values become bytes (strings), dicts (hashes, zsets member -> float score, stream
  entry fields), tuples (lists, streams) or frozensets (sets). The expected TTL is the
  client's absolute deadline ``client_expire_at_ms``, matched within
  :data:`TTL_TOLERANCE_MS`; ``pttl_ms_at_readback`` is relative to a read-back instant the
  expectation does not record, so it only says whether a TTL exists (``-1``: none).
- SQS messages in state ``available`` or ``in_flight`` must be present with their body, body
  MD5, message attributes, group id, sequence number and explicit deduplication id; receive
  counts and visibility are not compared (the decoder resets them by default). Queues are
  compared on the attributes a ``_queue.json`` carries, Go ``omitempty`` fields defaulting.

Everything named in ``deleted_so_far``, every ``absent`` Redis key, every ``deleted`` or
``purged`` message and every aborted upload is *absent*: finding it (or anything under it)
is reported as such, unless the expected state holds it again (deleted, then recreated). A
deletion entry's trailing `` (...)`` note is not part of the name. Names under an optional
prefix (Redis ``snapmarker:``) may be present or missing on either side.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from elastickv_async._core.dump.names import decode_segment

__all__ = [
    "TTL_TOLERANCE_MS",
    "Expectation",
    "Near",
    "State",
    "compare",
    "expectation_from_json",
    "load_expected",
    "load_tree",
]

#: adapter -> name -> normalised value
State = dict[str, dict[str, Any]]

ADAPTERS: Final = ("dynamodb", "s3", "redis", "sqs")
#: Client clock vs server clock, plus the time between the client's call and the server's.
TTL_TOLERANCE_MS: Final = 1000

_S3_SIDECAR: Final = ".elastickv-meta.json"
#: Entries at a bucket's root that belong to the dump, not to the user's objects.
_S3_CONTROL: Final = frozenset({"_bucket.json", "KEYMAP.jsonl", "_incomplete_uploads", "_orphans"})
_UPLOAD: Final = " (incomplete upload)"
_READ_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class Near:
    """An expected integer that matches anything within ``tolerance`` of ``value``."""

    value: int
    tolerance: int

    def matches(self, got: object) -> bool:
        """Whether ``got`` is an int within the tolerance."""
        return isinstance(got, int) and abs(got - self.value) <= self.tolerance

    def __repr__(self) -> str:
        return f"{self.value}±{self.tolerance}"


@dataclass(slots=True)
class Expectation:
    """The expected state, the names that must be absent, and the optional name prefixes."""

    state: State = field(default_factory=lambda: {a: {} for a in ADAPTERS})
    absent: dict[str, set[str]] = field(default_factory=lambda: {a: set() for a in ADAPTERS})
    optional_prefixes: dict[str, tuple[str, ...]] = field(default_factory=dict)


# --- comparison ------------------------------------------------------------------------------


def compare(actual: State, expected: Expectation) -> list[str]:
    """Every discrepancy between a loaded dump tree and the expectation, one line each."""
    out: list[str] = []
    for adapter in ADAPTERS:
        want = expected.state.get(adapter, {})
        got = actual.get(adapter, {})
        optional = expected.optional_prefixes.get(adapter, ())
        absent = expected.absent.get(adapter, set())
        for name in sorted(want.keys() | got.keys()):
            where = f"{adapter} {name}"
            if name in want and name in got:
                out.extend(_diff(where, want[name], got[name]))
            elif name.startswith(optional):
                continue
            elif name in want:
                out.append(f"{where}: missing")
            elif _covered(name, absent):
                out.append(f"{where}: present, but deleted, purged, dropped, aborted or excluded")
            else:
                out.append(f"{where}: unexpected (not in the expected state)")
    return out


def _covered(name: str, absent: set[str]) -> bool:
    return name in absent or any(name.startswith(a + "/") for a in absent)


def _diff(path: str, want: Any, got: Any) -> Iterator[str]:
    if isinstance(want, Near):
        if not want.matches(got):
            yield f"{path}: expected {want!r}, got {_show(got)}"
    elif isinstance(want, dict) and isinstance(got, dict):
        for key in sorted(want.keys() | got.keys(), key=repr):
            sub = f"{path}.{_name(key) if isinstance(key, bytes) else key}"
            if key not in got:
                yield f"{sub}: missing, expected {_show(want[key])}"
            elif key not in want:
                yield f"{sub}: unexpected {_show(got[key])}"
            else:
                yield from _diff(sub, want[key], got[key])
    elif isinstance(want, frozenset) and isinstance(got, frozenset):
        if want != got:
            yield f"{path}: members missing {_show(want - got)}, unexpected {_show(got - want)}"
    elif type(want) is not type(got) or want != got:
        yield f"{path}: expected {_show(want)}, got {_show(got)}"


def _show(value: Any) -> str:
    text = _render(value)
    return text if len(text) <= 160 else text[:157] + "..."


def _render(value: Any) -> str:
    """``repr``, except that sets come out sorted (their repr follows hash order)."""
    if isinstance(value, frozenset):
        return "{" + ", ".join(sorted(map(_render, value))) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_render, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_render(k)}: {_render(v)}" for k, v in value.items()) + "}"
    return repr(value)


# --- shared value helpers --------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def _read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _dump_bytes(value: str | Mapping[str, str]) -> bytes:
    """The dump's binary-safe envelope: a UTF-8 string or ``{"base64": <base64url>}``."""
    if isinstance(value, str):
        return value.encode()
    return _b64url(value["base64"])


def _client_bytes(value: str | Mapping[str, str]) -> bytes:
    """The expectation's envelope: a plain string, ``{"utf8": ...}`` or ``{"b64": <std>}``."""
    if isinstance(value, str):
        return value.encode()
    if "utf8" in value:
        return value["utf8"].encode()
    return base64.b64decode(value["b64"])


def _keymap(directory: Path) -> dict[str, bytes]:
    path = directory / "KEYMAP.jsonl"
    if not path.is_file():
        return {}
    return {rec["encoded"]: _b64url(rec["original"]) for rec in _read_jsonl(path)}


def _put(names: dict[str, Any], name: str, value: Any) -> None:
    """Add ``name``; a second record of the same name stays visible as a duplicate."""
    n = 1
    key = name
    while key in names:
        n += 1
        key = f"{name} (duplicate #{n})"
    names[key] = value


def _name(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _strip_note(entry: str) -> str:
    """``"str:counter (phase4)"`` -> ``"str:counter"``: deletion lists annotate their names."""
    head, sep, _ = entry.partition(" (")
    return head if sep else entry


# --- DynamoDB ---------------------------------------------------------------------------------

_AV_KINDS: Final[dict[str, Callable[[Any], Any]]] = {
    "S": str,
    "N": Decimal,
    "B": base64.b64decode,
    "BOOL": bool,
    "NULL": bool,
    "SS": frozenset,
    "NS": lambda v: frozenset(map(Decimal, v)),
    "BS": lambda v: frozenset(map(base64.b64decode, v)),
    "L": lambda v: tuple(map(_attribute_value, v)),
    "M": lambda v: {k: _attribute_value(x) for k, x in v.items()},
}


def _attribute_value(av: Mapping[str, Any]) -> tuple[str, Any]:
    ((kind, raw),) = av.items()
    return kind, _AV_KINDS[kind](raw)


def _item(raw: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    return {name: _attribute_value(av) for name, av in raw.items()}


def _key_text(av: tuple[str, Any]) -> str:
    kind, payload = av
    if kind == "N":
        return f"N:{payload.normalize():f}"
    if kind == "B":
        return f"B:{base64.b64encode(payload).decode()}"
    return f"{kind}:{payload}"


def _item_name(table: str, schema: Mapping[str, Any], item: Mapping[str, Any]) -> str:
    keys = [schema["hash_key"], schema["range_key"]]
    return f"{table}/[{', '.join(_key_text(item[k]) if k in item else '?' for k in keys if k)}]"


def _dump_key_schema(keys: Mapping[str, Any]) -> dict[str, Any]:
    return {"hash_key": keys["hash_key"]["name"], "range_key": keys["range_key"].get("name")}


def _load_dynamodb(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for table_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        doc = _read_json(table_dir / "_schema.json")
        table = doc["table_name"]
        schema = _dump_key_schema(doc["primary_key"])
        schema["attribute_definitions"] = {
            d["name"]: d["type"] for d in doc["attribute_definitions"]
        }
        schema["global_secondary_indexes"] = {
            g["name"]: _dump_key_schema(g["key_schema"])
            | {
                "projection": g["projection"]["type"],
                "non_key_attributes": frozenset(g["projection"].get("non_key_attributes", ())),
            }
            for g in doc.get("global_secondary_indexes", ())
        }
        _put(out, table, schema)
        for path in sorted((table_dir / "items").rglob("*.json")):
            item = _item(_read_json(path))
            _put(out, _item_name(table, schema, item), item)
    return out


def _client_key_schema(keys: Iterable[Mapping[str, str]]) -> dict[str, Any]:
    by_type = {k["KeyType"]: k["AttributeName"] for k in keys}
    return {"hash_key": by_type["HASH"], "range_key": by_type.get("RANGE")}


def _expect_dynamodb(doc: Mapping[str, Any], exp: Expectation) -> None:
    for table, spec in doc.get("tables", {}).items():
        schema = _client_key_schema(spec["key_schema"])
        schema["attribute_definitions"] = {
            d["AttributeName"]: d["AttributeType"] for d in spec["attribute_definitions"]
        }
        schema["global_secondary_indexes"] = {
            g["IndexName"]: _client_key_schema(g["KeySchema"])
            | {
                "projection": g["Projection"]["ProjectionType"],
                "non_key_attributes": frozenset(g["Projection"].get("NonKeyAttributes", ())),
            }
            for g in spec.get("global_secondary_indexes", ())
        }
        exp.state["dynamodb"][table] = schema
        for raw in spec["items"]:
            item = _item(raw)
            exp.state["dynamodb"][_item_name(table, schema, item)] = item


# --- S3 ---------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _s3_object(body: Path) -> dict[str, Any]:
    sidecar_path = body.with_name(body.name + _S3_SIDECAR)
    sidecar = _read_json(sidecar_path) if sidecar_path.is_file() else {}
    return {
        "sha256": _sha256_file(body),
        "size": body.stat().st_size,
        "size_bytes": sidecar.get("size_bytes"),
        "etag": sidecar.get("etag", ""),
        "content_type": sidecar.get("content_type", ""),
        "user_metadata": {k.lower(): v for k, v in sidecar.get("user_metadata", {}).items()},
    }


def _read_segment(raw: bytes, pos: int) -> tuple[bytes, int]:
    """One ``00 FF``-escaped, ``00 01``-terminated segment of an S3 key, and where it ends."""
    out = bytearray()
    while raw[pos : pos + 2] != b"\x00\x01":
        out.append(raw[pos])
        pos += 2 if raw[pos] == 0 else 1  # 00 FF stands for a literal 00
    return bytes(out), pos + 2


def _upload_of(record: Mapping[str, Any]) -> tuple[bytes, str]:
    """(object key, upload id) of an ``!s3|upload|meta|``/``part|`` record's key."""
    raw = base64.b64decode(record["key"])
    _, pos = _read_segment(raw, len(record["prefix"]))
    obj, pos = _read_segment(raw, pos + 8)  # the u64 bucket generation sits in between
    upload_id, _ = _read_segment(raw, pos)
    return obj, upload_id.decode()


def _load_uploads(bucket: str, path: Path, out: dict[str, Any]) -> None:
    for record in _read_jsonl(path):
        obj, upload_id = _upload_of(record)
        entry = out.setdefault(f"{bucket}/{_name(obj)}{_UPLOAD}", {"upload_id": upload_id})
        if record["prefix"].endswith("|part|"):
            value = json.loads(base64.b64decode(record["value"]))
            entry.setdefault("parts", {})[value["part_no"]] = value["size_bytes"]


def _load_s3(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for bucket_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        meta = bucket_dir / "_bucket.json"
        bucket = (
            _read_json(meta)["name"] if meta.is_file() else _name(decode_segment(bucket_dir.name))
        )
        _put(out, bucket, {})
        renamed = _keymap(bucket_dir)
        for dirpath, dirnames, filenames in os.walk(bucket_dir):
            here = Path(dirpath)
            if here == bucket_dir:
                dirnames[:] = [d for d in dirnames if d not in _S3_CONTROL]
                filenames = [f for f in filenames if f not in _S3_CONTROL]
            for fname in sorted(f for f in filenames if not f.endswith(_S3_SIDECAR)):
                rel = (here / fname).relative_to(bucket_dir).as_posix()
                key = _name(renamed[rel]) if rel in renamed else rel
                _put(out, f"{bucket}/{key}", _s3_object(here / fname))
        records = bucket_dir / "_incomplete_uploads" / "records.jsonl"
        if records.is_file():
            _load_uploads(bucket, records, out)
    return out


def _expect_s3(doc: Mapping[str, Any], exp: Expectation, incomplete_uploads: bool) -> None:
    state, absent = exp.state["s3"], exp.absent["s3"]
    for bucket, spec in doc.get("buckets", {}).items():
        state[bucket] = {}
        for key, obj in spec["objects"].items():
            state[f"{bucket}/{key}"] = {
                "sha256": obj["sha256"],
                "size": obj["size"],
                "size_bytes": obj["size"],
                "etag": obj["etag"].strip('"'),
                "content_type": obj["content_type"],
                "user_metadata": {k.lower(): v for k, v in obj["metadata"].items()},
            }
        for upload in spec.get("incomplete_multipart_uploads", ()):
            name = f"{bucket}/{upload['key']}{_UPLOAD}"
            if incomplete_uploads:
                parts = {int(n): p["size"] for n, p in upload["parts"].items()}
                state[name] = {"upload_id": upload["upload_id"], "parts": parts}
            else:
                absent.add(name)
        for aborted in spec.get("aborted_multipart_uploads", ()):
            absent.update(
                {f"{bucket}/{_strip_note(aborted)}", f"{bucket}/{_strip_note(aborted)}{_UPLOAD}"}
            )


# --- Redis ------------------------------------------------------------------------------------


def _dump_fields(fields: Iterable[Mapping[str, Any]]) -> dict[bytes, bytes]:
    return {_dump_bytes(f["name"]): _dump_bytes(f["value"]) for f in fields}


def _dump_stream(path: Path) -> tuple[Any, int | None]:
    lines = _read_jsonl(path)
    meta: dict[str, Any] = next((line for line in lines if line.get("_meta")), {})
    entries = tuple((e["id"], _dump_fields(e["fields"])) for e in lines if not e.get("_meta"))
    return entries, meta.get("expire_at_ms")


def _dump_collection(value_of: Callable[[Any], Any]) -> Callable[[Path], tuple[Any, int | None]]:
    def read(path: Path) -> tuple[Any, int | None]:
        doc = _read_json(path)
        return value_of(doc), doc["expire_at_ms"]

    return read


#: dump subdirectory -> (Redis TYPE, file extension, reader returning (value, expire_at_ms)).
#: Strings and HLLs take their TTL from the directory's ``*_ttl.jsonl`` sidecar instead.
_REDIS_DIRS: Final[dict[str, tuple[str, str, Callable[[Path], tuple[Any, int | None]]]]] = {
    "strings": ("string", ".bin", lambda p: (p.read_bytes(), None)),
    "hll": ("string", ".bin", lambda p: (p.read_bytes(), None)),
    "hashes": ("hash", ".json", _dump_collection(lambda d: _dump_fields(d["fields"]))),
    "lists": ("list", ".json", _dump_collection(lambda d: tuple(map(_dump_bytes, d["items"])))),
    "sets": ("set", ".json", _dump_collection(lambda d: frozenset(map(_dump_bytes, d["members"])))),
    "zsets": (
        "zset",
        ".json",
        _dump_collection(
            lambda d: {_dump_bytes(m["member"]): float(m["score"]) for m in d["members"]}
        ),
    ),
    "streams": ("stream", ".jsonl", _dump_stream),
}
_REDIS_TTL_SIDECARS: Final = {"strings": "strings_ttl.jsonl", "hll": "hll_ttl.jsonl"}


def _load_redis(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for db_dir in sorted(root.glob("db_*")):
        db_prefix = "" if db_dir.name == "db_0" else f"{db_dir.name}/"
        keymap = _keymap(db_dir)
        ttls = {
            rec["key"]: rec["expire_at_ms"]
            for sidecar in _REDIS_TTL_SIDECARS.values()
            if (db_dir / sidecar).is_file()
            for rec in _read_jsonl(db_dir / sidecar)
        }
        for subdir, (rtype, ext, read) in _REDIS_DIRS.items():
            for path in sorted((db_dir / subdir).glob(f"*{ext}")):
                stem = path.name.removesuffix(ext)
                key = keymap[stem] if stem in keymap else decode_segment(stem)
                value, expire = read(path)
                record = {"type": rtype, "value": value, "expire_at_ms": ttls.get(stem, expire)}
                _put(out, db_prefix + _name(key), record)
    return out


_CLIENT_REDIS_VALUES: Final[dict[str, Callable[[Any], Any]]] = {
    "string": _client_bytes,
    "hash": lambda v: {k.encode(): _client_bytes(x) for k, x in v.items()},
    "list": lambda v: tuple(map(_client_bytes, v)),
    "set": lambda v: frozenset(map(_client_bytes, v)),
    "zset": lambda v: {_client_bytes(m): float(s) for m, s in v},
    "stream": lambda v: tuple(
        (e["id"], {k.encode(): _client_bytes(x) for k, x in e["fields"].items()}) for e in v
    ),
}


def _client_expiry(spec: Mapping[str, Any], key: str) -> Near | None:
    deadline = spec.get("client_expire_at_ms")
    if deadline is not None:
        return Near(deadline, TTL_TOLERANCE_MS)
    if spec.get("pttl_ms_at_readback", -1) >= 0:
        raise ValueError(f"redis key {key!r}: a TTL without client_expire_at_ms cannot be checked")
    return None


def _expect_redis(doc: Mapping[str, Any], exp: Expectation) -> None:
    for key, spec in doc.get("keys", {}).items():
        if spec.get("absent"):
            exp.absent["redis"].add(key)
            continue
        exp.state["redis"][key] = {
            "type": spec["type"],
            "value": _CLIENT_REDIS_VALUES[spec["type"]](spec["value"]),
            "expire_at_ms": _client_expiry(spec, key),
        }
    exp.optional_prefixes["redis"] = tuple(doc.get("optional_key_prefixes", ()))


# --- SQS --------------------------------------------------------------------------------------

#: ``_queue.json`` field -> (GetQueueAttributes name, value when the dump omits it: Go omitempty).
_QUEUE_FIELDS: Final[dict[str, tuple[str, bool | int]]] = {
    "fifo": ("FifoQueue", False),
    "content_based_deduplication": ("ContentBasedDeduplication", False),
    "visibility_timeout_seconds": ("VisibilityTimeout", 0),
    "message_retention_seconds": ("MessageRetentionPeriod", 0),
    "delay_seconds": ("DelaySeconds", 0),
    "receive_message_wait_seconds": ("ReceiveMessageWaitTimeSeconds", 0),
    "maximum_message_size": ("MaximumMessageSize", 0),
}
#: Message states of the expectation that a decoded snapshot must hold.
_LIVE_STATES: Final = ("available", "in_flight")
_GONE_STATES: Final = ("deleted", "purged")


def _attributes(raw: Mapping[str, Any], binary: Callable[[Any], bytes]) -> dict[str, Any]:
    return {
        name: (a["DataType"], binary(a["BinaryValue"]) if "BinaryValue" in a else a["StringValue"])
        for name, a in raw.items()
    }


def _message(
    body: bytes,
    md5: str,
    attributes: dict[str, Any],
    group: str | None,
    sequence: int | None,
    dedup: str | None,
) -> dict[str, Any]:
    out = {
        "body": body,
        "md5_of_body": md5,
        "message_attributes": attributes,
        "group_id": group,
        "sequence_number": sequence,
    }
    # Only explicit deduplication ids are recorded by the client; content-based ones are not.
    return out if dedup is None else out | {"dedup_id": dedup}


def _load_sqs(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for queue_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        doc = _read_json(queue_dir / "_queue.json")
        queue = doc["name"]
        _put(out, queue, {f: doc.get(f, default) for f, (_, default) in _QUEUE_FIELDS.items()})
        messages = queue_dir / "messages.jsonl"
        for m in _read_jsonl(messages) if messages.is_file() else ():
            value = _message(
                _dump_bytes(m["body"]),
                m.get("md5_of_body", ""),
                _attributes(m.get("message_attributes", {}), base64.b64decode),
                m.get("message_group_id"),
                m.get("sequence_number"),
                m.get("message_deduplication_id"),
            )
            _put(out, f"{queue}/{m['message_id']}", value)
    return out


def _queue_attribute(text: str, default: bool | int) -> bool | int:
    return text == "true" if isinstance(default, bool) else int(text)


def _expect_sqs(doc: Mapping[str, Any], exp: Expectation) -> None:
    for queue, spec in doc.get("queues", {}).items():
        attrs = spec["attributes_at_readback"]
        exp.state["sqs"][queue] = {
            f: _queue_attribute(attrs[aws], default) for f, (aws, default) in _QUEUE_FIELDS.items()
        }
        for m in spec["messages"]:
            name = f"{queue}/{m['message_id']}"
            state = m["state"].partition("(")[0]
            if state in _GONE_STATES:
                exp.absent["sqs"].add(name)
                continue
            if state not in _LIVE_STATES:
                raise ValueError(f"sqs message {name}: unknown state {m['state']!r}")
            sequence = m["sequence_number"]
            exp.state["sqs"][name] = _message(
                m["body"].encode(),
                m["md5_of_body"],
                _attributes(m["message_attributes"], _client_bytes),
                m["group_id"],
                None if sequence is None else int(sequence),
                m["dedup_id"],
            )


# --- entry points -----------------------------------------------------------------------------

_TREE_LOADERS: Final[dict[str, Callable[[Path], dict[str, Any]]]] = {
    "dynamodb": _load_dynamodb,
    "s3": _load_s3,
    "redis": _load_redis,
    "sqs": _load_sqs,
}
#: ``deleted_so_far`` list -> adapter whose names it holds. ``sqs_purged`` names queues that
#: still exist; their purged messages are listed (state ``purged``) under ``sqs.queues``.
_DELETED_LISTS: Final = {
    "redis_keys": "redis",
    "ddb_tables": "dynamodb",
    "s3_buckets": "s3",
    "s3_objects": "s3",
    "sqs_queues": "sqs",
}


def load_tree(root: Path) -> State:
    """Load a decoded dump tree (``per-item`` DynamoDB layout) into the neutral model."""
    return {
        adapter: load(root / adapter) if (root / adapter).is_dir() else {}
        for adapter, load in _TREE_LOADERS.items()
    }


def expectation_from_json(
    doc: Mapping[str, Any], *, incomplete_uploads: bool = False
) -> Expectation:
    """Build the expectation from a parsed ``expected.json``.

    ``incomplete_uploads`` says whether the tree was decoded with
    ``include_incomplete_uploads``: then the incomplete uploads must be present (part numbers
    and sizes), otherwise absent.
    """
    exp = Expectation()
    _expect_dynamodb(doc.get("dynamodb", {}), exp)
    _expect_s3(doc.get("s3", {}), exp, incomplete_uploads)
    _expect_redis(doc.get("redis", {}), exp)
    _expect_sqs(doc.get("sqs", {}), exp)
    for section, adapter in _DELETED_LISTS.items():
        exp.absent[adapter].update(map(_strip_note, doc.get("deleted_so_far", {}).get(section, ())))
    return exp


def load_expected(path: Path, *, incomplete_uploads: bool = False) -> Expectation:
    """Read ``<snapshot>.expected.json`` into an :class:`Expectation`."""
    return expectation_from_json(_read_json(path), incomplete_uploads=incomplete_uploads)
