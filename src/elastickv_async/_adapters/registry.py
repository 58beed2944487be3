"""The adapters known to the core: one registry, in canonical (decode) order."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from .._core.dump.manifest import ManifestField
from .._core.errors import UsageError
from . import dynamodb, redis, s3, sqs
from .base import AdapterSpec, OptionField, option_fields

__all__ = ["REGISTRY", "AdapterRegistry"]


class AdapterRegistry:
    """The adapter specs by name, in the order the decoder runs and lists them."""

    def __init__(self, specs: Sequence[AdapterSpec] = ()) -> None:
        self._specs: dict[str, AdapterSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: AdapterSpec) -> None:
        """Add ``spec`` after the adapters already known.

        Raises :class:`ValueError` when its name, one of its CLI flags or one of its key
        prefixes is already taken: the CLI and the router need them unambiguous.
        """
        if not spec.name or spec.name == "all" or "," in spec.name:
            raise ValueError(f"invalid adapter name {spec.name!r}")
        if spec.name in self._specs:
            raise ValueError(f"adapter {spec.name!r} is already registered")
        flags = {f.flag for s in self._specs.values() for f in _flags(s)}
        clash = flags & {f.flag for f in _flags(spec)}
        if clash:
            raise ValueError(f"adapter {spec.name!r} reuses flag(s) {', '.join(sorted(clash))}")
        owned = {
            p for s in self._specs.values() for p in (*s.routed_prefixes, *s.internal_prefixes)
        }
        taken = owned & {*spec.routed_prefixes, *spec.internal_prefixes}
        if taken:
            raise ValueError(f"adapter {spec.name!r} reuses prefix(es) {sorted(taken)!r}")
        self._specs[spec.name] = spec

    def unregister(self, name: str) -> AdapterSpec:
        """Remove and return the adapter ``name``."""
        return self._specs.pop(name)

    def names(self) -> tuple[str, ...]:
        """Every adapter name, in canonical order."""
        return tuple(self._specs)

    def __iter__(self) -> Iterator[AdapterSpec]:
        return iter(tuple(self._specs.values()))

    def __getitem__(self, name: str) -> AdapterSpec:
        return self._specs[name]

    def select(self, selection: str | Sequence[str], *, lower: bool = False) -> tuple[str, ...]:
        """The adapters named by ``selection``, in canonical order.

        A string is parsed as the reference parses ``--adapter``: comma-separated names,
        ``""`` or ``all`` for every adapter (``lower`` folds case, as the encoder does). A
        sequence holds names (``all`` allowed). Unknown names and an empty selection raise
        :class:`~elastickv_async._core.errors.UsageError`.
        """
        if isinstance(selection, str):
            text = selection.strip()
            if text in ("", "all"):
                return self.names()
            raw = text.split(",")
        else:
            raw = list(selection)
        chosen: set[str] = set()
        for item in raw:
            name = item.strip().lower() if lower else item.strip()
            if not name:
                continue
            if name == "all":
                chosen.update(self._specs)
            elif name in self._specs:
                chosen.add(name)
            else:
                known = ", ".join(self._specs)
                raise UsageError(f"unknown adapter {name!r} (known: {known})")
        if not chosen:
            raise UsageError("--adapter selected zero adapters")
        return tuple(n for n in self._specs if n in chosen)

    def manifest_fields(self, options: Mapping[str, Any]) -> list[ManifestField]:
        """Every adapter's MANIFEST.json fields for its resolved decode ``options`` (by adapter
        name; an adapter missing there is described by its defaults)."""
        return [
            f
            for spec in self
            for f in spec.manifest_fields(options.get(spec.name) or spec.resolve_options(None))
        ]

    def route_key(self, key: bytes) -> bytes | None:
        """The first adapter's route key for ``key`` (see ``AdapterSpec.route_key``)."""
        for spec in self._specs.values():
            routed = spec.route_key(key)
            if routed is not None:
                return routed
        return None

    def encode_order(self, names: Sequence[str]) -> tuple[str, ...]:
        """``names`` in the order the encoders run and are listed."""
        ranked = sorted(enumerate(names), key=lambda item: (self[item[1]].encode_rank, item[0]))
        return tuple(name for _, name in ranked)


def _flags(spec: AdapterSpec) -> tuple[OptionField, ...]:
    return (*option_fields(spec.decode_options), *option_fields(spec.encode_options))


#: The adapters of this build. Others join with ``REGISTRY.register(spec)`` before a run.
REGISTRY: Final = AdapterRegistry((dynamodb.SPEC, s3.SPEC, redis.SPEC, sqs.SPEC))
