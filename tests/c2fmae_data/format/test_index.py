"""The per-split index (format 1.2): written and listed with the manifest, same dataset as a shard
scan, old datasets still open, breakage found by verify and named by the loader, rebuilt by
``c2fmae-data manifest``, and opening over HTTP reads a small fraction of the shards' bytes."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests._datasets import synthetic_dataset
from tests._http import RangeServer
from c2fmae_data import ImageNetMultiGranular, ImageNetMultiGranularStream
from c2fmae_data.cli import main
from c2fmae_data.loading.dataset import MultiGranularBase
from c2fmae_data.format.schema import FormatError
from c2fmae_data.format.manifest import build_manifest
from c2fmae_data.format.shards import ShardInfo
from c2fmae_data.tools.verify import verify

INDEX = "index/train.parquet"


@pytest.fixture
def ds_root(tmp_path):
    root = tmp_path / "ds"
    synthetic_dataset(root, n=40, shards=3, failed=4)   # failed rows end the last shard
    return root


def manifest(root) -> dict:
    return json.loads((root / "manifest.json").read_text())


def drop_index(root) -> None:
    """What a format-1.1 writer left: no index entry, no index/ folder."""
    m = manifest(root)
    for s in m["splits"].values():
        s.pop("index")
    (root / "manifest.json").write_text(json.dumps(m))
    shutil.rmtree(root / "index")


def no_scan(monkeypatch) -> None:
    def refuse(self, shard):
        raise AssertionError(f"shard {shard} scanned although the index is listed")
    monkeypatch.setattr(MultiGranularBase, "_scan_table", refuse)


def test_index_written_and_listed(ds_root):
    ent = manifest(ds_root)["splits"]["train"]["index"]
    data = (ds_root / INDEX).read_bytes()
    assert ent == {"file": INDEX, "rows": 40, "bytes": len(data),
                   "sha256": hashlib.sha256(data).hexdigest()}
    t = pq.read_table(ds_root / INDEX)
    assert t.column_names == ["key", "shard", "row_group", "row", "class_index", "status",
                              "width", "height", "source_size", "source_sha256"]
    assert t.column("status").to_pylist().count("failed") == 4
    assert sorted(set(t.column("shard").to_pylist())) == [
        f"shards/train-0000{i}.parquet" for i in range(3)]
    assert manifest(ds_root)["format_version"] == "1.2"


@pytest.mark.parametrize("include_failed", [False, True])
def test_loader_over_index_equals_scan(ds_root, monkeypatch, include_failed):
    scan = ImageNetMultiGranular(ds_root, None, transform="eval", use_index=False,
                                 include_failed=include_failed)
    s_scan = ImageNetMultiGranularStream(ds_root, None, transform="eval", use_index=False,
                                         include_failed=include_failed)
    no_scan(monkeypatch)
    idx = ImageNetMultiGranular(ds_root, None, transform="eval", include_failed=include_failed)
    s_idx = ImageNetMultiGranularStream(ds_root, None, transform="eval",
                                        include_failed=include_failed)
    assert len(idx) == (40 if include_failed else 36) and idx.num_failed == scan.num_failed == 4
    assert idx.keys() == scan.keys()
    for a in ("_shard", "_group", "_offset", "labels"):
        assert np.array_equal(getattr(idx, a), getattr(scan, a)), a
    assert s_idx.units == s_scan.units and s_idx.num_failed == 4
    for i in (0, 17, len(idx) - 1):
        a, b = idx[i], scan[i]
        assert a["key"] == b["key"] and torch.equal(a["rgb"], b["rgb"])
        assert torch.equal(a["instance"], b["instance"])


def test_old_dataset_without_index_opens_and_manifest_adds_one(ds_root, monkeypatch, capsys):
    keys = ImageNetMultiGranular(ds_root, None, transform=None).keys()
    drop_index(ds_root)
    old = ImageNetMultiGranular(ds_root, None, transform=None)   # scans, as format 1.1 did
    assert old.index_entry is None and old.keys() == keys
    rep = verify(str(ds_root), workers=1)
    assert rep.ok and any("no index" in w for w in rep.warnings)
    assert main(["manifest", str(ds_root)]) == 0
    assert manifest(ds_root)["splits"]["train"]["index"]["rows"] == 40
    rep = verify(str(ds_root), workers=1)
    assert rep.ok and not rep.warnings
    no_scan(monkeypatch)
    assert ImageNetMultiGranular(ds_root, None, transform=None).keys() == keys


def test_missing_or_garbage_index(ds_root):
    (ds_root / INDEX).write_bytes(b"not parquet at all")
    rep = verify(str(ds_root), workers=1)
    assert not rep.ok and any(p.startswith(INDEX) for p in rep.problems), rep.text()
    with pytest.raises(FormatError, match=INDEX):
        ImageNetMultiGranular(ds_root, None)
    (ds_root / INDEX).unlink()
    rep = verify(str(ds_root), workers=1)
    assert any(f"{INDEX}: index missing" in p for p in rep.problems), rep.text()
    with pytest.raises(FormatError, match=f"{INDEX}: listed in the manifest but missing"):
        ImageNetMultiGranularStream(ds_root, None)


def test_index_disagreeing_with_shards(ds_root):
    """An index rewritten with one status flipped and listed with its new hash: only the
    comparison with the shards' columns can see it."""
    t = pq.read_table(ds_root / INDEX)
    status = t.column("status").to_pylist()
    status[0] = "failed"
    t = t.set_column(t.column_names.index("status"), "status", [status])
    pq.write_table(t, ds_root / INDEX)
    m = manifest(ds_root)
    data = (ds_root / INDEX).read_bytes()
    m["splits"]["train"]["index"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (ds_root / "manifest.json").write_text(json.dumps(m))
    rep = verify(str(ds_root), workers=1)
    assert [p for p in rep.problems if "train-00000.parquet differ" in p and INDEX in p], \
        rep.text()
    assert main(["manifest", str(ds_root)]) == 0   # rereads every shard: the index is right
    assert verify(str(ds_root), workers=1).ok


def test_index_not_matching_manifest_rows(ds_root):
    m = manifest(ds_root)
    e = m["splits"]["train"]["shards"][1]
    e["rows"] += 1
    (ds_root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FormatError, match=rf"{INDEX}: does not match the manifest at "
                                          rf"{e['file']}"):
        ImageNetMultiGranular(ds_root, None)


def test_rebuild_reuses_previous_index_for_unchanged_shards(ds_root, monkeypatch):
    """Entries without index rows (a pipeline's ledger) and an unchanged shard: no shard read."""
    known = [ShardInfo(**e) for e in manifest(ds_root)["splits"]["train"]["shards"]]
    before = (ds_root / INDEX).read_bytes()

    def refuse(*a):
        raise AssertionError("shard read although the previous index covers it")
    monkeypatch.setattr("c2fmae_data.format.manifest.read_shard_rows", refuse)
    build_manifest(str(ds_root), known=known)
    assert (ds_root / INDEX).read_bytes() == before


def test_open_over_http_reads_under_one_percent(tmp_path):
    root = tmp_path / "ds"
    synthetic_dataset(root, n=120, size=(128, 96), shards=4, failed=3)  # noise PNGs: ~4.6 MB
    shard_bytes = sum(p.stat().st_size for p in (root / "shards").glob("*.parquet"))
    local = ImageNetMultiGranular(root, None, transform="eval")
    with RangeServer(tmp_path) as srv:
        url = f"{srv.url}/ds"
        remote = ImageNetMultiGranular(url, None, transform="eval")
        opened = srv.bytes_sent
        assert not [r for r in srv.requests if "/shards/" in r[1]]
        assert opened <= 0.01 * shard_bytes, (opened, shard_bytes)
        srv.reset()
        ImageNetMultiGranularStream(url, None)
        assert srv.bytes_sent <= 0.01 * shard_bytes
        srv.reset()
        ImageNetMultiGranular(url, None, use_index=False)   # the scan: what 1.1 cost
        assert srv.bytes_sent > 0.5 * shard_bytes
        assert remote.keys() == local.keys()
        for i in (3, 60, len(local) - 1):
            a, b = remote[i], local[i]
            assert a["key"] == b["key"] and a["label"] == b["label"]
            for k in ("rgb", "instance", "semantic"):
                assert torch.equal(a[k], b[k]), k
