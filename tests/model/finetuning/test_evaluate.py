"""Robustness evaluation: timm's A/R subsets, mCE and the summary score by hand, folder layouts."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from c2fmae_data.format.categories import imagenet_wnids
from model.evaluate import evaluate_benchmark, main as evaluate_main
from model.finetuning.classifier import create_classifier, save_finetuned
from model.finetuning.robustness import (ALEXNET_ERR, CORRUPTIONS, class_subset, mce,
                                         robustness_score)

INFO = os.path.join(os.path.dirname(timm.data.__file__), "_info")


class ConstLogits(torch.nn.Module):
    """Predicts ImageNet index ``j`` for every image (other classes ranked by distance to j)."""

    def __init__(self, j: int):
        super().__init__()
        self.j, self.dummy = j, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        s = -(torch.arange(1000, dtype=torch.float32) - self.j).abs()
        return s.expand(x.shape[0], 1000) + 0 * self.dummy


def put_images(folder, n=1, ext=".JPEG", size=8):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            os.path.join(folder, f"img{i}{ext}"))


@pytest.mark.parametrize("bench", ["imagenet-a", "imagenet-r"])
def test_class_subsets_are_timms_files(bench):
    short = bench.replace("-", "_")
    idx = [int(x) for x in open(os.path.join(INFO, f"{short}_indices.txt")).read().split()]
    syn = open(os.path.join(INFO, f"{short}_synsets.txt")).read().split()
    got_idx, got_syn = class_subset(bench)
    assert list(got_idx) == idx and list(got_syn) == syn and len(idx) == 200
    assert [imagenet_wnids()[i] for i in idx] == syn


def test_mce_by_hand():
    acc = {c: {s: 100.0 for s in range(1, 6)} for c in CORRUPTIONS}
    acc["brightness"] = {1: 90.0, 2: 80.0, 3: 70.0, 4: 60.0, 5: 50.0}
    res = mce(acc)
    # errors 10+20+30+40+50 = 150 -> CE = 150 / (5 x 56.4592) = 53.1357 %; others 0; mean of 15
    assert res["ce"]["brightness"] == pytest.approx(53.13571570, rel=1e-8)
    assert res["ce"]["fog"] == 0.0
    assert res["mce"] == pytest.approx(3.54238104, rel=1e-8)
    assert ALEXNET_ERR["gaussian_noise"] == 0.886428 and ALEXNET_ERR["jpeg_compression"] == 0.6065
    del acc["snow"]
    with pytest.raises(ValueError, match="snow"):
        mce(acc)


def test_robustness_score_by_hand():
    assert robustness_score(10.0, 40.0, 30.0, 60.0) == pytest.approx((10 + 40 + 30 + 40) / 4)


def test_imagenet_a_layout_maps_through_subset(tmp_path):
    idx, wnids = class_subset("imagenet-a")
    for w in wnids:  # the distributed layout: 200 wnid folders of .jpg
        put_images(tmp_path / "a" / w, ext=".jpg")
    res = evaluate_benchmark(ConstLogits(idx[7]), "imagenet-a", str(tmp_path / "a"), img_size=32,
                             device=torch.device("cpu"), workers=0)
    assert res["num_images"] == 200 and res["num_classes"] == 200
    assert res["top1"] == pytest.approx(100 / 200)  # only the folder of class idx[7] is right
    # a class outside the subset is never predicted, the nearest subset classes are
    res = evaluate_benchmark(ConstLogits(idx[7] + 1), "imagenet-a", str(tmp_path / "a"),
                             img_size=32, device=torch.device("cpu"), workers=0)
    assert res["top5"] > 0
    put_images(tmp_path / "a" / "n99999999", ext=".jpg")
    with pytest.raises(ValueError, match="n99999999"):
        evaluate_benchmark(ConstLogits(0), "imagenet-a", str(tmp_path / "a"), img_size=32,
                           device=torch.device("cpu"), workers=0)


def test_imagenet_c_layout_mce(tmp_path):
    wn = imagenet_wnids()
    j = 3
    for c in CORRUPTIONS:  # <corruption>/<severity>/<wnid>/*.JPEG
        for s in range(1, 6):
            put_images(tmp_path / "c" / c / str(s) / wn[j])
            if c != "fog":
                put_images(tmp_path / "c" / c / str(s) / wn[500])
    res = evaluate_benchmark(ConstLogits(j), "imagenet-c", str(tmp_path / "c"), img_size=32,
                             device=torch.device("cpu"), workers=0)
    assert res["top1"]["fog"]["3"] == 100.0 and res["top1"]["snow"]["5"] == 50.0
    # CE_c = 50 / alexnet_c for the 14 half-right corruptions, 0 for fog; mean over 15
    assert res["ce"]["snow"] == pytest.approx(50 / 0.866816)
    assert res["mce"] == pytest.approx(60.60417840, rel=1e-8)


def test_cli_writes_each_benchmark_and_the_summary(tmp_path):
    model = create_classifier(None, 1000, 32, 0.0, "vit_base_patch16_224",
                              {"embed_dim": 32, "depth": 1, "num_heads": 2})
    ck = str(tmp_path / "ft" / "checkpoint.pth")
    save_finetuned(ck, model, {"epoch": 0})
    wn = imagenet_wnids()
    for b in ("imagenet-a", "imagenet-r"):
        for w in class_subset(b)[1][:3]:
            put_images(tmp_path / b / w, ext=".jpg")
    for w in wn[:4]:
        put_images(tmp_path / "sketch" / w, n=2)
    for c in CORRUPTIONS:
        for s in range(1, 6):
            put_images(tmp_path / "c" / c / str(s) / wn[s])
    roots = {"imagenet-a": "imagenet-a", "imagenet-r": "imagenet-r",
             "imagenet-sketch": "sketch", "imagenet-c": "c"}
    got = {}
    for b, d in roots.items():
        got[b] = evaluate_main(["--checkpoint", ck, "--benchmark", b, "--root",
                                str(tmp_path / d), "--num-workers", "0", "--batch-size", "16"])
        saved = json.loads(open(ck[:-4] + f"_{b}.json").read())
        assert saved["num_images"] == got[b]["num_images"] > 0
    assert got["imagenet-sketch"]["num_images"] == 8
    summary = json.loads(open(ck[:-4] + "_robustness.json").read())
    expect = robustness_score(got["imagenet-a"]["top1"], got["imagenet-r"]["top1"],
                              got["imagenet-sketch"]["top1"], got["imagenet-c"]["mce"])
    assert summary["score"] == pytest.approx(expect)
