"""Shard files: the one writer every producer uses, and a streaming reader.

A shard is ``<root>/shards/<split>-NNNNN.parquet``. The writer encodes the whole shard in memory,
hashes it, writes it under a temporary name beside the final one and renames it, so a crash never
leaves a partial file under a final name (object stores publish a PUT atomically anyway).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from c2fmae_data.format.bounds import MAX_METADATA_BYTES, loads_bounded
from c2fmae_data.format.parquet_guard import check_columns, open_parquet, read_row_group
from c2fmae_data.format.schema import (FORMAT_VERSION, SCHEMA, STATUS_OK, FormatError,
                                       check_record, records_to_table)
from c2fmae_data.format.fs import join, open_fs
from c2fmae_data.format.index import SCAN_COLUMNS, shard_rows

SHARD_DIR = "shards"
SHARD_RE = re.compile(r"^(?P<split>[a-z0-9_]+)-(?P<index>\d{5})\.parquet$")
TMP_MARK = ".tmp-"
ROW_GROUP_SIZE = 16
# PNG and JPEG bytes do not compress further: storing them plain makes a random row read a copy
# instead of a zstd pass over the whole row group. Every other column is zstd-compressed.
BINARY_COLUMNS = ("instance_png", "semantic_png", "image_bytes")
META_KEY = b"c2fmae"


def shard_name(split: str, index: int) -> str:
    if not re.fullmatch(r"[a-z0-9_]+", split):
        raise FormatError(f"split name {split!r} must be lower-case letters, digits or _")
    if not 0 <= index <= 99999:
        raise FormatError(f"shard index {index} outside 0..99999")
    return f"{split}-{index:05d}.parquet"


def parse_shard_name(name: str) -> "tuple[str, int] | None":
    m = SHARD_RE.match(os.path.basename(name))
    return (m["split"], int(m["index"])) if m else None


@dataclass
class ShardInfo:
    """What the manifest records of one shard."""
    file: str            # relative to the dataset root, e.g. shards/train-00000.parquet
    rows: int
    bytes: int
    sha256: str
    first_key: str
    last_key: str
    ok: int
    failed: int
    instances: int
    #: the shard's index rows (``index.shard_rows``) when the writer knows them; never in JSON
    index: Any = field(default=None, repr=False, compare=False)

    def to_json(self) -> "dict[str, Any]":
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "index"}


def encode_shard(records: "Sequence[dict[str, Any]]", *, meta: "dict | None" = None,
                 validate: bool = True) -> "tuple[bytes, pa.Table]":
    """Parquet bytes of one shard (rows sorted by key). With ``validate`` every record is checked
    first and a FormatError names each bad key."""
    if validate:
        problems = [f"{r.get('key')!r}: {p}" for r in records for p in check_record(r)]
        if problems:
            raise FormatError("refusing to write invalid records:\n  " + "\n  ".join(problems))
    table = records_to_table(list(records))
    kv = {META_KEY: json.dumps({"format_version": FORMAT_VERSION, **(meta or {})}).encode()}
    table = table.replace_schema_metadata(kv)
    buf = io.BytesIO()
    # Parquet applies a codec map per leaf column: a top-level name leaves nested leaves
    # (instances.list.element.*) uncompressed, so the map is keyed by leaf path.
    codecs = {leaf: ("none" if leaf in BINARY_COLUMNS else "zstd")
              for f in table.schema for leaf in leaf_paths(f.name, f.type)}
    # page CRCs let readers of every column (verify, inspect, manifest) catch a flipped bit in
    # a zstd page, which would otherwise decode to a silently different value
    pq.write_table(table, buf, row_group_size=ROW_GROUP_SIZE, compression=codecs,
                   use_dictionary=["wnid", "status", "reason"], write_statistics=["key"],
                   write_page_checksum=True)
    return buf.getvalue(), table


def leaf_paths(name: str, typ: pa.DataType) -> "list[str]":
    """Parquet leaf column paths of one Arrow field (lists as ``name.list.element``)."""
    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        return leaf_paths(f"{name}.list.element", typ.value_type)
    if pa.types.is_struct(typ):
        return [p for i in range(typ.num_fields)
                for p in leaf_paths(f"{name}.{typ.field(i).name}", typ.field(i).type)]
    return [name]


def write_shard(root: str, split: str, index: int, records: "Sequence[dict[str, Any]]", *,
                meta: "dict | None" = None, validate: bool = True) -> ShardInfo:
    """Write one shard atomically under ``root`` and return its manifest entry."""
    data, table = encode_shard(records, meta=meta, validate=validate)
    fs, base = open_fs(root)
    rel = f"{SHARD_DIR}/{shard_name(split, index)}"
    final = join(base, rel)
    fs.makedirs(join(base, SHARD_DIR), exist_ok=True)
    # dot-prefixed: pyarrow/pandas/duckdb readers of shards/ skip an interrupted write's leftover
    tmp = join(base, SHARD_DIR, f".{shard_name(split, index)}{TMP_MARK}{uuid.uuid4().hex[:12]}")
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, final)
    status = table.column("status").to_pylist()
    md = pq.ParquetFile(pa.BufferReader(data)).metadata
    rows = shard_rows(rel, table.select(SCAN_COLUMNS),
                      [md.row_group(g).num_rows for g in range(md.num_row_groups)])
    return ShardInfo(file=rel, rows=table.num_rows, bytes=len(data),
                     sha256=hashlib.sha256(data).hexdigest(),
                     first_key=table.column("key")[0].as_py() if table.num_rows else "",
                     last_key=table.column("key")[-1].as_py() if table.num_rows else "",
                     ok=sum(s == STATUS_OK for s in status),
                     failed=sum(s != STATUS_OK for s in status),
                     instances=int(pa.compute.sum(table.column("num_instances")).as_py() or 0),
                     index=rows)


def shard_meta(fs, path: str, name: "str | None" = None) -> "dict[str, Any]":
    """The key-value metadata a shard was written with (format version, provenance...); a
    FormatError naming the shard when it is unreadable or not a bounded JSON object."""
    name = name or path
    with fs.open(path, "rb") as f:
        pf = open_parquet(f, name)
        raw = (pf.metadata.metadata or {}).get(META_KEY, b"{}")
    meta = loads_bounded(raw, f"{name}: key-value metadata {META_KEY.decode()}",
                         limit=MAX_METADATA_BYTES)
    if not isinstance(meta, dict):
        raise FormatError(f"{name}: key-value metadata {META_KEY.decode()} is not a JSON object")
    return meta


def iter_shard(fs, path: str, columns: "Sequence[str] | None" = None, name: "str | None" = None
               ) -> "Iterator[dict[str, Any]]":
    """Stream the rows of one shard as dicts, holding one row group in memory at a time. The file
    is untrusted: bounded footer and row groups, page CRCs verified, the columns' types checked;
    any failure is a FormatError naming the shard (``name``, default ``path``)."""
    name = name or path
    with fs.open(path, "rb") as f:
        pf = open_parquet(f, name, checksums=True)
        have = pf.schema_arrow.names
        cols = list(columns) if columns else list(have)
        check_columns(pf, SCHEMA, [c for c in cols if c in SCHEMA.names], name,
                      optional=("image_bytes",))
        cols = [c for c in cols if c in have]
        for g in range(pf.num_row_groups):
            yield from read_row_group(pf, g, cols, name).to_pylist()


def list_shards(root: str, split: "str | None" = None) -> "list[str]":
    """Relative paths of the finished shards under root (temporary files ignored), sorted."""
    fs, base = open_fs(root)
    d = join(base, SHARD_DIR)
    if not fs.exists(d):
        return []
    out = []
    for p in fs.ls(d, detail=False):
        parsed = parse_shard_name(p)
        if parsed and (split is None or parsed[0] == split):
            out.append(f"{SHARD_DIR}/{os.path.basename(p)}")
    return sorted(out)
