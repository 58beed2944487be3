"""Mutation fuzzing of snapshots (decode) and dump trees (encode), shared by the fast test and
``scripts/fuzz.py``.

A trial mutates a good input with a seeded :class:`random.Random` and runs the library on
it. The promises: bad input raises one of the package's typed errors (never another
exception), a failed decode leaves no MANIFEST.json, a failed encode publishes nothing, a
decoded tree verifies and encodes, and what encode writes decodes.
"""

from __future__ import annotations

import random
import shutil
import struct
import traceback
from pathlib import Path
from typing import Final

import anyio
import crc32c

from elastickv_async import ElasticKVError, EncodeOptions, decode_snapshot, encode_snapshot
from elastickv_async._core.dump.checksums import compute_checksums

_INTERESTING_U64: Final = (0, 1, 7, 8, 9, 255, 1 << 20, (1 << 31) - 1, 1 << 32, (1 << 64) - 1)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to three random edits of ``data``: flips, cuts, inserts, copies, length fields."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:  # flip a few bits
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncate
            del out[at:]
        elif op == 2:  # insert random bytes
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and out:  # duplicate a slice
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 64)]
        elif op == 4:  # a suspicious little-endian length
            out[at : at + 8] = struct.pack("<Q", rng.choice(_INTERESTING_U64))
        elif op == 5 and out:  # delete a slice
            del out[at : at + rng.randint(1, 32)]
        elif out:  # JSON-ish punctuation where it hurts
            out[min(at, len(out) - 1)] = ord(rng.choice('{}[]":,\\0-e'))
    return bytes(out)


def _unexpected(what: str, exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"{what}: {type(exc).__name__}: {str(exc)[:200]}{where}"


def mutate_snapshot(rng: random.Random, seed: bytes) -> bytes:
    """Mutate a snapshot; when it ends in a valid CRC32C footer, usually re-seal the mutated
    payload with a fresh footer, so the mutation reaches the parsers behind the checksum."""
    payload, footer = seed[:-4], seed[-4:]
    sealed = len(seed) > 4 and struct.pack(">I", crc32c.crc32c(payload)) == footer
    if not sealed or rng.random() < 0.2:
        return mutate(rng, seed)
    mutated = mutate(rng, payload)
    return mutated + struct.pack(">I", crc32c.crc32c(mutated))


def fuzz_snapshot(rng: random.Random, seed: bytes, work: Path) -> tuple[str, list[str]]:
    """Decode a mutated ``seed``; return the outcome ("refused" / "decoded") and problems."""
    fsm = work / "fuzz.fsm"
    fsm.write_bytes(mutate_snapshot(rng, seed))
    out = work / "tree"
    try:
        anyio.run(decode_snapshot, fsm, out)
    except ElasticKVError:
        if (out / "MANIFEST.json").exists():
            return "refused", ["refused decode left MANIFEST.json"]
        return "refused", []
    except Exception as exc:
        return "crashed", [_unexpected("decode", exc)]
    problems = []
    if compute_checksums(out) != (out / "CHECKSUMS").read_bytes():
        problems.append("decoded tree does not match its CHECKSUMS")
    try:
        anyio.run(encode_snapshot, out, work / "again.fsm")
    except ElasticKVError as exc:
        problems.append(f"decoded tree does not encode: {str(exc)[:200]}")
    except Exception as exc:
        problems.append(_unexpected("encode of a decoded tree", exc))
    return "decoded", problems


def _tree_edits(rng: random.Random, tree: Path) -> None:
    files = sorted(p for p in tree.rglob("*") if p.is_file() and p.name != "CHECKSUMS")
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(files)
        if not path.exists():
            continue
        edit = rng.randrange(10)
        if edit == 0:
            path.unlink()
        elif edit == 1:
            path.rename(path.with_name(rng.choice(["..x", "%ZZ", "a%2Fb", "x" * 300, "%00"])[:255]))
        else:
            path.write_bytes(mutate(rng, path.read_bytes()))


def fuzz_tree(rng: random.Random, tree: Path, work: Path) -> tuple[str, list[str]]:
    """Encode a mutated copy of ``tree``; return the outcome and problems."""
    copy = work / "tree"
    shutil.copytree(tree, copy)
    _tree_edits(rng, copy)
    out = work / "out.fsm"
    # The encoder's own checks are the target: CHECKSUMS would refuse every edited tree.
    unchecked = EncodeOptions(verify_checksums=False)
    try:
        anyio.run(encode_snapshot, copy, out, unchecked)
    except ElasticKVError:
        leftovers = sorted(p.name for p in work.iterdir() if p.name.startswith("out.fsm"))
        return "refused", [f"refused encode left {leftovers}"] if leftovers else []
    except Exception as exc:
        return "crashed", [_unexpected("encode", exc)]
    try:
        anyio.run(decode_snapshot, out, work / "decoded")
    except ElasticKVError as exc:
        return "encoded", [f"encoded .fsm does not decode: {str(exc)[:200]}"]
    except Exception as exc:
        return "encoded", [_unexpected("decode of an encoded tree", exc)]
    return "encoded", []
