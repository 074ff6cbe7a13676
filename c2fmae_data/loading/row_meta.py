"""Per-row arrays of the loaders' index: the keys packed in one buffer (``PackedKeys``) and the
fields a sample checks (``RowMeta``), in numpy.

A sample needs ``width``/``height`` (the decoded image must match the masks), ``source_size`` and
``source_sha256`` (the joined image must be the one that was labeled) besides its PNGs. Read
from the shard with each sample, these four small zstd columns cost about 0.25 ms of a 0.35 ms
row-group read (one decompression per column chunk); the two PNG columns (stored uncompressed)
and ``key`` cost 0.1 ms. So the index reads them once at open, with ``key`` and ``status``, and
keeps them compactly: 49 bytes a row (64 MB at 1.28M rows), shared copy-on-write by forked
DataLoader workers (numpy buffers, no per-row Python objects).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

META_COLUMNS = ("width", "height", "source_size", "source_sha256")
_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def _digest_chunk(arr: pa.Array) -> "tuple[np.ndarray, np.ndarray, dict[int, Any]]":
    """(N x 32 digests, has-digest mask, {row: raw value} for values that are not 64 hex digits
    but not null either: kept as they are, so the check still fails on them)."""
    arr = arr.cast(pa.string())
    n = len(arr)
    lens = pc.utf8_length(arr).to_numpy(zero_copy_only=False)
    valid = arr.is_valid().to_numpy(zero_copy_only=False) & (np.nan_to_num(lens) == 64)
    hexes = pc.if_else(pa.array(valid), arr, pa.scalar("0" * 64))
    raw = np.frombuffer(hexes.buffers()[2], np.uint8, 64 * n, 64 * hexes.offset) \
        .reshape(n, 64) if n else np.zeros((0, 64), np.uint8)
    nib = _HEX[raw]
    valid &= (nib != 255).all(axis=1)
    digest = (nib[:, 0::2] << 4 | nib[:, 1::2]).astype(np.uint8)
    odd = {int(i): arr[int(i)].as_py() for i in np.flatnonzero(~valid & arr.is_valid()
                                                                .to_numpy(zero_copy_only=False))}
    return digest, valid, odd


def _digests(col: pa.ChunkedArray) -> "tuple[np.ndarray, np.ndarray, dict[int, Any]]":
    """``_digest_chunk`` of a whole column, a chunk (one shard) at a time: no combined copy of
    the hex strings and no N x 64 temporaries (1.28M rows: ~250 MB less at peak)."""
    n = len(col)
    digest, valid, odd, start = np.zeros((n, 32), np.uint8), np.zeros(n, bool), {}, 0
    for chunk in col.chunks:
        d, v, o = _digest_chunk(chunk)
        digest[start:start + len(chunk)], valid[start:start + len(chunk)] = d, v
        odd.update({start + i: x for i, x in o.items()})
        start += len(chunk)
    return digest, valid, odd


class PackedKeys:
    """Keys as one bytes buffer plus int64 offsets: memory is the keys' total length + 8 bytes a
    row whatever the longest key (a fixed-width array would cost rows x longest key: one hostile
    4 KB key in a 1.28M-row index would make it 5 GB). Numpy buffers only, shared copy-on-write
    by forked DataLoader workers."""

    def __init__(self, chunks):
        arrs = [c.cast(pa.string()) for c in chunks if len(c)]
        lens = [pc.binary_length(a).to_numpy(zero_copy_only=False) for a in arrs]
        self._offsets = np.zeros(1 + sum(len(x) for x in lens), np.int64)
        np.cumsum(np.concatenate(lens) if lens else np.zeros(0, np.int64),
                  out=self._offsets[1:])
        parts = []
        for a in arrs:
            offs = np.frombuffer(a.buffers()[1], np.int32, len(a) + 1, a.offset * 4)
            data = a.buffers()[2]
            parts.append(np.frombuffer(data, np.uint8)[offs[0]:offs[-1]] if data is not None
                         else np.zeros(0, np.uint8))
        self._data = np.concatenate(parts) if parts else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self._data[self._offsets[i]:self._offsets[i + 1]].tobytes().decode()

    def tolist(self) -> "list[str]":
        data = self._data.tobytes()
        offs = self._offsets.tolist()
        return [data[a:b].decode() for a, b in zip(offs, offs[1:])]


class RowMeta:
    """``fields(i)`` -> ``{"width", "height", "source_size", "source_sha256"}`` of sample i, equal
    to what the shard row holds (None where it holds null)."""

    def __init__(self, tables: "list[pa.Table]"):
        t = pa.concat_tables(tables) if tables else pa.table(
            {c: pa.array([], pa.int64()) for c in META_COLUMNS[:3]}
            | {"source_sha256": pa.array([], pa.string())})
        num = (lambda c, dt: pc.fill_null(t.column(c).cast(dt), -1).to_numpy())
        self.width, self.height = num("width", pa.int32()), num("height", pa.int32())
        self.size = num("source_size", pa.int64())
        self._null = {c: t.column(c).is_null().to_numpy(zero_copy_only=False)
                      for c in META_COLUMNS[:3]}
        self.digest, self.has_digest, self._odd = _digests(t.column("source_sha256"))

    def __len__(self) -> int:
        return len(self.width)

    def fields(self, i: int) -> "dict[str, Any]":
        out = {c: (None if self._null[c][i] else int(v[i]))
               for c, v in (("width", self.width), ("height", self.height),
                            ("source_size", self.size))}
        out["source_sha256"] = (self.digest[i].tobytes().hex() if self.has_digest[i]
                                else self._odd.get(i))
        return out
