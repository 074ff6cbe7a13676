"""Scale fixes (issue 14): leaf codecs, O(units) streaming counts, the shard-aware sampler."""
from __future__ import annotations

import glob

import numpy as np
import pyarrow.parquet as pq
import pytest

from _datasets import synthetic_dataset
from c2fmae_data.shards import BINARY_COLUMNS


def test_every_leaf_column_has_its_codec(tmp_path):
    synthetic_dataset(tmp_path, n=6)
    for f in glob.glob(str(tmp_path / "shards" / "*.parquet")):
        md = pq.ParquetFile(f).metadata
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            leaves = {rg.column(i).path_in_schema: rg.column(i).compression
                      for i in range(rg.num_columns)}
            assert any(p.startswith("instances.list.element.") for p in leaves)
            for path, codec in leaves.items():
                assert codec == ("UNCOMPRESSED" if path in BINARY_COLUMNS else "ZSTD"), path


def test_stream_counts_match_the_assignment(tmp_path):
    from c2fmae_data.stream import ImageNetMultiGranularStream

    synthetic_dataset(tmp_path, n=40, shards=3, failed=5)
    ds = ImageNetMultiGranularStream(tmp_path, transform=None, seed=3, world_size=3, rank=1,
                                     even=True)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        brute = [[sum(ds.units[u][2] for u in ds._assignment(r, 3, w, 2)) for w in range(2)]
                 for r in range(3)]
        assert ds._counts(3, 2).tolist() == brute
        assert ds._cap(1, 3, 1, 2) == min(b[1] for b in brute)
        assert len(ds) == min(sum(b) for b in brute)
