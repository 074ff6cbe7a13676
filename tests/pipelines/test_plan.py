"""The labeling plan without Ray: listing, deterministic shards, fingerprint, resume refusal."""
from __future__ import annotations

import pytest

from c2fmae_data.format.categories import imagenet_wnids
from c2fmae_data.format.schema import failed_record
from c2fmae_data.format.shards import write_shard
from pipelines import label_imagenet
from pipelines.plan import PlanError, batches, check_resumable, make_plan, parse_classes, save_plan

W = imagenet_wnids()


def _tree(root, counts):
    for wnid, n in counts.items():
        d = root / "train" / wnid
        d.mkdir(parents=True)
        for i in range(n):
            (d / f"{wnid}_{i}.JPEG").write_bytes(b"x")
    return root


@pytest.fixture
def tree(tmp_path):
    root = _tree(tmp_path / "in", {W[5]: 3, W[1]: 4, W[999]: 2})
    (root / "train" / "not_a_wnid").mkdir()
    (root / "train" / "not_a_wnid" / "a.JPEG").write_bytes(b"x")
    (root / "train" / W[1] / ".hidden").write_bytes(b"x")
    return root


def test_plan_is_sorted_sharded_and_filtered(tree):
    p = make_plan(str(tree), "train", shard_size=4, models="fake", precision="fp32")
    keys = [it.key for it in p.items]
    assert keys == sorted(keys) and len(keys) == 9            # hidden + unknown wnid ignored
    assert all(k.startswith("train/") and "not_a_wnid" not in k for k in keys)
    assert [len(s) for s in p.shards] == [4, 4, 1]
    assert [it.key for s in p.shards for it in s] == keys      # shard N = keys[4N:4N+4]
    assert {it.class_index for it in p.items} == {1, 5, 999}
    assert all(W[it.class_index] == it.wnid for it in p.items)

    sub = make_plan(str(tree), "train", shard_size=4, models="fake", precision="fp32",
                    classes=parse_classes(f"{W[999]},5"), limit=3)
    assert [it.key for it in sub.items] == [k for k in keys if W[1] not in k][:3]
    assert [[it.key for it in b] for b in batches(p.shards[0], 3)] == [keys[:3], [keys[3]]]


def test_fingerprint_depends_on_every_plan_argument(tree):
    base = dict(shard_size=4, models="fake", precision="fp32")
    fp = make_plan(str(tree), "train", **base).fingerprint
    assert make_plan(str(tree), "train", **base).fingerprint == fp
    for change in ({"shard_size": 5}, {"models": "tiny-random"}, {"precision": "fp16"},
                   {"limit": 8}, {"classes": [W[1]]}):
        assert make_plan(str(tree), "train", **{**base, **change}).fingerprint != fp, change
    (tree / "train" / W[1] / "new.JPEG").write_bytes(b"x")   # the listing itself changed
    assert make_plan(str(tree), "train", **base).fingerprint != fp


def test_bad_arguments_are_named(tree):
    with pytest.raises(PlanError, match="n99999999"):
        parse_classes("n99999999")
    with pytest.raises(PlanError, match="1000"):
        parse_classes("1000")
    with pytest.raises(PlanError, match="'val'"):
        make_plan(str(tree), "val", shard_size=4, models="fake", precision="fp32")
    with pytest.raises(PlanError, match="no images"):
        make_plan(str(tree), "train", shard_size=4, models="fake", precision="fp32",
                  classes=[W[2]])
    with pytest.raises(PlanError, match="shard-size"):
        make_plan(str(tree), "train", shard_size=0, models="fake", precision="fp32")


def test_resume_with_other_arguments_is_refused(tree, tmp_path, capsys):
    out = str(tmp_path / "out")
    p = make_plan(str(tree), "train", shard_size=4, models="fake", precision="fp32")
    save_plan(out, p, {})
    rec = failed_record(p.items[0].key, "x", wnid=p.items[0].wnid)
    write_shard(out, "train", 0, [rec], meta={"plan": {"fingerprint": p.fingerprint}})
    assert check_resumable(out, p) == [0]

    other = make_plan(str(tree), "train", shard_size=4, models="fake", precision="fp32", limit=5)
    with pytest.raises(PlanError, match="different plan.*images"):
        check_resumable(out, other)
    # the CLI refuses before starting Ray, with the same message and exit code 2
    rc = label_imagenet.main(["--imagenet-root", str(tree), "--out", out, "--models", "fake",
                              "--shard-size", "4", "--limit", "5"])
    assert rc == 2 and "different plan" in capsys.readouterr().err
    # a stray shard of another plan is refused even without a plan file
    (tmp_path / "out" / "_pipeline" / "plan-train.json").unlink()
    write_shard(out, "train", 1, [rec], meta={"plan": {"fingerprint": "0" * 64}})
    with pytest.raises(PlanError, match="train-00001.parquet was written by a different plan"):
        check_resumable(out, p)
    assert (tmp_path / "out" / "shards" / "train-00000.parquet").exists()
