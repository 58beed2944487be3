"""The contract between the core and the adapters.

The core knows each adapter only through its :class:`AdapterSpec`: its name (also the name
of its subtree in the dump), the key prefixes it owns, its options (a dataclass whose fields,
declared with :func:`option`, become the CLI flags), the MANIFEST.json fields it writes and
reads back, what its encoder can restore, how the self-test compares its files, and the
factories of its decoder and encoder. Everything else about a format lives in the adapter's
own package: ``keys.py`` (store keys), ``values.py`` (store values), ``layout.py`` (tree names,
file render and parse), ``decode.py`` and ``encode.py``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, runtime_checkable

import anyio
import msgspec

from .._core.dump.manifest import ManifestField
from .._core.dump.tree import DumpTree
from .._core.errors import DumpTreeError, UsageError
from .._core.extsort import Deferred, ValueSource
from .._core.memory import DEFAULT_ADAPTER_MEMORY, DEFAULT_ENCODE_ADAPTER_MEMORY
from .._core.options import DecodeOptions
from .._core.report import EventLog, Report
from .._core.snapshot.entry import Entry, SnapshotHeader
from .._core.workers import Workers

if TYPE_CHECKING:
    # Only decoders write: an encode never loads the writer.
    from .._core.dump.writer import DumpWriter, WriteLane

__all__ = [
    "BYTES",
    "LINE_SET",
    "AdapterSpec",
    "BatchEncodeAdapter",
    "DecodeAdapter",
    "DecodeContext",
    "Deferred",
    "EncodeAdapter",
    "EncodeBatch",
    "EncodeContext",
    "FileComparison",
    "Inventory",
    "InventoryRow",
    "ManifestField",
    "NoOptions",
    "OptionField",
    "Routed",
    "SendBatch",
    "StreamDecodeAdapter",
    "ValueSource",
    "joined_scopes",
    "option",
    "option_fields",
    "send_batches",
    "sorted_scopes",
]

#: One routed entry: the routing prefix that matched (longest wins) and the entry itself.
Routed = tuple[bytes, Entry]

T = TypeVar("T")

_FLAG: Final = "elastickv_flag"
_HELP: Final = "elastickv_help"
_CHOICES: Final = "elastickv_choices"


def option(default: T, *, flag: str, help: str, choices: tuple[T, ...] = ()) -> T:
    """Declare one field of an adapter's options dataclass and the CLI flag that sets it.

    ``flag`` is the long flag without dashes, spelled as the reference spells it. A ``bool``
    field becomes a switch (``--flag``, ``--flag=true``, ``-flag``); any other field takes a
    string value, limited to ``choices`` when given.
    """
    metadata = {_FLAG: flag, _HELP: help, _CHOICES: choices}
    return field(default=default, metadata=metadata)


class OptionField(msgspec.Struct, frozen=True):
    """One option as the CLI and the validation see it."""

    name: str
    flag: str
    help: str
    default: Any
    choices: tuple[Any, ...]

    @property
    def is_switch(self) -> bool:
        """Whether the option is a boolean switch."""
        return isinstance(self.default, bool)


def option_fields(options_type: type[Any]) -> tuple[OptionField, ...]:
    """The fields of an options dataclass declared with :func:`option`, in declaration order."""
    found = []
    for f in dataclasses.fields(options_type):
        if _FLAG not in f.metadata:
            raise TypeError(f"{options_type.__name__}.{f.name} is not declared with option()")
        found.append(
            OptionField(
                f.name, f.metadata[_FLAG], f.metadata[_HELP], f.default, f.metadata[_CHOICES]
            )
        )
    return tuple(found)


@dataclass(frozen=True, slots=True)
class NoOptions:
    """The options of an adapter (or direction) that has none."""


class FileComparison(msgspec.Struct, frozen=True):
    """How the self-test compares one file of the input tree with its re-decoded twin.

    Byte for byte by default; ``line_set`` compares the sorted lines (files whose records are
    keyed, so their order carries no meaning); ``lines_match`` compares line by line and calls
    a differing pair ``(input line, decoded line)`` equal when it returns true.
    """

    line_set: bool = False
    lines_match: Callable[[bytes, bytes], bool] | None = None


BYTES: Final = FileComparison()
LINE_SET: Final = FileComparison(line_set=True)


@dataclass(slots=True)
class DecodeContext:
    """Everything an adapter's decoder may use; built by the pipeline, one per adapter."""

    options: DecodeOptions
    writer: DumpWriter
    #: Logger bound with ``adapter=<name>``; ``log.warning(event, **fields)`` feeds the report.
    log: EventLog
    report: Report
    header: SnapshotHeader
    #: A private, empty directory for data that must wait; removed by the pipeline at the end.
    scratch: Path
    #: "Now" in Unix ms as the snapshot saw it (HLC ceiling, else physical part of last_commit_ts).
    now_ms: int
    #: This adapter's own options (an instance of its spec's ``decode_options``).
    adapter_options: Any = None
    #: The run's worker processes, for CPU-bound batches (shared by every adapter).
    workers: Workers = field(default_factory=lambda: Workers(0))
    #: Bytes this adapter's own buffers (sorts, spill buffers) may hold together: its share
    #: of the run's memory budget.
    memory: int = DEFAULT_ADAPTER_MEMORY
    #: Its share once the input is read (see :meth:`flush_memory`); ``None``: ``memory``.
    flush_share: Callable[[], int] | None = None

    def flush_memory(self) -> int:
        """Bytes this adapter may hold while it flushes what it buffered (from the end of
        its input on): ``memory``, or more when adapters that received no entries lend
        their shares, since they hold nothing."""
        if self.flush_share is None:
            return self.memory
        return max(self.memory, self.flush_share())


class DecodeAdapter(Protocol):
    """One adapter's decoder. The pipeline runs :meth:`handle` in one task per adapter."""

    async def handle(self, batch: Sequence[Routed]) -> None:
        """Consume a batch of visible entries, in snapshot key order."""

    async def finalize(self) -> dict[str, Any]:
        """Write what is still buffered; return the MANIFEST scope, e.g. ``{"tables": [...]}``."""


@runtime_checkable
class StreamDecodeAdapter(DecodeAdapter, Protocol):
    """A decoder with background work of its own (e.g. rendering in worker processes while
    the next batches arrive): the pipeline hands it the whole stream of batches instead."""

    async def consume(self, batches: AsyncIterable[Sequence[Routed]]) -> dict[str, Any]:
        """:meth:`handle` every batch, in order, then :meth:`finalize`; return its scope."""


class WritesBehind(abc.ABC):
    """Base of a decoder whose files are created behind it: :meth:`consume` runs the whole
    stream with a write lane (:meth:`DumpWriter.behind`), so a batch handed to
    :attr:`files_out` is written while the decoder reads, renders or assembles the next;
    called through :meth:`handle` and :meth:`finalize` alone, it writes directly."""

    _ctx: DecodeContext
    _lane: WriteLane | None = None

    @property
    def files_out(self) -> DumpWriter | WriteLane:
        """Where the decoder's files go: the lane while :meth:`consume` runs, else the writer."""
        return self._lane or self._ctx.writer

    @abc.abstractmethod
    async def handle(self, batch: Sequence[Routed]) -> None:
        """Consume a batch of visible entries, in snapshot key order."""

    @abc.abstractmethod
    async def finalize(self) -> dict[str, Any]:
        """Write what is still buffered; return the MANIFEST scope."""

    async def consume(self, batches: AsyncIterable[Sequence[Routed]]) -> dict[str, Any]:
        """:meth:`handle` every batch, then :meth:`finalize`, with the files written behind."""
        async with self._ctx.writer.behind() as lane:
            self._lane = lane
            try:
                async for batch in batches:
                    await self.handle(batch)
                return await self.finalize()
            finally:
                self._lane = None


@dataclass(slots=True)
class EncodeContext:
    """Everything an adapter's encoder may use."""

    input_root: Path
    log: EventLog
    report: Report
    scratch: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    #: This adapter's own encode options (an instance of its spec's ``encode_options``).
    adapter_options: Any = None
    #: The options the tree was decoded with, as MANIFEST.json records them (``decode_options``).
    decoded_with: Any = None
    #: The tree was decoded in full-fidelity mode: restore the extra state it carries.
    full_fidelity: bool = False
    #: Milliseconds to add to every time the node keeps a deadline by (``--rebase-time``).
    time_shift_ms: int = 0
    #: The run's worker processes, for CPU-bound batches (shared by every adapter).
    workers: Workers = field(default_factory=lambda: Workers(0))
    #: Bytes this adapter's own buffers (sorts, batches it holds) may hold together: its
    #: share of the run's memory budget.
    memory: int = DEFAULT_ENCODE_ADAPTER_MEMORY
    #: Safe read access to ``input_root``: the only way an encoder reads the tree.
    tree: DumpTree = field(init=False)

    def __post_init__(self) -> None:
        self.tree = DumpTree(self.input_root)


class InventoryRow(msgspec.Struct):
    """One line of ``inspect``'s inventory: a table, bucket, queue or key type, and its counts.

    ``name`` is text (a name that is not UTF-8 shows its bytes escaped); ``counts`` keeps its
    insertion order (``items``, ``bytes``...), and ``bytes`` is shown in human units.
    """

    kind: str
    name: str
    counts: dict[str, int] = msgspec.field(default_factory=dict)


class Inventory(Protocol):
    """Counts what one adapter's keyspace holds, for ``inspect`` (nothing is decoded).

    :meth:`add` sees every visible entry routed to the adapter, with the routing prefix that
    matched; it must not raise on a malformed key (count it instead).
    """

    def add(self, prefix: bytes, entry: Entry) -> None:
        """Count one visible entry."""

    def rows(self) -> list[InventoryRow]:
        """The inventory, in a stable order."""
        ...


class EncodeAdapter(Protocol):
    """One adapter's encoder: walks its subtree and yields ``(user_key, user_value)`` records."""

    def records(self) -> AsyncIterator[tuple[bytes, bytes]]:
        """Yield every internal record of this adapter's subtree, in any order."""
        ...


#: A list of records an encoder hands the core at once.
EncodeBatch = Sequence[tuple[bytes, bytes | Deferred]]
#: The core's end of an encoder's channel: ``await send(batch)`` returns once the core has
#: room for the list (it waits while the core is behind).
SendBatch = Callable[[EncodeBatch], Awaitable[None]]


class BatchEncodeAdapter(Protocol):
    """An encoder that hands its records over in lists (the core then works per list).

    The core runs :meth:`produce` in a task of its own and reads the lists while the encoder
    goes on: work the encoder starts in a task group inside :meth:`produce` (lanes reading
    the next files) keeps running while the core sorts the lists already sent. Each list
    should stay within a few MiB: the core buffers a few of them at once. A value may be
    :class:`Deferred`: the bytes of a big body stay in their file, and its
    :class:`ValueSource` reads them (in a worker thread) only when the snapshot is written.
    """

    async def produce(self, send: SendBatch) -> None:
        """``await send(batch)`` for every list of this adapter's internal records, in any
        order; return when all are sent."""


async def send_batches(batches: AsyncIterator[EncodeBatch], send: SendBatch) -> None:
    """:meth:`BatchEncodeAdapter.produce` for an encoder whose lists come from an async
    generator: ``send`` each list of ``batches``, closing the generator however this ends."""
    try:
        async for batch in batches:
            await send(batch)
    finally:
        # Close an abandoned generator now: its cleanup (scratch files) may need the loop.
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()


def _no_manifest_fields(options: Any) -> Sequence[ManifestField]:
    return ()


def _bytes_everywhere(path: str) -> FileComparison:
    return BYTES


def _restores_everything(options: Any, full_fidelity: bool) -> DumpTreeError | None:
    return None


def _same_options(options: Any) -> Any:
    return options


def _no_route_rule(key: bytes) -> bytes | None:
    return None


def _never_cut(prefix: bytes, key: bytes) -> bytes | None:
    return None


def joined_scopes(scopes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each list field of the partitions' MANIFEST scopes (given in unit order), concatenated."""
    joined: dict[str, Any] = {}
    for scope in scopes:
        for name, values in scope.items():
            joined.setdefault(name, []).extend(values)
    return joined


def sorted_scopes(scopes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Like :func:`joined_scopes`, each list sorted (for scopes that list names sorted)."""
    return {name: sorted(values) for name, values in joined_scopes(scopes).items()}


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """How the core sees one adapter.

    The hooks taking ``options`` receive an instance of :attr:`decode_options`. The defaults
    describe an adapter without options, manifest fields or special comparisons.
    """

    #: The ``--adapter`` name, the MANIFEST ``adapters`` key and the dump subdirectory.
    name: str
    #: Prefixes routed to this adapter's decoder when the adapter is enabled.
    routed_prefixes: tuple[bytes, ...]
    #: Prefixes of this adapter's keyspace that are dropped and counted as internal.
    internal_prefixes: tuple[bytes, ...]
    decoder: Callable[[DecodeContext], DecodeAdapter]
    encoder: Callable[[EncodeContext], EncodeAdapter | BatchEncodeAdapter]
    #: Place among the encoders: the sidecar's ``adapters_enabled`` and the self-test report
    #: follow the reference's encode order, which differs from the decode (registry) order.
    encode_rank: int = 1000
    #: The MANIFEST scope the decoder returns when no entry is routed to it and it writes
    #: nothing: a decode then neither builds nor imports it. ``None``: it is built anyway.
    empty_scope: Callable[[], dict[str, Any]] | None = None
    #: Whether the encoder reads nothing but the adapter's subtree: a tree without one then
    #: has nothing for it, and an encode does not even load it.
    subtree_only: bool = True
    #: The decode options dataclass; its :func:`option` fields are the decode CLI flags.
    decode_options: type[Any] = NoOptions
    #: The encode options dataclass; its :func:`option` fields are the encode CLI flags.
    encode_options: type[Any] = NoOptions
    #: The fields this adapter writes into MANIFEST.json for a decode run with ``options``.
    manifest_fields: Callable[[Any], Sequence[ManifestField]] = _no_manifest_fields
    #: Read this adapter's MANIFEST.json fields back from the parsed document: the decode
    #: options the tree was produced with. Raises ``ManifestError`` (or ``GoJSONError`` for a
    #: mistyped field). ``None``: the adapter wrote nothing, so the defaults apply.
    read_manifest: Callable[[Mapping[str, Any]], Any] | None = None
    #: The error to stop an encode with when the encoder cannot restore a tree decoded with
    #: ``options``, in full-fidelity mode or not (``None``: it can).
    encode_refusal: Callable[[Any, bool], DumpTreeError | None] = _restores_everything
    #: The decode options a full-fidelity decode uses instead of ``options``: the adapter's
    #: part of that mode beyond what it reads from ``DecodeContext.options.full_fidelity``.
    full_fidelity: Callable[[Any], Any] = _same_options
    #: The decode options the self-test uses to re-decode a tree decoded with ``options``.
    self_test_options: Callable[[Any], Any] = _same_options
    #: How the self-test compares a file, by its slash path inside the adapter's subtree.
    compare: Callable[[str], FileComparison] = _bytes_everywhere
    #: The key elastickv's store shards a key of this keyspace by (``kv/shard_key.go``
    #: ``routeKey``), or ``None`` when no rule of this adapter applies (the key routes as
    #: itself). A cluster decode uses it to find each key's owning group.
    route_key: Callable[[bytes], bytes | None] = _no_route_rule
    #: The partition unit of a key routed here by ``prefix`` (``partition_unit(prefix, key)``):
    #: a name whose rows the decoder turns into files without looking at any other unit's
    #: rows, all under ``<name>/<encode_segment(unit)>``. A cluster decode may then decode
    #: each unit on its own worker. ``None`` (also for a key the adapter would reject; never
    #: raise): a row only the whole adapter may decode, so the adapter is not cut at all. The
    #: default never cuts the adapter.
    partition_unit: Callable[[bytes, bytes], bytes | None] = _never_cut
    #: The adapter's MANIFEST scope from the scopes of its partitions, given in unit order.
    merge_scopes: Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]] = joined_scopes
    #: A fresh :class:`Inventory` of this adapter's keyspace for ``inspect`` (``None``: it
    #: only counts the entries routed to the adapter).
    inventory: Callable[[], Inventory] | None = None
    #: The unit ``--scope`` matches a key routed here by ``prefix`` against
    #: (``scope_unit(prefix, key)``): a table, bucket or queue name, or a user key. ``None``
    #: for a key no single unit owns (it is always kept). Unset: the adapter takes no scope.
    scope_unit: Callable[[bytes, bytes], bytes | None] | None = None
    #: ``--scope`` names of this adapter are fnmatch-style globs, not exact names.
    scope_glob: bool = False

    def resolve_options(self, given: Any, *, encode: bool = False) -> Any:
        """An instance of this adapter's options from ``given``.

        ``given`` is ``None`` (the defaults), an instance, or a mapping of field names to
        values. Unknown names, wrong types and values outside a field's choices raise
        :class:`~elastickv_async._core.errors.UsageError`.
        """
        options_type = self.encode_options if encode else self.decode_options
        if given is None:
            return options_type()
        if isinstance(given, options_type):
            values = {f.name: getattr(given, f.name) for f in option_fields(options_type)}
        elif isinstance(given, Mapping):
            values = dict(given)
        else:
            raise UsageError(f"{self.name} options must be a mapping, not {type(given).__name__}")
        known = {f.name: f for f in option_fields(options_type)}
        unknown = sorted(set(values) - known.keys())
        if unknown:
            raise UsageError(f"unknown {self.name} option(s): {', '.join(unknown)}")
        for name, value in values.items():
            spec = known[name]
            if type(value) is not type(spec.default):
                raise UsageError(
                    f"{self.name} option {name} must be {type(spec.default).__name__}, "
                    f"not {type(value).__name__}"
                )
            if spec.choices and value not in spec.choices:
                raise UsageError(
                    f"{self.name} option {name} must be one of "
                    f"{', '.join(map(str, spec.choices))}, not {value!r}"
                )
        return options_type(**values)
