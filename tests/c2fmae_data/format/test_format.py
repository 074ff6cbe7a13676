"""The format contract: categories, PNG codecs, record checks, atomic shard writer, manifest."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from c2fmae_data.format import categories as C
from c2fmae_data.format.schema import (COLUMNS, FormatError, check_record, decode_instance_png,
                                decode_semantic_png, encode_instance_png, encode_semantic_png,
                                failed_record)
from c2fmae_data.format.manifest import (MANIFEST, build_manifest, load_manifest, manifest_problems,
                                  safe_relpath)
from c2fmae_data.format.fs import open_fs
from c2fmae_data.format.shards import ROW_GROUP_SIZE, TMP_MARK, iter_shard, list_shards, write_shard
from tests._datasets import tiny_record


# ----------------------------------------------------------------------------- categories
def test_categories_match_official_panoptic_file(coco_panoptic_sample):
    official = json.loads((coco_panoptic_sample / "panoptic_coco_categories.json").read_text())
    assert len(official) == C.NUM_SEMANTIC_CLASSES == len(C.COCO_PANOPTIC_CATEGORIES)
    for i, (o, ours) in enumerate(zip(official, C.COCO_PANOPTIC_CATEGORIES)):
        assert (ours[0], ours[1], ours[2], tuple(ours[3])) == \
            (o["id"], o["name"], o["isthing"], tuple(o["color"])), i
        assert C.COCO_ID_TO_INDEX[o["id"]] == i
    pal = C.semantic_palette()
    assert pal[5] == tuple(official[5]["color"]) and pal[C.SEMANTIC_IGNORE] == (0, 0, 0)
    assert sum(C.COCO_PANOPTIC_ISTHING) == 80


def test_imagenet_order_is_timm():
    wnids = C.imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    assert C.imagenet_wnid_to_index()["n01443537"] == 1


# ----------------------------------------------------------------------------- codecs
def test_png_codecs_round_trip_bit_depths():
    ids = np.arange(300 * 4, dtype=np.uint16).reshape(30, 40) % 1000  # ids above 255 survive
    assert np.array_equal(decode_instance_png(encode_instance_png(ids)), ids)
    sem = np.full((5, 7), 255, np.uint8)
    sem[1, 2] = 132
    out = decode_semantic_png(encode_semantic_png(sem))
    assert out.dtype == np.uint8 and np.array_equal(out, sem)
    with pytest.raises(FormatError, match="200"):
        encode_semantic_png(np.full((2, 2), 200, np.uint8))
    with pytest.raises(FormatError):  # a 16-bit map is not a semantic PNG
        decode_semantic_png(encode_instance_png(ids))


def test_check_record_finds_each_problem():
    assert check_record(tiny_record("train/a.JPEG")) == []
    r = tiny_record("train/a.JPEG")
    r["width"] = 9  # masks are 8 wide
    assert any("image is 9x6" in p for p in check_record(r))
    r = tiny_record("train/a.JPEG")
    r["instances"][0]["area"] = 11
    assert any("area 11 != 12" in p for p in check_record(r))
    assert check_record(tiny_record("../etc/passwd")) == ["invalid key '../etc/passwd'"]
    assert check_record(failed_record("train/b.JPEG", "decode error")) == []


# ----------------------------------------------------------------------------- shards
def test_writer_is_atomic_sorted_and_streams_row_groups(tmp_path):
    recs = [tiny_record(f"train/n0/{i:04d}.JPEG") for i in range(ROW_GROUP_SIZE * 2 + 5)][::-1]
    info = write_shard(str(tmp_path), "train", 0, recs)
    files = os.listdir(tmp_path / "shards")
    assert files == ["train-00000.parquet"] and not any(TMP_MARK in f for f in files)
    path = tmp_path / info.file
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.rows == len(recs) and info.instances == 2 * len(recs)
    assert pq.ParquetFile(path).num_row_groups == 3
    fs, p = open_fs(str(path))
    keys = [r["key"] for r in iter_shard(fs, p, ["key"])]
    assert keys == sorted(keys) and info.first_key == keys[0] and info.last_key == keys[-1]


def test_writer_crash_leaves_no_final_file(tmp_path, monkeypatch):
    import fsspec.implementations.local as local

    def boom(self, *a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(local.LocalFileSystem, "mv", boom)
    with pytest.raises(OSError):
        write_shard(str(tmp_path), "train", 0, [tiny_record("train/a.JPEG")])
    assert list_shards(str(tmp_path)) == []


def test_writer_refuses_invalid_records_naming_the_key(tmp_path):
    bad = tiny_record("train/n0/bad.JPEG")
    bad["num_instances"] = 5
    with pytest.raises(FormatError, match="train/n0/bad.JPEG"):
        write_shard(str(tmp_path), "train", 0, [tiny_record("train/n0/good.JPEG"), bad])
    with pytest.raises(FormatError, match="duplicate key 'train/x'"):
        write_shard(str(tmp_path), "train", 0, [tiny_record("train/x"), tiny_record("train/x")])
    assert not (tmp_path / "shards").exists() or list_shards(str(tmp_path)) == []


# ----------------------------------------------------------------------------- manifest
def test_manifest_rebuilt_from_shards(tmp_path):
    root = str(tmp_path)
    prov = {"labeler": "test", "thresholds": [0.3]}
    infos = [write_shard(root, "train", i, [tiny_record(f"train/{i}/{j}") for j in range(3)],
                         meta={"provenance": prov}) for i in range(2)]
    infos.append(write_shard(root, "val", 0, [failed_record("val/z", "unreadable")]))
    m = build_manifest(root, known=infos)
    assert m["splits"]["train"]["rows"] == 6 and m["totals"]["failed"] == 1
    assert m["provenance"] == prov and len(m["classes"]["semantic"]["names"]) == 133
    os.remove(tmp_path / MANIFEST)
    rebuilt = build_manifest(root)  # nothing known: hashes recomputed from the files
    assert rebuilt["splits"] == m["splits"] and rebuilt["totals"] == m["totals"]
    e = rebuilt["splits"]["train"]["shards"][1]
    assert e["sha256"] == hashlib.sha256((tmp_path / e["file"]).read_bytes()).hexdigest()
    assert load_manifest(root)["splits"]["val"]["shards"][0]["file"] == "shards/val-00000.parquet"


def test_manifest_schema_and_unsafe_paths():
    for bad in ("../x.parquet", "/abs/x.parquet", "http://h/x.parquet", "shards/../../x",
                "C:/x", ""):
        with pytest.raises(FormatError):
            safe_relpath(bad)
    assert safe_relpath("shards/train-00000.parquet") == "shards/train-00000.parquet"
    m = {"format": "c2fmae-multigranular", "format_version": "2.0", "splits": {
        "train": {"shards": [{"file": "../train-00000.parquet", "rows": 1}]}}}
    probs = "\n".join(manifest_problems(m))
    for needle in ("'classes'", "format_version '2.0'", "escape"):
        assert needle in probs
    assert set(COLUMNS) >= {"key", "source_sha256", "instance_png", "semantic_png", "image_bytes"}


def test_writer_refuses_keys_the_reader_could_never_read():
    for key in ("a//b.JPEG", "./a.JPEG", "train/../x.JPEG", "s3:/x.JPEG", "a\\b.JPEG"):
        assert check_record({"key": key}) == [f"invalid key {key!r}"], key
