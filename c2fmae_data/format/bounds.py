"""What a reader trusts of a dataset: nothing. The one error class and every bound a reader
enforces before it allocates (docs/FORMAT.md section 12, "Untrusted datasets").

Shards, index, manifest and card come from a URL: corrupted in transit, written by a buggy tool or
crafted. Every reader checks sizes against these bounds before it reads or allocates, and turns
whatever goes wrong into one ``FormatError`` line naming the file, row or key and column. The
bounds are generous for real data (ImageNet, COCO) and small enough that no read of a hostile
file allocates more than a small multiple of the largest legitimate row group.

A leaf module: the standard library only.
"""
from __future__ import annotations

import json
from typing import Any


class FormatError(ValueError):
    """A record, shard or manifest that does not follow the format."""


#: mask sides in pixels: 1..MAX_MASK_SIDE (PNG allows 2^31-1)
MAX_MASK_SIDE = 65535
#: width x height of a mask: 2^27 = 134M pixels (16384 x 8192; far above real ImageNet/COCO
#: images; PIL refuses to decode RGB images above 179M pixels by default anyway)
MAX_MASK_PIXELS = 1 << 27
#: instance ids and metadata rows per image (the 16-bit map's range)
MAX_INSTANCES = 65535
#: a key's UTF-8 length (PATH_MAX)
MAX_KEY_BYTES = 4096
#: a Parquet file's footer (FileMetaData); a 1000-row shard's is ~100 KB
MAX_FOOTER_BYTES = 64 << 20
#: one key-value metadata value (``c2fmae``, ``c2fmae_index``, ``ARROW:schema``): the index lists
#: every shard of a split (~70 bytes each, up to 100000 shards)
MAX_METADATA_BYTES = 16 << 20
#: rows of one row group (shards: the writer uses 16; the index 2^20)
MAX_ROW_GROUP_ROWS = 1 << 20
#: uncompressed bytes of one row group as its footer declares them (16 self-contained ImageNet
#: rows are < 300 MB)
MAX_ROW_GROUP_BYTES = 1 << 30
#: row groups of one file
MAX_ROW_GROUPS = 1 << 20
#: manifest.json (a shard entry is ~350 bytes: ~190000 shards)
MAX_MANIFEST_BYTES = 64 << 20
#: one split index file (~45 bytes a row: ~95M rows)
MAX_INDEX_BYTES = 4 << 30
#: nesting of any JSON a reader parses (the manifest nests 5 levels)
MAX_JSON_DEPTH = 32
#: the part of README.md read to find the card's mark line
MAX_CARD_BYTES = 1 << 20


def _remaining(f) -> "int | None":
    """Bytes left in the open file ``f`` when it can tell (fsspec's ``size``, or by seeking)."""
    try:
        size = getattr(f, "size", None)
        size = size() if callable(size) else size
        pos = f.tell()
        if size is None:
            size = f.seek(0, 2)
            f.seek(pos)
        return max(0, int(size) - int(pos))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def read_capped(f, limit: int, what: str) -> bytes:
    """The rest of the open binary file ``f``, refused (FormatError naming ``what``) when it holds
    more than ``limit`` bytes. Never allocates more than the file holds (``f.read(limit + 1)``
    would allocate ``limit`` bytes up front)."""
    size = _remaining(f)
    if size is not None and size > limit:
        raise FormatError(f"{what}: {size} bytes, larger than the bound for it ({limit}; "
                          "docs/FORMAT.md section 12)")
    chunks, n = [], 0
    while True:   # one read when the size is known; bounded chunks when it is not
        b = f.read(size + 1 if size is not None and n == 0 else 1 << 20)
        if not b:
            break
        chunks.append(b)
        n += len(b)
        if n > limit:
            raise FormatError(f"{what}: larger than the bound for it ({limit} bytes; "
                              "docs/FORMAT.md section 12)")
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def json_depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return deepest


def loads_bounded(data: "bytes | str", what: str, *, limit: int = MAX_MANIFEST_BYTES) -> Any:
    """``json.loads`` of untrusted text: at most ``limit`` bytes and ``MAX_JSON_DEPTH`` levels;
    anything else (bad JSON, bad UTF-8, a 5000-digit number, deep nesting) is one FormatError
    naming ``what``."""
    if len(data) > limit:
        raise FormatError(f"{what}: {len(data)} bytes of JSON, the bound is {limit}")
    try:
        obj = json.loads(data)
    except RecursionError:
        raise FormatError(f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:   # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise FormatError(f"{what}: not valid JSON: {e}") from None
    if json_depth(obj) > MAX_JSON_DEPTH:
        raise FormatError(f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return obj


def is_count(value: Any, limit: int = 1 << 62) -> bool:
    """A JSON integer in 0..limit (bools are not counts)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit
