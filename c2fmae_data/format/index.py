"""``index/<split>.parquet``: one small row per image of a split, so a loader opens without
touching the shards (format 1.2, docs/FORMAT.md section "Index").

Columns: ``key``, ``shard`` (the shard's file as listed in the manifest), ``row_group`` and ``row``
(the row's position within that row group), ``class_index``, ``status``, and the fields a sample
checks (``width``, ``height``, ``source_size``, ``source_sha256``); rows in manifest shard order,
then file order. The Parquet key-value metadata ``c2fmae_index`` lists every shard with its
rows and row-group count (an empty row group has no rows to show it). The index is derived data:
``build_manifest`` writes it and lists it in the manifest with its rows, bytes and sha256;
``verify`` checks the hash and compares it with the shards; a loader checks only that it agrees with
the manifest's per-shard row counts (cheap), not its hash.
"""
from __future__ import annotations

import hashlib
import io
import json
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from c2fmae_data.format.bounds import (MAX_INDEX_BYTES, MAX_METADATA_BYTES, MAX_ROW_GROUPS,
                                       FormatError, is_count, loads_bounded, read_capped)
from c2fmae_data.format.parquet_guard import (cast_columns, check_columns, check_keys,
                                              open_parquet, read_columns, row_group_sizes)
from c2fmae_data.format.fs import inside_root, sha256_file
from c2fmae_data.format.schema import FORMAT_VERSION
from c2fmae_data.format.schema import SCHEMA as SHARD_SCHEMA

INDEX_DIR = "index"
META_KEY = b"c2fmae_index"
SCHEMA = pa.schema([
    ("key", pa.string()),
    ("shard", pa.string()),         # shards/<split>-NNNNN.parquet, as in the manifest
    ("row_group", pa.int32()),
    ("row", pa.int32()),            # position within the row group
    ("class_index", pa.int32()),
    ("status", pa.string()),
    # what a sample checks besides its PNGs (row_meta.py): read here, a sample reads only those
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("source_size", pa.int64()),
    ("source_sha256", pa.string()),
])
SCAN_COLUMNS = ["key", "status", "class_index", "width", "height", "source_size", "source_sha256"]
ROW_GROUP_SIZE = 1 << 20


def index_name(split: str) -> str:
    return f"{INDEX_DIR}/{split}.parquet"


def shard_rows(rel: str, t: pa.Table, sizes: "Sequence[int]") -> pa.Table:
    """The index rows of one shard from its key/status/class_index table and row-group sizes."""
    sizes = [int(n) for n in sizes]
    if sum(sizes) != t.num_rows:
        raise FormatError(f"{rel}: row groups hold {sum(sizes)} rows, read {t.num_rows}")
    groups = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    starts = np.repeat(np.cumsum([0] + sizes[:-1]).astype(np.int32), sizes)
    rows = np.arange(len(groups), dtype=np.int32) - starts
    out = pa.table({"key": t.column("key").cast(pa.string()),
                    "shard": pa.array([rel] * t.num_rows, pa.string()),
                    "row_group": groups, "row": rows,
                    **{c: t.column(c).cast(SCHEMA.field(c).type)
                       for c in SCHEMA.names if c not in ("key", "shard", "row_group", "row")}},
                   schema=SCHEMA)
    return out.replace_schema_metadata({b"row_groups": str(len(sizes)).encode()})


def read_shard_rows(fs, path: str, rel: str) -> pa.Table:
    """Index rows of one shard file (reads its ``SCAN_COLUMNS``, page CRCs verified; the file is
    untrusted: a FormatError names it and the column or row group at fault)."""
    with fs.open(path, "rb") as f:
        pf = open_parquet(f, rel, checksums=True)
        check_columns(pf, SHARD_SCHEMA, SCAN_COLUMNS, rel, types=False)
        t = cast_columns(read_columns(pf, SCAN_COLUMNS, rel), SHARD_SCHEMA, rel)
        check_keys(t.column("key"), rel)
        return shard_rows(rel, t, row_group_sizes(pf))


def save_shard_rows(fs, path: str, rows: pa.Table) -> None:
    """Keep one shard's index rows beside a ledger (the Ray pipeline's ``_pipeline/shards/``), so
    that the manifest built at the end reads no shard back (over object storage that read would
    be most of every shard's bytes)."""
    buf = io.BytesIO()
    pq.write_table(rows, buf, compression="zstd")
    with fs.open(path, "wb") as f:
        f.write(buf.getvalue())


def load_shard_rows(fs, path: str) -> "pa.Table | None":
    """What ``save_shard_rows`` kept, or None when absent or unreadable (then the shard is read)."""
    try:
        with fs.open(path, "rb") as f:
            t = pq.read_table(pa.BufferReader(f.read()))
    except (OSError, ValueError, pa.ArrowException):
        return None
    return t if t.schema.remove_metadata().equals(SCHEMA) else None


def row_groups_of(t: pa.Table) -> int:
    return int((t.schema.metadata or {}).get(b"row_groups", b"0"))


def encode_index(split: str, parts: "Sequence[pa.Table]", files: "Sequence[str]") -> bytes:
    """Parquet bytes of a split's index from its shards' ``shard_rows`` tables (manifest order)."""
    shards = [{"file": f, "rows": p.num_rows, "row_groups": row_groups_of(p)}
              for p, f in zip(parts, files)]
    table = (pa.concat_tables([p.replace_schema_metadata(None) for p in parts])
             if parts else SCHEMA.empty_table())
    meta = {"format_version": FORMAT_VERSION, "split": split, "shards": shards}
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=ROW_GROUP_SIZE,
                   use_dictionary=["shard", "status"], write_page_checksum=True)
    return buf.getvalue()


def index_entry(split: str, parts: "Sequence[pa.Table]", files: "Sequence[str]"
                ) -> "tuple[dict[str, Any], bytes]":
    """(manifest entry, Parquet bytes) of a split's index."""
    data = encode_index(split, parts, files)
    entry = {"file": index_name(split), "rows": sum(p.num_rows for p in parts),
             "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return entry, data


def _index_meta(pf: pq.ParquetFile, rel: str, fix: str) -> "list[dict[str, Any]]":
    """The ``shards`` list of the index's key-value metadata, each entry checked for types and
    bounds (``file`` a string, ``rows``/``row_groups`` counts)."""
    raw = (pf.metadata.metadata or {}).get(META_KEY)
    if raw is None:
        raise FormatError(f"{rel}: not a readable index: no {META_KEY.decode()} metadata {fix}")
    meta = loads_bounded(raw, f"{rel}: key-value metadata {META_KEY.decode()}",
                         limit=MAX_METADATA_BYTES)
    shards = meta.get("shards") if isinstance(meta, dict) else None
    if not isinstance(shards, list):
        raise FormatError(f"{rel}: metadata {META_KEY.decode()} has no 'shards' list {fix}")
    for s in shards:
        if not (isinstance(s, dict) and isinstance(s.get("file"), str)
                and is_count(s.get("rows")) and is_count(s.get("row_groups"), MAX_ROW_GROUPS)):
            raise FormatError(f"{rel}: metadata shard entry {str(s)[:200]} is not "
                              f"{{'file': str, 'rows': n, 'row_groups': n <= {MAX_ROW_GROUPS}}} "
                              f"{fix}")
        if s["row_groups"] > 2 * s["rows"] + 1:   # keeps every per-shard list O(rows)
            raise FormatError(f"{rel}: metadata says {s['file']} has {s['row_groups']} row "
                              f"groups for {s['rows']} rows (at most 2 x rows + 1) {fix}")
    return shards


def load_index(fs, path: str, rel: str, shard_entries: "Sequence[dict[str, Any]]"
               ) -> "tuple[pa.Table, list[int]]":
    """(index table, row groups per shard) of one split, checked against the manifest's shard list
    and per-shard row counts; a FormatError names the file otherwise. One read of the file, which
    is untrusted: at most ``MAX_INDEX_BYTES``, bounded footer and row groups, page CRCs, column
    types, key lengths and metadata checked."""
    fix = "(rebuild it with `c2fmae-data manifest ROOT`, or open with use_index=False)"
    try:
        with fs.open(path, "rb") as f:
            data = read_capped(f, MAX_INDEX_BYTES, rel)
    except FileNotFoundError:
        raise FormatError(f"{rel}: listed in the manifest but missing {fix}") from None
    try:
        pf = open_parquet(pa.BufferReader(data), rel, checksums=True)
        check_columns(pf, SCHEMA, SCHEMA.names, rel)
        shards = _index_meta(pf, rel, fix)
        table = read_columns(pf, SCHEMA.names, rel)
        check_keys(table.column("key"), rel)
    except FormatError as e:
        raise FormatError(f"{e} {fix}") from None
    listed = [(s["file"], s["rows"]) for s in shards]
    want = [(e["file"], int(e["rows"])) for e in shard_entries]
    if listed != want:
        bad = next((f"{w[0]} ({w[1]} rows)" for w, g in zip(want, listed) if w != g),
                   f"{len(want)} shards, the index has {len(listed)}")
        raise FormatError(f"{rel}: does not match the manifest at {bad} {fix}")
    counts = pc.value_counts(table.column("shard")).to_pylist() if table.num_rows else []
    got = {c["values"]: c["counts"] for c in counts}
    for f, n in want:
        if got.get(f, 0) != n:
            raise FormatError(f"{rel}: {got.get(f, 0)} rows for {f}, the manifest says {n} {fix}")
    return table, [s["row_groups"] for s in shards]


def split_by_shard(table: pa.Table, shard_entries: "Sequence[dict[str, Any]]",
                   row_groups: "Sequence[int]", rel: str
                   ) -> "list[tuple[pa.Table, list[int]]]":
    """Per shard: (its key/status/class_index rows, row-group sizes), as a shard scan gives them.
    The rows must follow manifest order and the row_group/row layout; FormatError otherwise."""
    out, start = [], 0
    for e, ng in zip(shard_entries, row_groups):
        n = int(e["rows"])
        part = table.slice(start, n)
        start += n
        if n and not pc.all(pc.equal(part.column("shard"), e["file"])).as_py():
            raise FormatError(f"{rel}: rows of {e['file']} are not contiguous in manifest order")
        groups = part.column("row_group").to_numpy()
        if n and (groups.min() < 0 or groups.max() >= ng):
            raise FormatError(f"{rel}: {e['file']}: row_group outside 0..{ng - 1}")
        sizes = np.bincount(groups, minlength=ng).tolist() if n else [0] * ng
        layout = shard_rows(e["file"], part, sizes)
        if not (np.array_equal(layout.column("row_group").to_numpy(), groups)
                and layout.column("row").equals(part.column("row").cast(pa.int32()))):
            raise FormatError(f"{rel}: {e['file']}: row_group/row do not follow the file order")
        out.append((part.select(SCAN_COLUMNS), sizes))
    return out


def rows_digest(columns: "Sequence[Sequence[Any]]", sizes: "Sequence[int]") -> str:
    """A digest of what the index says of one shard (``columns``: the values of
    ``SCAN_COLUMNS`` in that order), computed the same way from the shard (by ``verify``) and
    from the index."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([int(n) for n in sizes]).encode())
    for row in zip(*columns):
        h.update(("\t".join(map(str, row)) + "\n").encode())
    return h.hexdigest()


def index_problems(fs, base: str, ent: "dict[str, Any]", entries: "Sequence[dict[str, Any]]",
                   digests: "dict[str, str | None]") -> "list[str]":
    """What ``verify`` finds wrong with a split's index: missing, size or sha256 not as listed,
    not agreeing with the manifest, or per shard other keys/statuses/class indices/row groups than
    the shard (``digests``: ``rows_digest`` of each shard's own columns, None when unreadable)."""
    rel = ent["file"]
    fix = "(rebuild it with `c2fmae-data manifest ROOT`)"
    try:
        path = inside_root(fs, base, rel)
        if not fs.exists(path):
            return [f"{rel}: index missing (listed in the manifest) {fix}"]
        sha, size = sha256_file(fs, path)
    except (FormatError, OSError) as e:
        return [f"{rel}: unreadable: {e}"]
    probs = []
    if size != int(ent["bytes"]) or sha != ent["sha256"]:
        probs.append(f"{rel}: {size} bytes, sha256 {sha[:16]}... != manifest {ent['bytes']} "
                     f"bytes, {str(ent['sha256'])[:16]}... (corrupted or stale) {fix}")
    try:
        table, groups = load_index(fs, path, rel, entries)
        parts = split_by_shard(table, entries, groups, rel)
    except FormatError as e:
        return probs + [str(e)]
    if table.num_rows != int(ent["rows"]):
        probs.append(f"{rel}: {table.num_rows} rows, the manifest says {ent['rows']}")
    for e, (part, sizes) in zip(entries, parts):
        want = digests.get(e["file"])
        got = rows_digest([part.column(c).to_pylist() for c in SCAN_COLUMNS], sizes)
        if want is not None and got != want:
            probs.append(f"{rel}: rows of {e['file']} differ from the shard's "
                         f"{', '.join(SCAN_COLUMNS)} or row groups {fix}")
    return probs
