"""The map-style index keeps width/height/source_size/source_sha256 in numpy (row_meta.py) so a
sample reads only key + PNGs: its fields must equal the shard rows exactly, nulls and malformed
digests included, and a wrong image must still be refused."""
from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from c2fmae_data import ImageNetMultiGranular
from c2fmae_data.loading.row_meta import META_COLUMNS, RowMeta
from c2fmae_data.loading.source import SampleError
from tests._datasets import SMALL, failed_rows_dataset
from tests._datasets import synthetic_dataset


def test_fields_equal_the_stored_rows_with_nulls_and_odd_digests():
    good = hashlib.sha256(b"x").hexdigest()
    t = pa.table({"width": pa.array([3, None, 0, 7], pa.int32()),
                  "height": pa.array([4, None, 0, 8], pa.int32()),
                  "source_size": pa.array([10, None, 5, 2**40], pa.int64()),
                  "source_sha256": [good, None, "not-hex", good.upper()]})
    meta = RowMeta([t.slice(0, 2), t.slice(2)])   # two shards
    rows = t.to_pylist()
    assert len(meta) == 4
    for i in range(3):
        assert meta.fields(i) == rows[i]
    # upper-case hex is the same digest; it is compared as the lower-case hexdigest
    assert meta.fields(3) == dict(rows[3], source_sha256=good)
    assert len(RowMeta([])) == 0 and RowMeta([]).digest.shape == (0, 32)


@pytest.mark.parametrize("use_index", [True, False])   # the index file (1.2) or the scan
def test_dataset_rows_match_the_shards(tmp_path, use_index):
    synthetic_dataset(tmp_path, n=20, shards=3)
    ds = ImageNetMultiGranular(tmp_path, transform=None, use_index=use_index)
    assert (ds.index_entry is not None) == use_index
    stored = {}
    for f in sorted((tmp_path / "shards").rglob("*.parquet")):
        for r in pq.read_table(f, columns=["key", *META_COLUMNS]).to_pylist():
            stored[r.pop("key")] = r
    assert {ds.key(i): ds._meta.fields(i) for i in range(len(ds))} == stored
    assert "source_sha256" not in ds.columns and "width" not in ds.columns  # not re-read


def test_failed_rows_and_hash_check_still_hold(tmp_path):
    keys = failed_rows_dataset(tmp_path)
    ds = ImageNetMultiGranular(tmp_path, include_failed=True, **SMALL)
    assert [ds._meta.fields(i)["width"] for i in range(3)][1:] == [0, 0]
    assert ds[1]["key"] == keys[1]
    # a digest that no longer matches the image is refused, as when it was read per row
    ds._meta.digest[0] ^= 1
    with pytest.raises(SampleError, match="sha256 does not match"):
        ds[0]


def test_a_shard_rewritten_after_the_manifest_is_refused_at_open(tmp_path):
    from c2fmae_data.format.schema import FormatError

    synthetic_dataset(tmp_path, n=12, shards=2)
    ds = ImageNetMultiGranular(tmp_path, transform=None)
    first = sorted((tmp_path / "shards").glob("*.parquet"))[0]
    t = pq.read_table(first)
    pq.write_table(t.slice(1), first)          # one row fewer, the manifest not rewritten
    ds._close()                                 # as a fresh DataLoader worker would open it
    with pytest.raises(FormatError, match=rf"{first.name} changed since the manifest was "
                                          r"written: \d+ (bytes|rows), the manifest says"):
        ds[0]
