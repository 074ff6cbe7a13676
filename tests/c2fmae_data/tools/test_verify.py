"""verify passes on good data and names every kind of breakage (non-zero exit through the CLI)."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from c2fmae_data.cli import main
from c2fmae_data.format.schema import encode_instance_png
from c2fmae_data.format.manifest import build_manifest
from c2fmae_data.format.shards import write_shard
from c2fmae_data.tools.verify import verify
from tests._datasets import IMAGE, good_dataset, tiny_record

def broken_dataset(root, bad: dict) -> str:
    """A good dataset whose val shard holds ``bad`` (written without validation)."""
    root = good_dataset(root)
    write_shard(root, "val", 0, [tiny_record("val/a.JPEG"), bad], validate=False)
    build_manifest(root)
    return root


def problems(root, **kw) -> str:
    rep = verify(root, **kw)
    assert not rep.ok
    return "\n".join(rep.problems)


def test_good_dataset_passes_quick_and_full(tmp_path, capsys):
    root = good_dataset(tmp_path / "ds", images=str(tmp_path / "img"))
    for full in (False, True):
        rep = verify(root, full=full, imagenet_root=str(tmp_path / "img") if full else None)
        assert rep.ok, rep.problems
        assert rep.shards == 3 and rep.rows == 7 and not rep.warnings
    assert main(["verify", root, "--full"]) == 0
    assert "OK" in capsys.readouterr().out


def test_flipped_byte_is_found(tmp_path, capsys):
    root = good_dataset(tmp_path)
    p = tmp_path / "shards" / "train-00001.parquet"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    assert "shards/train-00001.parquet: sha256" in problems(root)
    assert main(["verify", root]) == 1
    assert "PROBLEM shards/train-00001.parquet" in capsys.readouterr().out


def test_truncated_and_missing_shards_all_reported(tmp_path):
    root = good_dataset(tmp_path)
    p = tmp_path / "shards" / "train-00000.parquet"
    p.write_bytes(p.read_bytes()[:200])
    os.remove(tmp_path / "shards" / "val-00000.parquet")
    text = problems(root)
    assert "train-00000.parquet: 200 bytes" in text and "unreadable Parquet" in text
    assert "shards/val-00000.parquet: missing" in text  # every problem, not only the first


def test_extra_shard_and_stray_temp_file(tmp_path):
    root = good_dataset(tmp_path)
    write_shard(root, "train", 7, [tiny_record("train/zz.JPEG")])  # not in the manifest
    (tmp_path / "shards" / "train-00002.parquet.tmp-abc").write_bytes(b"x")
    rep = verify(root)
    assert "shards/train-00007.parquet: shard not listed" in "\n".join(rep.problems)
    assert any("train-00002.parquet.tmp-abc" in w for w in rep.warnings)


def test_mask_of_wrong_size(tmp_path):
    bad = tiny_record("val/b.JPEG")
    bad["instance_png"] = encode_instance_png(np.zeros((6, 5), np.uint16))
    root = broken_dataset(tmp_path, bad)
    assert verify(root).ok  # quick mode does not decode masks
    assert "'val/b.JPEG': instance_png is 5x6, image is 8x6" in problems(root, full=True)


def test_semantic_class_id_200(tmp_path):
    bad = tiny_record("val/b.JPEG")
    sem = np.zeros((6, 8), np.uint8)
    sem[2, 3] = 200
    bad["semantic_png"] = cv2.imencode(".png", sem)[1].tobytes()
    root = broken_dataset(tmp_path, bad)
    assert "'val/b.JPEG': semantic class id 200 out of range" in problems(root, full=True)


def test_instance_id_not_in_metadata(tmp_path):
    bad = tiny_record("val/b.JPEG")
    ids = np.zeros((6, 8), np.uint16)
    ids[0:3, 0:4], ids[4:6, 6:8], ids[5, 0] = 1, 2, 3
    bad["instance_png"] = encode_instance_png(ids)
    root = broken_dataset(tmp_path, bad)
    assert "'val/b.JPEG': instance_png has id 3 but only 2 metadata rows" in \
        problems(root, full=True)


def test_duplicate_key_across_shards(tmp_path):
    root = good_dataset(tmp_path)
    write_shard(root, "val", 1, [tiny_record("train/n0/01.JPEG")])
    build_manifest(root)
    assert "duplicate key 'train/n0/01.JPEG' in shards/train-00000.parquet, " \
           "shards/val-00001.parquet" in problems(root)


def test_unsorted_shards_within_a_split(tmp_path):
    root = good_dataset(tmp_path)
    write_shard(root, "train", 2, [tiny_record("train/a0.JPEG")])  # sorts before shard 1's keys
    build_manifest(root)
    assert "train-00002.parquet: 'train/a0.JPEG': first key of the shard is not after" \
        in problems(root)


def test_imagenet_root_missing_file_and_hash_mismatch(tmp_path):
    img = tmp_path / "img"
    root = good_dataset(tmp_path / "ds", images=str(img))
    (img / "train/n0/01.JPEG").write_bytes(IMAGE[:-1] + b"X")  # same size, other bytes
    os.remove(img / "train/n0/12.JPEG")
    text = problems(root, imagenet_root=str(img))
    assert "'train/n0/01.JPEG': source image" in text and "sha256 does not match" in text
    assert "'train/n0/12.JPEG': source image" in text and "missing under --imagenet-root" in text


def test_manifest_problems_and_json_report(tmp_path, capsys):
    root = good_dataset(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    assert main(["verify", root, "--json"]) == 1
    import json

    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] is False and any("manifest lacks 'splits'" in p for p in rep["problems"])


@pytest.mark.parametrize("full", [False, True])
def test_real_coco_conversion_verifies(tmp_path, coco_panoptic_sample, full):
    from c2fmae_data.tools.coco import convert_coco

    d = coco_panoptic_sample / "sample_data"
    convert_coco(str(tmp_path), images_dir=str(d / "input_images"), split="val",
                 panoptic_json=str(d / "panoptic_examples.json"),
                 panoptic_png_dir=str(d / "panoptic_examples"), self_contained=True)
    rep = verify(str(tmp_path), full=full)
    assert rep.ok, rep.problems
