"""The tiny-random preset (real transformers classes, random weights) on real ImageNet images,
and the `c2fmae-data label` command end to end."""
import warnings

import numpy as np
import pytest

from c2fmae_data.format.categories import imagenet_wnid_to_index
from c2fmae_data.format.schema import check_record, decode_instance_png
from c2fmae_data.format.manifest import load_manifest
from labeling.folder import list_images, read_item
from labeling.labeler import Labeler

N = 6


@pytest.fixture(scope="module")
def tiny():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        lab = Labeler.from_preset("tiny-random")
    assert any("PLACEHOLDER" in str(x.message) for x in w)
    return lab


@pytest.fixture(scope="module")
def items(imagenet_sample):
    keys = list_images(str(imagenet_sample))
    assert len(keys) == 100
    return [read_item(str(imagenet_sample), k, w) for k, w in keys[::100 // N]]


def test_records_complete_and_deterministic(tiny, items):
    recs = tiny.label_items(items)
    again = tiny.label([tiny.prepare(it) for it in items[::-1]])[::-1]   # other batch order
    assert [r["key"] for r in recs] == [it.key for it in items]
    for r, it in zip(recs, items):
        assert r["status"] == "ok" and check_record(r) == []
        assert r["class_index"] == imagenet_wnid_to_index()[it.wnid]
        ids = decode_instance_png(r["instance_png"])
        assert ids.shape == (r["height"], r["width"])
        assert r["num_instances"] == int(ids.max()) >= 1
        for m in r["instances"]:
            x0, y0, x1, y1 = m["box"]
            assert 0 <= x0 <= x1 <= r["width"] and 0 <= y0 <= y1 <= r["height"]
            assert m["phrase"]
    for a, b in zip(recs, again):
        assert a == b


def test_provenance(tiny):
    p = tiny.provenance()
    assert p["preset"] == "tiny-random" and p["placeholder_labels"] is True
    assert p["models"]["detector"]["kind"] == "grounding-dino"
    assert p["thresholds"]["floor"] == 0.0


def test_label_command_writes_verified_shards(imagenet_sample, tmp_path, capsys):
    from c2fmae_data.cli import main

    out = tmp_path / "ds"
    rc = main(["label", "--images", str(imagenet_sample), "--out", str(out), "--models",
               "tiny-random", "--limit", "5", "--shard-size", "3", "--batch-size", "2"])
    assert rc == 0
    assert "PLACEHOLDER" in capsys.readouterr().err
    m = load_manifest(str(out))
    assert m["totals"]["rows"] == 5 and m["totals"]["ok"] == 5
    assert len(m["splits"]["train"]["shards"]) == 2
    assert m["provenance"]["preset"] == "tiny-random"
    assert main(["verify", str(out)]) == 0
    # rerun keeps finished shards (resume) and bad arguments give a clear error code
    assert main(["label", "--images", str(imagenet_sample), "--out", str(out), "--models",
                 "tiny-random", "--limit", "5", "--shard-size", "3"]) == 0
    assert "nothing to label: all 2 planned shard(s) already finished" in capsys.readouterr().out
    assert main(["label", "--images", str(tmp_path), "--out", str(out), "--models", "fake"]) == 2
    assert main(["label", "--images", str(imagenet_sample), "--out", str(out),
                 "--models", "nope"]) == 2
