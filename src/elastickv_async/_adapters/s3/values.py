"""S3 value shapes: the live JSON records of the snapshot and the dump tree's JSON files.

Live records (REFERENCE_NOTES §3.2): bucket meta ``{bucket_name, generation, created_at_hlc,
owner, region, acl}`` and the object manifest ``{upload_id, etag, size_bytes,
last_modified_hlc, content_*, cache_control, user_metadata, parts[...]}``. Dump files:
``_bucket.json`` and the ``.elastickv-meta.json`` sidecar (§3.2, §6.5), written with Go's
``json.MarshalIndent`` field order and ``omitempty`` rules.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Annotated, Any, Final, TypeAlias

import msgspec

from ..._core.gojson import go_str, marshal, marshal_indent, sorted_map
from ..._core.gojson_read import Field, decode_struct, loads, parse_tree

__all__ = [
    "CREATED_AT_HLC",
    "FORMAT_VERSION",
    "RESTORE_GENERATION",
    "RESTORE_PART_NO",
    "RESTORE_UPLOAD_ID",
    "DeclaredPart",
    "LiveBucketMeta",
    "LiveManifest",
    "PartKey",
    "bucket_json",
    "format_hlc",
    "live_bucket_meta_json",
    "live_manifest_json",
    "parse_hlc_from_rfc3339",
    "parse_live_bucket_meta",
    "parse_live_manifest",
    "parse_public_bucket",
    "parse_public_manifest",
]

#: ``format_version`` of ``_bucket.json`` and of every sidecar.
FORMAT_VERSION: Final = 1
#: What the encoder stamps into restored records (the dump keeps none of these).
RESTORE_GENERATION: Final = 1
RESTORE_UPLOAD_ID: Final = b"elastickv-restore"
RESTORE_PART_NO: Final = 1
#: The full-fidelity field of ``_bucket.json``, spelled as in the live bucket meta.
CREATED_AT_HLC: Final = "created_at_hlc"
#: The lower 16 bits of an HLC are its logical counter; the rest is Unix milliseconds.
HLC_LOGICAL_BITS: Final = 16

_LIVE_BUCKET: Final = (
    Field("bucket_name", "str"),
    Field("generation", "u64"),
    Field("created_at_hlc", "u64"),
    Field("owner", "str"),
    Field("region", "str"),
    Field("acl", "str"),
)
_LIVE_PART: Final = (
    Field("part_no", "u64"),
    Field("etag", "str"),
    Field("size_bytes", "i64"),
    Field("chunk_count", "u64"),
    Field("chunk_sizes", "list_u64"),
    Field("part_version", "u64"),
    Field("chunk_ref_version", "u64"),
    Field("offloaded", "bool"),
)
_LIVE_MANIFEST: Final = (
    Field("upload_id", "str"),
    Field("etag", "str"),
    Field("size_bytes", "i64"),
    Field("last_modified_hlc", "u64"),
    Field("content_type", "str"),
    Field("content_encoding", "str"),
    Field("cache_control", "str"),
    Field("content_disposition", "str"),
    Field("user_metadata", "map_str"),
    Field("parts", "list_struct", _LIVE_PART),
)
_PUBLIC_BUCKET: Final = (
    Field("format_version", "u32"),
    Field("name", "str"),
    Field("creation_time_iso", "str"),
    Field("owner", "str"),
    Field("region", "str"),
    Field("acl", "str"),
    Field("versioning", "str"),
    Field("policy_json", "str"),
    Field("created_at_hlc", "u64"),
)
_PUBLIC_MANIFEST: Final = (
    Field("format_version", "u32"),
    Field("etag", "str"),
    Field("size_bytes", "i64"),
    Field("last_modified", "str"),
    Field("content_type", "str"),
    Field("content_encoding", "str"),
    Field("cache_control", "str"),
    Field("content_disposition", "str"),
    Field("user_metadata", "map_str"),
)
#: Sidecar string fields after ``size_bytes``/``last_modified``, all ``omitempty``.
_CONTENT_FIELDS: Final = (
    "content_type",
    "content_encoding",
    "cache_control",
    "content_disposition",
)


# --- decode: live records -> dump files ------------------------------------------------------


class LiveBucketMeta(msgspec.Struct, frozen=True):
    """What the decoder keeps of a bucket meta record."""

    generation: int
    owner: str
    region: str
    acl: str
    #: The HLC of the bucket's creation; the node reports its CreationDate from it.
    created_at_hlc: int = 0


def parse_live_bucket_meta(value: bytes) -> LiveBucketMeta:
    """Decode a ``!s3|bucket|meta|`` value; raises ``GoJSONError``."""
    doc = decode_struct(parse_tree(value), _LIVE_BUCKET)
    return LiveBucketMeta(
        doc["generation"], doc["owner"], doc["region"], doc["acl"], doc["created_at_hlc"]
    )


def bucket_json(name: bytes, meta: LiveBucketMeta, *, full_fidelity: bool = False) -> bytes:
    """``_bucket.json``: format version, the name from the key, then non-empty owner/region/acl;
    in full-fidelity mode followed by a non-zero ``created_at_hlc`` (the exact HLC, where
    the reference's declared ``creation_time_iso`` would keep only milliseconds)."""
    optional = {"owner": meta.owner, "region": meta.region, "acl": meta.acl}
    doc: dict[str, Any] = {"format_version": FORMAT_VERSION, "name": go_str(name)}
    doc.update({field: text for field, text in optional.items() if text})
    if full_fidelity and meta.created_at_hlc:
        doc[CREATED_AT_HLC] = meta.created_at_hlc
    return marshal_indent(doc)


#: A manifest-declared part: ``(part_no, part_version, offloaded)``; offloaded parts are
#: identified by their ``chunk_ref_version``.
PartKey = tuple[int, int, bool]


class DeclaredPart(msgspec.Struct, frozen=True):
    """What a manifest says about one part: how many chunks, and their sizes."""

    chunk_count: int
    chunk_sizes: tuple[int, ...]


class LiveManifest(msgspec.Struct, frozen=True):
    """What the decoder keeps of an object manifest: the upload, the parts, the sidecar bytes."""

    upload_id: bytes
    parts: dict[PartKey, DeclaredPart]
    sidecar: bytes
    #: The manifest's claimed body size (the reference never checks it against the body).
    size_bytes: int

    def sidecar_with_size(self, size: int) -> bytes:
        """The sidecar with ``size_bytes`` replaced by the body's real length."""
        doc = {
            key: size if key == "size_bytes" else value
            for key, value in loads(self.sidecar).items()
        }
        return marshal_indent(doc)


#: Go's integer ranges (msgspec bounds must fit an int64: the top of ``uint64`` is what
#: msgspec itself can read).
_I64: TypeAlias = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
_U64: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]
_U64_MAX: Final = (1 << 64) - 1


class _PlainPart(msgspec.Struct, forbid_unknown_fields=True):
    """One element of a plain manifest's ``parts`` (see :class:`_PlainManifest`)."""

    part_no: _U64 = 0
    etag: str = ""
    size_bytes: _I64 = 0
    chunk_count: _U64 = 0
    chunk_sizes: list[_U64] | None = None
    part_version: _U64 = 0
    chunk_ref_version: _U64 = 0
    offloaded: bool = False


class _PlainManifest(msgspec.Struct, forbid_unknown_fields=True):
    """A live manifest value in the plain shape: :data:`_LIVE_MANIFEST`'s exact names, each
    absent or of exactly its JSON type (``null`` only where Go keeps a nil slice or map).

    Converting into it checks every field in C; whatever does not fit (an unknown or
    differently cased name, ``null`` for a string or a number, a value of another type)
    fails it and is left to the Go-rules reader.
    """

    upload_id: str = ""
    etag: str = ""
    size_bytes: _I64 = 0
    last_modified_hlc: _U64 = 0
    content_type: str = ""
    content_encoding: str = ""
    cache_control: str = ""
    content_disposition: str = ""
    user_metadata: dict[str, str] | None = None
    parts: list[_PlainPart] | None = None


@functools.cache
def _negative_zero() -> re.Pattern[bytes]:
    # Compiled on first use, like _surrogate: most values hold no "-0" at all.
    return re.compile(rb"[:,\[][ \t\n\r]*-0")


def _members(node: object) -> int:
    """The members of every JSON object in ``node`` (as msgspec decodes it), nested included."""
    if type(node) is dict:
        total = len(node)
        values: Any = node.values()
    elif type(node) is list:
        total, values = 0, node
    else:
        return 0
    for value in values:
        if type(value) is dict or type(value) is list:
            total += _members(value)
    return total


def _plain_manifest_doc(value: bytes) -> dict[str, Any] | None:
    """The manifest as :func:`decode_struct` gives it, when the value is plain; ``None``
    when the Go-rules reader must decide.

    msgspec reads the JSON and checks each field's type, all in C. What Go reads its own
    way is declined before or after: a repeated key (Go would still check or merge its
    earlier value), ``-0``, fractions. A ``\\u`` escape could be a lone surrogate (Go reads
    U+FFFD) or spell a name: the Go-rules reader takes it.
    """
    if b"\\u" in value or (b"-0" in value and _negative_zero().search(value)):
        return None
    # Repeated keys: msgspec keeps the last one silently. Where every colon directly follows
    # a quote, the colons number the members plus the colons inside strings; the members
    # kept can equal that only when no key repeats (and no string holds a colon).
    colons = value.count(b":")
    if value.count(b'":') != colons:
        return None
    try:
        tree = msgspec.json.decode(value)
        if _members(tree) != colons:
            return None
        live = msgspec.convert(tree, _PlainManifest)
    except (msgspec.DecodeError, RecursionError):
        return None
    except msgspec.ValidationError:  # a name or a type the struct does not take
        return None
    # msgspec takes integers past uint64 too: Go's overflow error is the general path's.
    unsigned = [live.last_modified_hlc]
    for part in live.parts or ():
        unsigned += (part.part_no, part.chunk_count, part.part_version, part.chunk_ref_version)
        unsigned += part.chunk_sizes or ()
    if max(unsigned) > _U64_MAX:
        return None
    doc: dict[str, Any] = msgspec.to_builtins(live)
    return doc


def parse_live_manifest(value: bytes) -> LiveManifest:
    """Decode a ``!s3|obj|head|`` value into its assembly plan and sidecar.

    Raises ``GoJSONError`` for bad JSON and ``ValueError`` for an offloaded part whose
    ``chunk_sizes`` do not match its ``chunk_count``.
    """
    doc = _plain_manifest_doc(value)
    if doc is None:
        doc = decode_struct(parse_tree(value), _LIVE_MANIFEST)
    parts: dict[PartKey, DeclaredPart] = {}
    for part in doc["parts"] or ():
        sizes = tuple(part["chunk_sizes"] or ())
        version = part["part_version"]
        if part["offloaded"]:
            if len(sizes) != part["chunk_count"]:
                raise ValueError(
                    f"offloaded part {part['part_no']} declares {part['chunk_count']} chunks "
                    f"but has {len(sizes)} chunk sizes"
                )
            version = part["chunk_ref_version"]
        parts[(part["part_no"], version, part["offloaded"])] = DeclaredPart(
            part["chunk_count"], sizes
        )
    return LiveManifest(
        doc["upload_id"].encode("utf-8"), parts, _sidecar_json(doc), doc["size_bytes"]
    )


def _sidecar_json(doc: dict[str, Any]) -> bytes:
    out: dict[str, Any] = {"format_version": FORMAT_VERSION}
    if doc["etag"]:
        out["etag"] = doc["etag"]
    out["size_bytes"] = doc["size_bytes"]
    last_modified = format_hlc(doc["last_modified_hlc"])
    if last_modified:
        out["last_modified"] = last_modified
    for field in _CONTENT_FIELDS:
        if doc[field]:
            out[field] = doc[field]
    if doc["user_metadata"]:
        out["user_metadata"] = sorted_map(doc["user_metadata"])
    return marshal_indent(out)


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Proleptic Gregorian date of a day count since 1970-01-01 (any year, unlike datetime)."""
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _days_from_civil(year: int, month: int, day: int) -> int:
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def format_hlc(hlc: int) -> str:
    """The HLC's millisecond part as Go's RFC3339Nano in UTC; ``""`` for a zero HLC."""
    if hlc == 0:
        return ""
    ms = hlc >> HLC_LOGICAL_BITS
    seconds, millis = divmod(ms, 1000)
    days, secs = divmod(seconds, 86400)
    year, month, day = _civil_from_days(days)
    text = (
        f"{year:04d}-{month:02d}-{day:02d}T{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
    )
    if millis:
        text += f".{millis:03d}".rstrip("0")
    return text + "Z"


# --- encode: dump files -> live records ------------------------------------------------------


def parse_public_bucket(raw: bytes) -> dict[str, Any]:
    """Decode ``_bucket.json`` like the reference encoder (one value; trailing data refused)."""
    return decode_struct(parse_tree(raw, more=True), _PUBLIC_BUCKET)


_INT_RANGES: Final = {"i64": (-(1 << 63), (1 << 63) - 1), "u32": (0, (1 << 32) - 1)}
_MISSING: Final = object()


@functools.cache
def _surrogate() -> re.Pattern[str]:
    # Compiled on first use: only a value with escapes in it is searched, and compiling at
    # import is paid by every start-up.
    return re.compile("[\ud800-\udfff]")


class _NotPlain(Exception):
    """The document needs Go's exact rules."""


def _refuse(literal: str) -> Any:
    raise _NotPlain


def _int(literal: str) -> int:
    if literal.startswith("-0"):
        raise _NotPlain  # Go refuses "-0" for unsigned fields
    return int(literal)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise _NotPlain  # Go merges a repeated map
    return doc


_PLAIN_JSON: Final = json.JSONDecoder(
    object_pairs_hook=_unique, parse_int=_int, parse_float=_refuse, parse_constant=_refuse
)


def _plain_struct(raw: bytes, fields: tuple[Field, ...]) -> dict[str, Any] | None:
    """``raw`` decoded into ``fields`` when it is plainly well formed, else ``None``.

    Plainly well formed: valid UTF-8, one object whose keys are exactly field names, none
    repeated, each value of its field's type (no ``null``, fraction, ``-0`` or lone
    surrogate). Such a document decodes to the same struct under Go's rules, which
    :func:`decode_struct` follows for every other document.
    """
    try:
        doc = _PLAIN_JSON.decode(raw.decode("utf-8"))
    except (_NotPlain, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if type(doc) is not dict:
        return None
    escaped = b"\\u" in raw
    out: dict[str, Any] = {}
    for field in fields:
        value = doc.pop(field.name, _MISSING)
        kind = field.kind
        if value is _MISSING:
            out[field.name] = "" if kind == "str" else None if kind == "map_str" else 0
        elif kind == "str":
            if type(value) is not str or (escaped and _surrogate().search(value)):
                return None
            out[field.name] = value
        elif kind == "map_str":
            if type(value) is not dict:
                return None
            for key, item in value.items():
                if type(item) is not str:
                    return None
                if escaped and (_surrogate().search(key) or _surrogate().search(item)):
                    return None
            out[field.name] = value
        elif kind in _INT_RANGES:
            low, high = _INT_RANGES[kind]
            if type(value) is not int or not low <= value <= high:
                return None
            out[field.name] = value
        else:
            return None
    return None if doc else out  # a key left over may fold onto a field: the exact reader


def parse_public_manifest(raw: bytes) -> dict[str, Any]:
    """Decode an object sidecar like the reference encoder."""
    doc = _plain_struct(raw, _PUBLIC_MANIFEST)
    if doc is None:
        doc = decode_struct(parse_tree(raw, more=True), _PUBLIC_MANIFEST)
    return doc


def live_bucket_meta_json(bucket: dict[str, Any]) -> bytes:
    """The restored ``!s3|bucket|meta|`` value: generation 1, the creation HLC a full-fidelity
    ``_bucket.json`` carries (else 0)."""
    return marshal(
        {
            "bucket_name": bucket["name"],
            "generation": RESTORE_GENERATION,
            "created_at_hlc": bucket[CREATED_AT_HLC],
            "owner": bucket["owner"],
            "region": bucket["region"],
            "acl": bucket["acl"],
        }
    )


def live_manifest_json(sidecar: dict[str, Any], chunk_sizes: list[int]) -> bytes:
    """The restored ``!s3|obj|head|`` value: one part holding every 1 MiB chunk (none if empty)."""
    metadata = sidecar["user_metadata"]
    parts = None
    if chunk_sizes:
        parts = [
            {
                "part_no": RESTORE_PART_NO,
                "etag": sidecar["etag"],
                "size_bytes": sidecar["size_bytes"],
                "chunk_count": len(chunk_sizes),
                "chunk_sizes": chunk_sizes,
                "part_version": 0,
                "chunk_ref_version": 0,
                "offloaded": False,
            }
        ]
    return marshal(
        {
            "upload_id": RESTORE_UPLOAD_ID.decode("ascii"),
            "etag": sidecar["etag"],
            "size_bytes": sidecar["size_bytes"],
            "last_modified_hlc": parse_hlc_from_rfc3339(sidecar["last_modified"]),
            "content_type": sidecar["content_type"],
            "content_encoding": sidecar["content_encoding"],
            "cache_control": sidecar["cache_control"],
            "content_disposition": sidecar["content_disposition"],
            "user_metadata": None if metadata is None else sorted_map(metadata),
            "parts": parts,
        }
    )


# Go's time.Parse(RFC3339Nano): its strict fast path, plus what its general parser also
# takes (one-digit hour, comma before the fraction, zone offsets up to 24:60).
_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{1,2}):([0-9]{2}):([0-9]{2})"
    r"(?:[.,]([0-9]+))?(?:Z|([+-])([0-9]{2}):([0-9]{2}))"
)
_DAYS_IN_MONTH: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_in(month: int, year: int) -> int:
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return 29 if month == 2 and leap else _DAYS_IN_MONTH[month - 1]


def parse_hlc_from_rfc3339(text: str) -> int:
    """Invert :func:`format_hlc`: milliseconds shifted into an HLC; 0 if empty, bad or negative."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return 0
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= _days_in(month, year)):
        return 0
    if hour > 23 or minute > 59 or second > 59:
        return 0
    offset = 0
    if match.group(8):
        zone_hour, zone_min = int(match.group(9)), int(match.group(10))
        if zone_hour > 24 or zone_min > 60:
            return 0
        offset = (zone_hour * 60 + zone_min) * 60 * (-1 if match.group(8) == "-" else 1)
    fraction = (match.group(7) or "")[:9]
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    ms = (seconds - offset) * 1000 + nanos // 1_000_000
    return ms << HLC_LOGICAL_BITS if ms >= 0 else 0
