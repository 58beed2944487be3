"""MANIFEST.json: the dump tree's self-description (REFERENCE_NOTES §5.1).

Field names, order and policy constants live here and nowhere else. The manifest is the last
file a decode writes, so a tree without it is recognisably incomplete.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

from .. import gojson
from ..errors import ManifestError
from ..gojson_read import (
    GoJSONError,
    as_bool,
    as_int,
    as_object,
    as_str,
    get_int,
    get_list,
    get_str,
    loads,
)

__all__ = [
    "CHECKSUMS_NONE",
    "CHECKSUM_ALGORITHM",
    "CHECKSUM_FORMAT",
    "CURRENT_FORMAT_VERSION",
    "ENCODED_FILENAME_CHARSET",
    "MANIFEST_NAME",
    "OUTPUT_ROOTS",
    "PHASE_LIVE",
    "PHASE_SNAPSHOT",
    "SCOPE",
    "DecodeManifest",
    "Manifest",
    "ManifestField",
    "ManifestReader",
    "optional_exclusion",
    "read_manifest",
    "read_output_roots",
    "read_scope",
    "required_exclusion",
    "required_string",
    "rfc3339nano",
]

MANIFEST_NAME: Final = "MANIFEST.json"
CURRENT_FORMAT_VERSION: Final = 1
PHASE_SNAPSHOT: Final = "phase0-snapshot-decode"
PHASE_LIVE: Final = "phase1-live-pinned"
CHECKSUM_ALGORITHM: Final = "sha256"
CHECKSUM_FORMAT: Final = "sha256sum"
#: ``checksum_algorithm`` and ``checksum_format`` of a tree decoded without CHECKSUMS.
CHECKSUMS_NONE: Final = "none"
ENCODED_FILENAME_CHARSET: Final = "rfc3986-unreserved-plus-percent"
KEY_SEGMENT_MAX_BYTES: Final = 240
EXCLUSIONS: Final = "exclusions"
FULL_FIDELITY: Final = "full_fidelity"
#: The top-level field of a scoped tree: ``{"<adapter>": ["<name or glob>", ...]}``.
SCOPE: Final = "scope"
#: The top-level field of a tree decoded with ``--output-root``: ``{"<adapter>": "<abs dir>"}``.
OUTPUT_ROOTS: Final = "output_roots"


class ManifestField(msgspec.Struct, frozen=True):
    """A MANIFEST.json field an adapter writes.

    ``order`` places the field among the other adapters' fields of the same ``section``: the
    reference's ``Manifest`` and ``Exclusions`` structs interleave adapters, and the document
    keeps their field order.
    """

    section: Literal["exclusions", "top"]
    key: str
    value: Any
    order: int


#: Reads one adapter's MANIFEST fields back into the options the tree was decoded with.
ManifestReader = Callable[[Mapping[str, Any]], Any]


def _text(name: str) -> str:
    """A name as JSON text: bytes that are not UTF-8 (surrogates) read as U+FFFD, as Go's."""
    return gojson.go_str(name.encode("utf-8", "surrogateescape"))


def rfc3339nano(moment: datetime) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: fractional seconds with trailing zeros trimmed."""
    moment = moment.astimezone(UTC)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        base += "." + f"{moment.microsecond:06d}".rstrip("0")
    return base + "Z"


class DecodeManifest(msgspec.Struct):
    """The facts a decode run records in MANIFEST.json.

    ``adapters`` are the adapters that ran (each gets its ``scopes`` entry); ``fields`` are
    every registered adapter's own fields (exclusions and policy), placed by their order.
    """

    adapters: Sequence[str]
    #: ``None`` for a cluster dump: its sources are listed per group in ``cluster``.
    fsm_path: str | None
    last_commit_ts: int
    elastickv_version: str
    wall_time: datetime
    cluster_id: str = ""
    snapshot_index: int | None = None
    fsm_crc32c: int | None = None
    hlc_ceiling_ms: int | None = None
    scopes: Mapping[str, Mapping[str, Any]] = msgspec.field(default_factory=dict)
    #: The ``--scope`` the tree was decoded with (adapter to names); written only when set,
    #: so that a scoped tree never passes for a full backup.
    scope: Mapping[str, Sequence[str]] = msgspec.field(default_factory=dict)
    #: A cluster dump's ``cluster`` section (its groups; not a cross-group point in time).
    cluster: Mapping[str, Any] | None = None
    fields: Sequence[ManifestField] = ()
    #: Written only when set, so a default decode stays byte-identical to the reference's.
    full_fidelity: bool = False
    #: :data:`CHECKSUM_ALGORITHM`, or :data:`CHECKSUMS_NONE` for a tree without CHECKSUMS.
    checksums: str = CHECKSUM_ALGORITHM
    #: Where each redirected adapter's subtree was written (absolute paths); written only
    #: when set, like ``full_fidelity``.
    output_roots: Mapping[str, str] = msgspec.field(default_factory=dict)

    def to_json(self) -> bytes:
        """Serialise exactly like the reference (2-space indent, no HTML escaping, newline)."""
        doc: dict[str, Any] = {
            "format_version": CURRENT_FORMAT_VERSION,
            "phase": PHASE_SNAPSHOT,
        }
        if self.elastickv_version:
            doc["elastickv_version"] = self.elastickv_version
        if self.cluster_id:
            doc["cluster_id"] = self.cluster_id
        if self.snapshot_index:
            doc["snapshot_index"] = self.snapshot_index
        if self.last_commit_ts:
            doc["last_commit_ts"] = self.last_commit_ts
        doc["wall_time_iso"] = rfc3339nano(self.wall_time)
        if self.fsm_path is not None:
            source: dict[str, Any] = {
                "fsm_path": gojson.go_str(self.fsm_path.encode(errors="surrogateescape"))
            }
            if self.fsm_crc32c is not None:
                source["fsm_crc32c"] = f"{self.fsm_crc32c:08x}"
            if self.hlc_ceiling_ms is not None:
                source["hlc_ceiling_ms"] = self.hlc_ceiling_ms
            doc["source"] = source
        if self.cluster is not None:
            doc["cluster"] = dict(self.cluster)
        doc["adapters"] = {name: dict(self.scopes.get(name, {})) for name in self.adapters}
        if self.scope:
            doc[SCOPE] = {name: [_text(n) for n in names] for name, names in self.scope.items()}
        ordered = sorted(self.fields, key=lambda f: f.order)
        doc[EXCLUSIONS] = {f.key: f.value for f in ordered if f.section == EXCLUSIONS}
        with_sums = self.checksums != CHECKSUMS_NONE
        doc["checksum_algorithm"] = CHECKSUM_ALGORITHM if with_sums else CHECKSUMS_NONE
        doc["checksum_format"] = CHECKSUM_FORMAT if with_sums else CHECKSUMS_NONE
        doc["encoded_filename_charset"] = ENCODED_FILENAME_CHARSET
        doc["key_segment_max_bytes"] = KEY_SEGMENT_MAX_BYTES
        if self.full_fidelity:
            doc[FULL_FIDELITY] = True
        if self.output_roots:
            doc[OUTPUT_ROOTS] = dict(self.output_roots)
        doc |= {f.key: f.value for f in ordered if f.section != EXCLUSIONS}
        return gojson.encoder_indent(doc, escape_html=False)


# --- reading (the encoder's input gate) ------------------------------------------------------

_PHASES: Final = (PHASE_SNAPSHOT, PHASE_LIVE)
#: Go's ``time.RFC3339Nano`` as ``time.Parse`` accepts it (any number of fraction digits).
_RFC3339_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:Z|[+-](\d{2}):(\d{2}))",
    re.ASCII,
)


class Manifest(msgspec.Struct, frozen=True):
    """A validated MANIFEST.json as the encoder sees it.

    ``adapters`` holds only the adapters the producer listed with a non-null scope (Go's nil
    pointer test); ``adapter_options`` holds, for every adapter known to the reader, the
    decode options its own fields say the tree was produced with; ``raw`` is the whole
    parsed document for consumers that need more.
    """

    format_version: int
    phase: str
    wall_time_iso: str
    adapters: Mapping[str, Mapping[str, Any]]
    adapter_options: Mapping[str, Any]
    checksum_algorithm: str
    checksum_format: str
    encoded_filename_charset: str
    key_segment_max_bytes: int
    elastickv_version: str = ""
    cluster_id: str = ""
    snapshot_index: int = 0
    last_commit_ts: int = 0
    source: Mapping[str, Any] | None = None
    live: Mapping[str, Any] | None = None
    #: The tree was decoded with ``full_fidelity`` (absent: false).
    full_fidelity: bool = False
    #: The ``--scope`` the tree was decoded with (empty: a full backup of its adapters).
    scope: Mapping[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    #: Where redirected adapter subtrees were written (empty: the tree is whole).
    output_roots: Mapping[str, str] = msgspec.field(default_factory=dict)
    raw: Mapping[str, Any] = msgspec.field(default_factory=dict)


def _section(obj: dict[str, Any], name: str, parent: str = "") -> dict[str, Any] | None:
    """An optional object (a Go pointer to a struct): ``None`` when absent or ``null``."""
    value = obj.get(name)
    return None if value is None else as_object(value, parent + name)


def _check_scope(scope: dict[str, Any], where: str) -> None:
    for key in ("tables", "buckets", "queues"):
        for i, item in enumerate(get_list(scope, key)):
            as_str(item, f"{where}.{key}[{i}]")
    for i, item in enumerate(get_list(scope, "databases")):
        as_int(item, f"{where}.databases[{i}]", "u32")


def _check_wall_time(text: str) -> None:
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        raise ManifestError(
            f"MANIFEST.json wall_time_iso {text!r} is not RFC 3339", code="ErrInvalidManifest"
        )
    year, month, day, hour, minute, second, off_h, off_m = match.groups()
    try:
        datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        raise ManifestError(
            f"MANIFEST.json wall_time_iso {text!r} is out of range", code="ErrInvalidManifest"
        ) from None
    if off_h is not None and (int(off_h) > 23 or int(off_m) > 59):
        raise ManifestError(
            f"MANIFEST.json wall_time_iso {text!r} has a bad zone offset", code="ErrInvalidManifest"
        )


def _check_format_version(top: dict[str, Any]) -> None:
    # Checked before the field-by-field decode so that a newer producer whose other fields
    # changed type still reports "unsupported version", not "invalid".
    if top.get("format_version") is None:
        raise ManifestError(
            "MANIFEST.json format_version is missing or null", code="ErrInvalidManifest"
        )
    version = get_int(top, "format_version", "u32")
    if version == 0:
        raise ManifestError(
            "MANIFEST.json format_version is zero", code="ErrUnsupportedFormatVersion"
        )
    if version > CURRENT_FORMAT_VERSION:
        raise ManifestError(
            f"MANIFEST.json format_version {version} > current {CURRENT_FORMAT_VERSION} "
            "(newer producer)",
            code="ErrUnsupportedFormatVersion",
        )


def required_exclusion(doc: Mapping[str, Any], name: str) -> bool:
    """An ``exclusions`` flag a reader must find spelled out: its default cannot be inferred."""
    section = doc[EXCLUSIONS]
    if section.get(name) is None:
        raise ManifestError(
            f"MANIFEST.json exclusions.{name} missing or null "
            "(cannot infer the producer's default)",
            code="ErrInvalidManifest",
        )
    return as_bool(section[name], f"exclusions.{name}")


def optional_exclusion(doc: Mapping[str, Any], name: str) -> bool:
    """An ``exclusions`` flag that older producers omit (absent or ``null``: false)."""
    return as_bool(doc[EXCLUSIONS].get(name), f"exclusions.{name}")


def required_string(doc: Mapping[str, Any], key: str) -> str:
    """A top-level string field that must be present and non-empty."""
    value = get_str(doc, key)
    if not value:
        raise ManifestError(f"MANIFEST.json {key} missing", code="ErrInvalidManifest")
    return value


def _read_adapters(top: dict[str, Any], names: Iterable[str]) -> dict[str, Mapping[str, Any]]:
    section = _section(top, "adapters")
    if section is None:
        raise ManifestError("MANIFEST.json adapters section missing", code="ErrInvalidManifest")
    scopes: dict[str, Mapping[str, Any]] = {}
    for name in names:
        scope = _section(section, name, "adapters.")
        if scope is not None:
            _check_scope(scope, f"adapters.{name}")
            scopes[name] = scope
    return scopes


def read_manifest(payload: bytes, readers: Mapping[str, ManifestReader | None]) -> Manifest:
    """Parse and validate MANIFEST.json bytes the way the reference's ``ReadManifest`` does.

    ``readers`` maps every known adapter to the reader of its own fields (``None``: it has
    none); the core validates the rest. Unknown fields are tolerated. Raises
    :class:`~elastickv_async._core.errors.ManifestError`: ``ErrUnsupportedFormatVersion`` for
    a version of 0 or above :data:`CURRENT_FORMAT_VERSION`, ``ErrInvalidManifest`` for
    anything else that is malformed (exit 2).
    """
    try:
        top = loads(payload)
    except GoJSONError as exc:
        raise ManifestError(
            f"MANIFEST.json is not valid JSON: {exc}", code="ErrInvalidManifest"
        ) from None
    if not isinstance(top, dict):
        raise ManifestError("MANIFEST.json is not a JSON object", code="ErrInvalidManifest")
    try:
        return _read_fields(top, readers)
    except GoJSONError as exc:
        raise ManifestError(f"MANIFEST.json {exc}", code="ErrInvalidManifest") from None


def read_scope(top: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The ``scope`` field of a parsed MANIFEST.json (absent or ``null``: no scope)."""
    section = _section(dict(top), SCOPE)
    if section is None:
        return {}
    return {
        name: tuple(as_str(item, f"{SCOPE}.{name}[{i}]") for i, item in enumerate(items))
        for name in section
        for items in (get_list(section, name),)
    }


def read_output_roots(top: Mapping[str, Any]) -> dict[str, str]:
    """The ``output_roots`` field of a parsed MANIFEST.json (absent or ``null``: none).

    Raises :class:`~elastickv_async._core.errors.ManifestError` for a root that is not an
    absolute path.
    """
    section = _section(dict(top), OUTPUT_ROOTS)
    if section is None:
        return {}
    roots = {name: as_str(value, f"{OUTPUT_ROOTS}.{name}") for name, value in section.items()}
    for name, path in roots.items():
        if not os.path.isabs(path):
            raise ManifestError(
                f"MANIFEST.json {OUTPUT_ROOTS}.{name} {path!r} is not an absolute path",
                code="ErrInvalidManifest",
            )
    return roots


def _read_fields(top: dict[str, Any], readers: Mapping[str, ManifestReader | None]) -> Manifest:
    """The checks and fields of :func:`read_manifest`; a field of the wrong type raises
    :class:`~elastickv_async._core.gojson_read.GoJSONError`."""
    _check_format_version(top)
    phase = get_str(top, "phase")
    if phase not in _PHASES:
        raise ManifestError(f"MANIFEST.json unknown phase {phase!r}", code="ErrInvalidManifest")
    source = _section(top, "source")
    if source is not None:
        as_str(source.get("fsm_path"), "source.fsm_path")
        as_str(source.get("fsm_crc32c"), "source.fsm_crc32c")
    live = _section(top, "live")
    if live is not None:
        as_int(live.get("read_ts"), "live.read_ts", "u64")
        as_str(live.get("pin_token_sha256"), "live.pin_token_sha256")
    wall_time = get_str(top, "wall_time_iso")
    if not wall_time:
        raise ManifestError("MANIFEST.json wall_time_iso missing", code="ErrInvalidManifest")
    _check_wall_time(wall_time)
    adapters = _read_adapters(top, readers)
    if _section(top, EXCLUSIONS) is None:
        raise ManifestError("MANIFEST.json exclusions section missing", code="ErrInvalidManifest")
    options = {name: None if read is None else read(top) for name, read in readers.items()}
    manifest = Manifest(
        format_version=top["format_version"],
        phase=phase,
        wall_time_iso=wall_time,
        adapters=adapters,
        adapter_options=options,
        checksum_algorithm=required_string(top, "checksum_algorithm"),
        checksum_format=required_string(top, "checksum_format"),
        encoded_filename_charset=required_string(top, "encoded_filename_charset"),
        key_segment_max_bytes=get_int(top, "key_segment_max_bytes", "u32"),
        elastickv_version=get_str(top, "elastickv_version"),
        cluster_id=get_str(top, "cluster_id"),
        snapshot_index=get_int(top, "snapshot_index", "u64"),
        last_commit_ts=get_int(top, "last_commit_ts", "u64"),
        source=source,
        live=live,
        full_fidelity=as_bool(top.get(FULL_FIDELITY), FULL_FIDELITY),
        scope=read_scope(top),
        output_roots=read_output_roots(top),
        raw=top,
    )
    if manifest.key_segment_max_bytes == 0:
        raise ManifestError(
            "MANIFEST.json key_segment_max_bytes is zero", code="ErrInvalidManifest"
        )
    if phase == PHASE_SNAPSHOT and live is not None:
        raise ManifestError("MANIFEST.json phase0 must not set live", code="ErrInvalidManifest")
    if phase == PHASE_LIVE:
        if source is not None:
            raise ManifestError(
                "MANIFEST.json phase1 must not set source", code="ErrInvalidManifest"
            )
        if live is None or not live.get("read_ts"):
            raise ManifestError(
                "MANIFEST.json phase1 must set live with a non-zero read_ts",
                code="ErrInvalidManifest",
            )
    return manifest
