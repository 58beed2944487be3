"""``--scope``: decode only some tables, buckets, queues or keys of the adapters.

Each adapter that supports a scope names, through ``AdapterSpec.scope_unit``, the unit a
routed key belongs to (a table, bucket or queue name, or a user key). The pipeline
drops a key whose unit no scope name matches before it reaches the adapter, so filtered
data costs no adapter work. A key whose unit cannot be told (``None``: a row several units
share, or one the adapter would reject) is kept, so the adapter sees what it needs.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import gojson
from .errors import UsageError

__all__ = [
    "ScopeFilter",
    "normalise_scope",
    "parse_scope_flag",
    "scope_filters",
    "warn_missing",
]


def _names(adapter: str, given: str | Sequence[str]) -> tuple[str, ...]:
    names = given.split(",") if isinstance(given, str) else list(given)
    if not names or any(not isinstance(n, str) or not n for n in names):
        raise UsageError(f"--scope {adapter}= needs a non-empty list of names")
    return tuple(dict.fromkeys(names))


def normalise_scope(
    scope: Mapping[str, str | Sequence[str]], scoped_adapters: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    """``scope`` checked: adapter name to its names, each list without duplicates.

    ``scoped_adapters`` are the adapters that support a scope. Raises
    :class:`~elastickv_async._core.errors.UsageError` for any other adapter or an empty list.
    """
    checked: dict[str, tuple[str, ...]] = {}
    for adapter, given in scope.items():
        if adapter not in scoped_adapters:
            raise UsageError(
                f"--scope: unknown adapter {adapter!r} (one of {', '.join(scoped_adapters)})"
            )
        checked[adapter] = _names(adapter, given)
    return checked


def parse_scope_flag(values: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The repeated ``ADAPTER=NAME[,NAME...]`` flag values, merged per adapter."""
    merged: dict[str, list[str]] = {}
    for value in values:
        adapter, sep, names = value.partition("=")
        if not sep or not adapter:
            raise UsageError(f"--scope {value!r}: expected ADAPTER=NAME[,NAME...]")
        merged.setdefault(adapter.strip().lower(), []).extend(_names(adapter, names))
    return {adapter: tuple(dict.fromkeys(names)) for adapter, names in merged.items()}


def _name_bytes(name: str) -> bytes:
    # Command-line text decodes undecodable bytes as surrogates; this gives them back.
    return name.encode("utf-8", "surrogateescape")


def _glob(name: str) -> re.Pattern[bytes]:
    # Translated over Latin-1 text so that each byte of the pattern stands for itself and the
    # compiled pattern matches raw key bytes: ``?`` is one byte, not one character.
    text = fnmatch.translate(_name_bytes(name).decode("latin-1"))
    return re.compile(text.encode("latin-1"), re.DOTALL)


class ScopeFilter:
    """Whether a routed key of one adapter is in scope; remembers which names matched."""

    __slots__ = ("_exact", "_globs", "_last", "_unit", "names", "seen")

    def __init__(
        self,
        names: Sequence[str],
        unit: Callable[[bytes, bytes], bytes | None],
        *,
        glob: bool,
    ) -> None:
        self.names = tuple(names)
        self.seen: set[str] = set()
        self._unit = unit
        self._exact = {} if glob else {_name_bytes(n): n for n in names}
        self._globs = [(n, _glob(n)) for n in names] if glob else []
        # The rows of one unit arrive together (snapshot key order), so one remembered
        # answer saves most of the matching.
        self._last: tuple[bytes | None, bool] = (None, True)

    def keep(self, prefix: bytes, key: bytes) -> bool:
        """Whether the key routed by ``prefix`` belongs to a unit in scope."""
        unit = self._unit(prefix, key)
        if unit is None:
            return True
        last_unit, last_answer = self._last
        if unit == last_unit:
            return last_answer
        if self._globs:
            matched = [name for name, pattern in self._globs if pattern.match(unit)]
            self.seen.update(matched)
            answer = bool(matched)
        else:
            name = self._exact.get(unit)
            if name is not None:
                self.seen.add(name)
            answer = name is not None
        self._last = (unit, answer)
        return answer

    def missing(self) -> list[str]:
        """The names that matched no key of the snapshot, in the order given."""
        return [name for name in self.names if name not in self.seen]


def scope_filters(
    scope: Mapping[str, Sequence[str]], specs: Mapping[str, Any]
) -> dict[str, ScopeFilter]:
    """One :class:`ScopeFilter` per scoped adapter of a normalised ``scope``; ``specs`` are
    the adapters' ``AdapterSpec`` by name."""
    return {
        name: ScopeFilter(names, unit, glob=specs[name].scope_glob)
        for name, names in scope.items()
        if (unit := specs[name].scope_unit) is not None
    }


def warn_missing(filters: Mapping[str, ScopeFilter], log: Any) -> None:
    """Warn ``scope_name_not_found`` for each name no key matched."""
    for adapter, scope in filters.items():
        for name in scope.missing():
            log.warning(
                "scope_name_not_found",
                adapter=adapter,
                name=gojson.go_str(_name_bytes(name)),
                hint="no row of the snapshot belongs to this scope name; check its spelling",
            )
