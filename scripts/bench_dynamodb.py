"""Measure the DynamoDB decoder: items/s and peak RSS for one table of ``--items`` items.

The table is shaped like the bundled sample's ``orders`` (``examples/sample.fsm``): hash key
``customer`` (ten orders each), range key ``order_id``, and per item a number, a boolean, a
string set, a list of maps and a short note. Records are built with the product's own encode
helpers (schema, item key, item value), written in snapshot order, then decoded in a child
process in both layouts: ``per-item`` (one file per item) and ``jsonl`` (bundled parts).

``--mode pipeline`` (default) runs the whole decode with ``--adapter dynamodb``; ``--mode
adapter`` feeds the records straight to the DynamoDB decoder (see ``benchlib.feed_adapter``);
there the records are generated inside the measured child, so its peak RSS includes them.

Usage: ``python scripts/bench_dynamodb.py [--items N] [--layout per-item|jsonl|both]
[--mode pipeline|adapter] [--json FILE] [--workdir DIR] [--backend asyncio|trio]``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Final

import benchlib

from elastickv_async._adapters.dynamodb.encode import item_key
from elastickv_async._adapters.dynamodb.keys import (
    RESTORE_GENERATION,
    table_gen_key,
    table_meta_key,
)
from elastickv_async._adapters.dynamodb.layout import public_to_item, public_to_schema
from elastickv_async._adapters.dynamodb.values import encode_item, encode_schema
from elastickv_async._core.options import DecodeOptions
from elastickv_async._core.pipeline import decode_snapshot

TABLE: Final = "orders"
ORDERS_PER_CUSTOMER: Final = 10
LAYOUTS: Final = ("per-item", "jsonl")
_SCHEMA: Final = {
    "format_version": 1,
    "table_name": TABLE,
    "primary_key": {
        "hash_key": {"name": "customer", "type": "S"},
        "range_key": {"name": "order_id", "type": "S"},
    },
    "attribute_definitions": [
        {"name": "customer", "type": "S"},
        {"name": "order_id", "type": "S"},
    ],
}


def _item(i: int) -> dict[str, Any]:
    """The public JSON of item ``i`` (what a per-item dump file holds)."""
    return {
        "customer": {"S": f"customer-{i // ORDERS_PER_CUSTOMER:07d}"},
        "order_id": {"S": f"2026-{i % ORDERS_PER_CUSTOMER:03d}"},
        "total": {"N": f"{i % 1000}.{i % 100:02d}"},
        "paid": {"BOOL": i % 3 != 0},
        "tags": {"SS": ["gift", "priority"] if i % 2 else ["standard"]},
        "lines": {
            "L": [
                {"M": {"qty": {"N": str(1 + i % 5)}, "sku": {"S": f"A-{i % 97}"}}},
                {"M": {"qty": {"N": "1"}, "sku": {"S": f"B-{i % 13}"}}},
            ]
        },
        "note": {"S": f"deliver to door {i % 250}, ring twice"},
    }


def records(items: int, table: str = TABLE) -> list[benchlib.Record]:
    """Every record of ``table`` (schema, generation counter, items), in snapshot order."""
    schema = public_to_schema(_SCHEMA | {"table_name": table}, "bench schema")
    out: list[benchlib.Record] = [
        (table_meta_key(table), encode_schema(schema)),
        (table_gen_key(table), str(RESTORE_GENERATION).encode()),
    ]
    for i in range(items):
        item = public_to_item(_item(i), f"bench item {i}")
        out.append((item_key(schema, item, f"bench item {i}"), encode_item(item)))
    out.sort()
    return out


def prepare(fsm: str, items: int) -> dict[str, int]:
    """Write the synthetic snapshot; return its entry count and size."""
    return benchlib.write_fsm(Path(fsm), records(items))


async def decode(fsm: str, out: str, layout: str) -> dict[str, int]:
    """The whole decode of the table; return the report's counters."""
    options = DecodeOptions(adapters="dynamodb", adapter_options={"dynamodb": {"layout": layout}})
    report = await decode_snapshot(fsm, out, options)
    return report.counters


async def feed(out: str, items: int, layout: str) -> dict[str, int]:
    """Generate the records and feed them to the DynamoDB decoder alone."""
    options = DecodeOptions(adapters="dynamodb", adapter_options={"dynamodb": {"layout": layout}})
    report = await benchlib.feed_adapter("dynamodb", Path(out), records(items), options=options)
    return report.counters


def run(
    bench: benchlib.Bench,
    *,
    items: int,
    layouts: tuple[str, ...] = LAYOUTS,
    mode: str = "pipeline",
) -> None:
    """Generate the table once, then measure each layout."""
    with bench.workspace("dynamodb") as work:
        # Adapter mode reads no file: the stream is only sized (written to /dev/null).
        fsm = str(work / "bench.fsm") if mode == "pipeline" else os.devnull
        made = bench.prepare(f"{items:,} items", prepare, fsm=fsm, items=items)
        for layout in layouts:
            out = str(work / f"out-{layout}")
            label = f"dynamodb {layout}" + (" (adapter)" if mode == "adapter" else "")
            shape = {"items": items, "entries": made["entries"], "input_bytes": made["bytes"]}
            if mode == "pipeline":
                bench.measure(label, decode, {"fsm": fsm, "out": out, "layout": layout}, **shape)
            else:
                bench.measure(label, feed, {"out": out, "items": items, "layout": layout}, **shape)


def main() -> None:
    """Parse the flags and run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--layout", choices=(*LAYOUTS, "both"), default="both")
    parser.add_argument("--mode", choices=("pipeline", "adapter"), default="pipeline")
    benchlib.add_common_arguments(parser)
    args = parser.parse_args()
    bench = benchlib.bench_from_args(args)
    layouts = LAYOUTS if args.layout == "both" else (args.layout,)
    run(bench, items=args.items, layouts=layouts, mode=args.mode)
    bench.finish()


if __name__ == "__main__":
    main()
