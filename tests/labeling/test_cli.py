"""`c2fmae-data label` and `pipelines/label_imagenet.py` behave alike: one listing rule, keys
relative to the ImageNet root, one exit rule for failed rows, progress, a sensible rerun message,
arguments checked before Ray starts, help text for every option (fake models, generated images)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from c2fmae_data.format.categories import imagenet_wnids
from c2fmae_data.format.fs import open_fs
from c2fmae_data.format.shards import iter_shard, list_shards
from labeling import cli as label_cli
from labeling import listing
from pipelines import label_imagenet
from pipelines.plan import make_plan

W = imagenet_wnids()


def _tree(tmp_path, counts=None, junk=True):
    """<tmp>/inet/train/<wnid>/*.JPEG plus a notes.txt, a hidden file and a non-wnid folder."""
    root = tmp_path / "inet"
    for c, n in (counts or {0: 2, 3: 1}).items():
        d = root / "train" / W[c]
        d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((12, 16, 3), 30 * i, np.uint8)).save(d / f"im{i}.JPEG")
    if junk:
        (root / "train" / W[0] / "notes.txt").write_text("my notes")
        (root / "train" / W[0] / ".DS_Store").write_bytes(b"x")
        (root / "train" / "extras").mkdir()
        (root / "train" / "extras" / "a.JPEG").write_bytes(b"x")
    return root


def _keys(out):
    fs, base = open_fs(str(out))
    return [r["key"] for rel in list_shards(str(out))
            for r in iter_shard(fs, f"{base}/{rel}", ["key"])]


def _label(*argv):
    ap = argparse.ArgumentParser()
    label_cli.register_label(ap.add_subparsers(dest="cmd"))
    args = ap.parse_args(["label", "--models", "fake", *map(str, argv)])
    return args.func(args)


def test_cli_and_pipeline_list_the_same_images(tmp_path, capsys):
    root = _tree(tmp_path)
    plan = make_plan(str(root), "train", shard_size=10, models="fake", precision="fp32")
    assert _label("--images", root, "--out", tmp_path / "out", "--no-progress") == 0
    want = [f"train/{W[0]}/im0.JPEG", f"train/{W[0]}/im1.JPEG", f"train/{W[3]}/im0.JPEG"]
    assert [it.key for it in plan.items] == _keys(tmp_path / "out") == want
    # what was left out is said, by both
    assert any(f"train/{W[0]}/notes.txt" in n for n in plan.notes)
    assert any("train/extras" in n for n in plan.notes)
    assert f"train/{W[0]}/notes.txt" in capsys.readouterr().err


def test_split_folder_gives_keys_relative_to_the_imagenet_root(tmp_path, capsys):
    root = _tree(tmp_path, junk=False)
    assert _label("--images", root / "train", "--out", tmp_path / "out", "--no-progress") == 0
    assert _keys(tmp_path / "out") == [f"train/{W[0]}/im0.JPEG", f"train/{W[0]}/im1.JPEG",
                                       f"train/{W[3]}/im0.JPEG"]
    # a class folder, or a folder of class folders not named like the split: refused, one line
    capsys.readouterr()
    assert _label("--images", root / "train" / W[0], "--out", tmp_path / "o2") == 2
    assert _label("--images", root / "train", "--split", "val", "--out", tmp_path / "o3") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: --images") for e in err)
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_failed_rows_exit_1_unless_allowed_and_rerun_says_nothing_to_label(tmp_path, capsys):
    root = _tree(tmp_path, junk=False)
    (root / "train" / W[3] / "broken.JPEG").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert _label("--images", root, "--out", out) == 1           # a failed row: like convert-coco
    cap = capsys.readouterr()
    assert "labeling train" in cap.err and "img" in cap.err      # the tqdm bar
    assert "3 ok, 1 failed" in cap.out and "--allow-failed" in cap.out
    assert _label("--images", root, "--out", out, "--allow-failed", "--no-progress") == 0
    line = capsys.readouterr().out
    assert line.startswith("nothing to label: all 1 planned shard(s) already finished")
    assert "4 images in 1 shard(s): 3 ok, 1 failed" in line      # the split's totals, not 0/0
    assert _label("--images", root, "--out", out, "--no-progress") == 1   # the rule holds on rerun


def test_limit_stops_listing_at_the_class_folder_that_fills_it(tmp_path, monkeypatch):
    root = _tree(tmp_path, {0: 3, 1: 3, 2: 3}, junk=False)
    full = [it.key for it in listing.list_imagenet(str(root), "train").items]
    seen = []
    real = listing._entries
    monkeypatch.setattr(listing, "_entries", lambda fs, p: seen.append(p) or real(fs, p))
    plan = make_plan(str(root), "train", shard_size=2, models="fake", precision="fp32", limit=4)
    assert [it.key for it in plan.items] == full[:4]
    listed = {p.rstrip("/").rsplit("/", 1)[-1] for p in seen}
    assert listed == {"train", W[0], W[1]}                      # W[2] was never listed


@pytest.mark.parametrize("bad, flag", [(["--models", "nonsense"], "--models"),
                                       (["--models", "fake:abc"], "--models"),
                                       (["--batch-size", "0"], "--batch-size"),
                                       (["--workers", "0"], "--workers")])
def test_pipeline_checks_arguments_before_ray(tmp_path, monkeypatch, capsys, bad, flag):
    def no_ray(args):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(label_imagenet, "init_ray", no_ray)
    root = _tree(tmp_path, junk=False)
    rc = label_imagenet.main(["--imagenet-root", str(root), "--out", str(tmp_path / "out"),
                              "--no-progress", *bad])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {flag}"), err
    assert not (tmp_path / "out").exists()


def _options(parser: argparse.ArgumentParser):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                yield from _options(sub)
        elif a.option_strings and a.dest != "help":
            yield parser, a


def _parsers():
    ap = argparse.ArgumentParser()
    sp = ap.add_subparsers()
    for reg in (label_cli.register_label, label_cli.register_weights,
                label_cli.register_import_semantic):
        reg(sp)
    return [ap, label_imagenet.build_parser()]


def test_every_option_says_what_it_does_and_its_default_once():
    n = 0
    for top in _parsers():
        for parser, a in _options(top):
            text = parser._get_formatter()._expand_help(a) if a.help else ""
            name = a.option_strings[-1]
            assert len(text) > 10, f"{parser.prog} {name} has no help"
            if a.default not in (None, False):
                assert text.count("default:") == 1, f"{parser.prog} {name}: {text!r}"
            else:
                assert text.count("default:") <= 1, f"{parser.prog} {name}: {text!r}"
            n += 1
    assert n > 35


def test_bad_semantic_size_is_one_line_before_any_model_loads(tmp_path, capsys):
    root = _tree(tmp_path, junk=False)
    assert _label("--images", root, "--out", tmp_path / "out", "--semantic-size", "huge") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--semantic-size" in err[0] and "SHORT,LONG" in err[0]
    assert not (tmp_path / "out").exists()
