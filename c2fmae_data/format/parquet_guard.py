"""Opening untrusted Parquet files (shards and split indexes) within bounds.

``open_parquet`` refuses, before any column is read, a file whose footer, key-value metadata, row
groups (count, rows, declared bytes) or row counts exceed ``bounds`` or disagree with each other,
and parses the footer with Arrow's thrift limits set to the same bounds. ``column_problems`` /
``check_columns`` compare column types with a schema (large/view variants accepted). ``guard``
turns whatever Arrow, the OS or a codec raises while reading into one FormatError line naming the
file and what was being read; a MemoryError is never turned into a FormatError (it means a bound
is missing, and the fuzzer in the test suite fails on it).
"""
from __future__ import annotations

import contextlib
import struct
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from c2fmae_data.format.bounds import (MAX_FOOTER_BYTES, MAX_KEY_BYTES, MAX_METADATA_BYTES,
                                       MAX_ROW_GROUP_BYTES, MAX_ROW_GROUP_ROWS, MAX_ROW_GROUPS,
                                       FormatError)

#: what reading a hostile file may raise besides FormatError (MemoryError excluded on purpose)
READ_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, struct.error,
               pa.ArrowException)


@contextlib.contextmanager
def guard(name: str, what: str) -> Iterator[None]:
    """Re-raise read errors as ``FormatError("<name>: <what>: <error>")`` (one line)."""
    try:
        yield
    except FormatError:
        raise
    except MemoryError:
        raise
    except READ_ERRORS as e:
        msg = " ".join(str(e).split())[:300]
        raise FormatError(f"{name}: {what}: {type(e).__name__}: {msg}") from None


def _file_size(source) -> int:
    size = getattr(source, "size", None)
    if callable(size):
        return int(size())
    if size is not None:
        return int(size)
    pos = source.tell()
    end = source.seek(0, 2)
    source.seek(pos)
    return int(end)


def _footer_length(source, size: int) -> int:
    """The footer length the file's last 8 bytes declare (checked against the file size)."""
    if size < 12:
        raise FormatError(f"{size} bytes: too short for a Parquet file")
    if isinstance(source, pa.NativeFile):
        tail = source.read_at(8, size - 8)
    else:
        pos = source.tell()
        source.seek(size - 8)
        tail = source.read(8)
        source.seek(pos)
    if len(tail) != 8 or tail[4:] != b"PAR1":
        raise FormatError("no Parquet magic at the end (truncated or not Parquet)")
    (n,) = struct.unpack("<I", tail[:4])
    if n > MAX_FOOTER_BYTES or n + 12 > size:
        raise FormatError(f"footer declares {n} bytes (file {size} bytes, bound "
                          f"{MAX_FOOTER_BYTES})")
    return n


def open_parquet(source, name: str, *, pre_buffer: bool = False, checksums: bool = False
                 ) -> pq.ParquetFile:
    """A ``ParquetFile`` over ``source`` (a pyarrow NativeFile or a binary file object) whose
    footer and row-group layout are within ``bounds``; FormatError naming ``name`` otherwise.
    ``checksums``: verify the page CRCs our writer stores (cheap; readers of every column)."""
    with guard(name, "unreadable Parquet file"):
        try:
            _footer_length(source, _file_size(source))
        except FormatError as e:
            raise FormatError(f"{name}: unreadable Parquet file: {e}") from None
        pf = pq.ParquetFile(source, pre_buffer=pre_buffer, page_checksum_verification=checksums,
                            thrift_string_size_limit=MAX_FOOTER_BYTES,
                            thrift_container_size_limit=MAX_ROW_GROUPS)
        pf.schema_arrow   # noqa: B018 - a schema Arrow cannot map fails here, not later
        check_layout(pf.metadata, name)
    return pf


def check_layout(md: pq.FileMetaData, name: str) -> None:
    """Footer size, key-value metadata sizes, row-group count, rows and declared bytes."""
    if md.serialized_size > MAX_FOOTER_BYTES:
        raise FormatError(f"{name}: footer of {md.serialized_size} bytes (bound "
                          f"{MAX_FOOTER_BYTES})")
    for k, v in (md.metadata or {}).items():
        if len(v) > MAX_METADATA_BYTES:
            raise FormatError(f"{name}: key-value metadata {k[:40]!r} holds {len(v)} bytes "
                              f"(bound {MAX_METADATA_BYTES})")
    if not 0 <= md.num_row_groups <= MAX_ROW_GROUPS:
        raise FormatError(f"{name}: {md.num_row_groups} row groups (bound {MAX_ROW_GROUPS})")
    total = 0
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        if not (0 <= rg.num_rows <= MAX_ROW_GROUP_ROWS
                and 0 <= rg.total_byte_size <= MAX_ROW_GROUP_BYTES):
            raise FormatError(f"{name}: row group {g} declares {rg.num_rows} rows, "
                              f"{rg.total_byte_size} bytes (bounds {MAX_ROW_GROUP_ROWS} rows, "
                              f"{MAX_ROW_GROUP_BYTES} bytes)")
        total += rg.num_rows
    if total != md.num_rows:
        raise FormatError(f"{name}: row groups hold {total} rows, the footer says {md.num_rows}")


def row_group_sizes(pf: pq.ParquetFile) -> "list[int]":
    md = pf.metadata
    return [md.row_group(g).num_rows for g in range(md.num_row_groups)]


def read_row_group(pf: pq.ParquetFile, group: int, columns: "Sequence[str]", name: str
                   ) -> pa.Table:
    """One row group's ``columns``; FormatError naming the file and row group on any failure,
    or when the table read does not hold the rows the footer declares."""
    with guard(name, f"row group {group} unreadable"):
        t = pf.read_row_group(group, columns=list(columns), use_threads=False)
    if t.num_rows != pf.metadata.row_group(group).num_rows:
        raise FormatError(f"{name}: row group {group}: read {t.num_rows} rows, the footer says "
                          f"{pf.metadata.row_group(group).num_rows}")
    return t


def read_columns(pf: pq.ParquetFile, columns: "Sequence[str]", name: str) -> pa.Table:
    """``columns`` of every row group, one row group at a time (each checked as above)."""
    parts = [read_row_group(pf, g, columns, name) for g in range(pf.metadata.num_row_groups)]
    if parts:
        return pa.concat_tables(parts)
    with guard(name, "schema unreadable"):
        return pf.schema_arrow.empty_table().select(list(columns))


# ----------------------------------------------------------------------------- column types
def plain_type(t: pa.DataType) -> pa.DataType:
    """The type with large/view string, binary and list variants (what other Parquet writers may
    produce; read the same) replaced by the plain ones, dictionaries by their values."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t) \
            or pa.types.is_list(t):
        return pa.list_(_plain_field(t.value_field))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(_plain_field(t.value_field), t.list_size)
    if pa.types.is_struct(t):
        return pa.struct([_plain_field(t.field(i)) for i in range(t.num_fields)])
    if pa.types.is_dictionary(t):
        return plain_type(t.value_type)
    return t


def _plain_field(f: pa.Field) -> pa.Field:
    return pa.field(f.name, plain_type(f.type))   # element names and nullability do not matter


def column_problems(schema: pa.Schema, want: pa.Schema,
                    columns: "Sequence[str] | None" = None) -> "list[str]":
    """Columns of ``want`` (or only ``columns``) whose type in ``schema`` differs (absent
    columns are not reported here)."""
    out = []
    for f in want:
        if columns is not None and f.name not in columns:
            continue
        i = schema.get_field_index(f.name)
        if i >= 0 and plain_type(schema.field(i).type) != plain_type(f.type):
            out.append(f"column {f.name} is {schema.field(i).type}, the format says {f.type}")
    return out


def check_columns(pf: pq.ParquetFile, want: pa.Schema, columns: "Sequence[str]", name: str,
                  optional: "Sequence[str]" = (), types: bool = True) -> None:
    """FormatError naming the file and column when one of ``columns`` is missing (unless
    ``optional``) or (``types``) of another type than in ``want``."""
    with guard(name, "schema unreadable"):
        schema = pf.schema_arrow
    missing = [c for c in columns if c not in schema.names and c not in optional]
    if missing:
        raise FormatError(f"{name}: lacks columns {missing}")
    probs = column_problems(schema, want, columns) if types else []
    if probs:
        raise FormatError(f"{name}: {probs[0]}")


def cast_columns(t: pa.Table, want: pa.Schema, name: str) -> pa.Table:
    """``t`` with every column of ``want`` cast to its type (what the manifest builder accepts of
    a shard another tool rewrote); FormatError naming the file and column when one cannot be."""
    for i, c in enumerate(t.column_names):
        if c in want.names and t.schema.field(i).type != want.field(c).type:
            with guard(name, f"column {c} ({t.schema.field(i).type}) is not {want.field(c).type}"):
                t = t.set_column(i, c, t.column(c).cast(want.field(c).type))
    return t


def check_keys(keys: "pa.Array | pa.ChunkedArray", name: str) -> None:
    """Every key non-null, 1..MAX_KEY_BYTES bytes; FormatError naming the first bad row."""
    if not len(keys):
        return
    lengths = pc.binary_length(keys)
    bad = pc.or_kleene(pc.is_null(lengths), pc.or_(pc.less(lengths, 1),
                                                   pc.greater(lengths, MAX_KEY_BYTES)))
    bad = pc.fill_null(bad, True)
    if pc.any(bad).as_py():
        row = pc.index(bad, True).as_py()
        raise FormatError(f"{name}: row {row}: column key: {lengths[row].as_py()} bytes (keys are "
                          f"1..{MAX_KEY_BYTES} bytes)")
