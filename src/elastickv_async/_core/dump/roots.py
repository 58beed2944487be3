"""Where the parts of a dump tree live: the main root and the roots of redirected adapters.

A decode with ``--output-root ADAPTER=DIR`` writes the adapter's subtree (``<adapter>/...``)
under ``DIR`` instead of the main output, typically on another filesystem; everything else
(the other adapters, CHECKSUMS, MANIFEST.json) stays in the main output. Paths stay logical:
``<adapter>/<unit>/<file>`` names the same file whichever root holds it, so CHECKSUMS lists
the tree as if it were whole, and a tree reassembled by moving the subtrees back is a plain
tree. MANIFEST.json records each redirected root (``output_roots``, absolute paths), so
``verify`` and ``encode`` find the parts again; ``--tree-root ADAPTER=DIR`` overrides a
recorded root (a subtree moved to another mount point).

This module alone decides which root holds a path; the writer, the tree reader, ``verify``
and ``encode`` ask it. No adapter knows about roots.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import msgspec

from ..errors import UsageError

__all__ = [
    "TreeRoots",
    "checked_output_roots",
    "parse_root_flags",
    "recorded_tree_roots",
]


class TreeRoots(msgspec.Struct, frozen=True):
    """The main root of a dump tree and the roots of its redirected adapter subtrees."""

    main: Path
    #: Adapter name to the directory holding ``<adapter>/`` instead of :attr:`main`.
    redirected: Mapping[str, Path] = msgspec.field(default_factory=dict)

    @classmethod
    def of(cls, root: Path | TreeRoots) -> TreeRoots:
        """``root`` itself, or a tree rooted whole at the path ``root``."""
        return root if isinstance(root, TreeRoots) else cls(root)

    def root_of(self, adapter: str) -> Path:
        """The directory holding ``<adapter>/``."""
        return self.redirected.get(adapter, self.main)

    def root_for(self, parts: Sequence[str]) -> Path:
        """The directory holding the relative path ``parts`` (its first part decides)."""
        if parts and self.redirected:
            return self.redirected.get(parts[0], self.main)
        return self.main

    def recorded(self) -> dict[str, str]:
        """The MANIFEST.json ``output_roots`` value: each redirected adapter's absolute root."""
        return {name: os.fspath(path) for name, path in self.redirected.items()}


def parse_root_flags(values: Iterable[str], flag: str) -> dict[str, Path]:
    """``ADAPTER=DIR`` flag values as a mapping; a malformed or repeated adapter is refused.

    Whether the names are adapters is checked by :func:`checked_output_roots` and
    :func:`recorded_tree_roots`.
    """
    roots: dict[str, Path] = {}
    for value in values:
        name, sep, directory = value.partition("=")
        if not sep or not name or not directory:
            raise UsageError(f"{flag} wants ADAPTER=DIR, not {value!r}")
        if name in roots:
            raise UsageError(f"{flag} names adapter {name!r} twice")
        roots[name] = Path(directory)
    return roots


def _check_names(given: Iterable[str], known: Sequence[str], flag: str) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise UsageError(
            f"{flag} names unknown adapter(s) {', '.join(unknown)} (known: {', '.join(known)})"
        )


def _absolute(path: str | os.PathLike[str], what: str) -> Path:
    absolute = Path(os.path.abspath(path))
    try:
        os.fspath(absolute).encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(
            f"{what}{absolute} is not valid UTF-8, so MANIFEST.json cannot record it"
        ) from None
    return absolute


def checked_output_roots(
    output: Path,
    given: Mapping[str, str | os.PathLike[str]] | None,
    *,
    known: Sequence[str],
    selected: Sequence[str],
) -> TreeRoots:
    """The roots of a decode into ``output`` with the output roots ``given`` (by adapter).

    Each adapter must be a ``known`` one and among the ``selected``; no root may be the
    output or another root, lie inside one or contain one (paths compared with symlinks in
    their parents resolved). Roots are made absolute. Raises
    :class:`~elastickv_async._core.errors.UsageError`. Blocking (it resolves paths).
    """
    if not given:
        return TreeRoots(output)
    flag = "--output-root"
    _check_names(given, known, flag)
    unselected = sorted(set(given) - set(selected))
    if unselected:
        raise UsageError(f"{flag} names adapter(s) not selected: {', '.join(unselected)}")
    roots = {name: _absolute(given[name], f"{flag} {name}=") for name in known if name in given}
    places = [("the output", output.resolve())] + [
        (f"{flag} {name}={path}", path.resolve()) for name, path in roots.items()
    ]
    for i, (what, place) in enumerate(places):
        for other, there in places[:i]:
            if place == there:
                raise UsageError(f"{what} is the same directory as {other}")
            if place.is_relative_to(there):
                raise UsageError(f"{what} must not be inside {other}")
            if there.is_relative_to(place):
                raise UsageError(f"{what} must not contain {other}")
    return TreeRoots(output, roots)


def recorded_tree_roots(
    main: Path,
    recorded: Mapping[str, str],
    overrides: Mapping[str, str | os.PathLike[str]] | None,
    *,
    known: Sequence[str],
) -> TreeRoots:
    """The roots of the tree at ``main``: those its MANIFEST.json records, then ``overrides``.

    ``overrides`` (``--tree-root``) may name any ``known`` adapter, recorded or not (a
    subtree moved out by hand); one naming ``main`` itself says the subtree is back in the
    main root. Every root must be an existing directory: a missing one raises
    :class:`~elastickv_async._core.errors.UsageError` naming the adapter and where it was
    looked for. Blocking.
    """
    overrides = overrides or {}
    _check_names(overrides, known, "--tree-root")
    roots: dict[str, Path] = {}
    for name in known:
        if name in overrides:
            root = Path(os.path.abspath(overrides[name]))
            where = "--tree-root"
        elif name in recorded:
            root = Path(recorded[name])
            where = "MANIFEST.json output_roots"
        else:
            continue
        if not root.is_dir():
            hint = "" if name in overrides else f"; pass --tree-root {name}=DIR if it moved"
            raise UsageError(
                f"{name}'s subtree root {root} ({where}) is not an existing directory{hint}"
            )
        if not (main.is_dir() and os.path.samefile(root, main)):
            roots[name] = root
    return TreeRoots(main, roots)
