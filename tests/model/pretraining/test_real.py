"""On the real ImageNet sample images (through the loader): a tiny model's loss falls, and the
reconstruction panels of Figs. 4-6 are written."""
from __future__ import annotations

import numpy as np
import pytest
from tests._datasets import imagenet_sample_dataset
from tests._pretrain import read_log, read_probes, tiny_config
from PIL import Image

from c2fmae_data.format.categories import semantic_palette
from model.pretraining.panels import HEADER
from model.pretrain import train


@pytest.fixture(scope="module")
def real_root(tmp_path_factory, imagenet_sample):
    root = tmp_path_factory.mktemp("real")
    imagenet_sample_dataset(root, imagenet_sample, limit=8, shards=1)
    return str(root), str(imagenet_sample)


def test_tiny_model_loss_falls_on_real_images_and_panels_are_written(real_root, tmp_path):
    root, images = real_root
    out = tmp_path / "run"
    # 8 real images, one batch of 8 per step, 12 steps = 12 epochs; panels at the end
    cfg = tiny_config(root, f"data.imagenet_root={images}", "optim.epochs=12",
                      "optim.warmup_epochs=2", "optim.lr=3e-3", "train.panels_every_epochs=12",
                      "train.panel_images=3", "train.save_last_every_steps=0",
                      "data.crop_scale=[0.6, 1.0]", steps=12, batch=8, total=8)
    train(cfg, str(out), resume=None)
    log = read_log(out)
    first = np.mean([log[s]["loss"] for s in (1, 2, 3)])
    last = np.mean([log[s]["loss"] for s in (10, 11, 12)])
    assert last < 0.9 * first, (first, last)
    for task in ("semantic", "instance", "rgb"):
        assert np.mean([log[s]["losses"][task] for s in (10, 11, 12)]) < \
            np.mean([log[s]["losses"][task] for s in (1, 2, 3)]), task

    panels = sorted(p.name for p in (out / "panels").iterdir())
    assert panels == [f"{n}_epoch0012-step12.png" for n in
                      ("fig4", "fig5_from_rgb", "fig6_from_instance", "fig6_from_semantic")]
    s = 128  # 64-px images drawn as 128-px tiles (MIN_TILE)
    fig4 = np.asarray(Image.open(out / "panels" / panels[0]))
    assert fig4.shape == (HEADER + 3 * s, 9 * s, 3)  # 3 images x (masked|pred|target) x 3 maps
    # the semantic target column is drawn in the COCO-panoptic palette (or black = unlabeled)
    target = fig4[HEADER:, 2 * s:3 * s].reshape(-1, 3)
    allowed = {tuple(c) for c in semantic_palette()} | {(0, 0, 0)}
    assert {tuple(c) for c in np.unique(target, axis=0)} <= allowed
    # its masked-input column shows grey (masked) patches
    assert (fig4[HEADER:, :s] == 128).all(-1).any()
    cross = np.asarray(Image.open(out / "panels" / panels[1]))
    assert cross.shape == (HEADER + 3 * s, 5 * s, 3)  # input | 2 other maps x (pred|target)


def test_probes_run_every_n_epochs_on_a_disjoint_holdout(tmp_path, imagenet_sample):
    """k-NN / linear probes from inside the pretraining loop: with no val split, a class-balanced
    holdout of the train split, disjoint from the probe's train set."""
    from model.pretraining.probes import holdout_split

    from tests._datasets import blob_masks, record, write_dataset

    from c2fmae_data.loading.source import decode_rgb

    # 6 real images, self-contained, relabeled into 3 classes of 2 images each
    root = tmp_path / "ds"
    files = sorted(imagenet_sample.glob("train/*/*.JPEG"))[:6]
    recs = []
    for i, f in enumerate(files):
        data = f.read_bytes()
        w, h = decode_rgb(data).size
        inst, sem = blob_masks(w, h, n=3, seed=i)
        recs.append(record(f"train/x/{i}.JPEG", data, inst, sem, wnid=files[i // 2 * 2].parent.name))
    write_dataset(root, recs, "train", 1, self_contained=True)
    cfg = tiny_config(str(root), "optim.epochs=2",
                      "optim.warmup_epochs=0", "train.panels_every_epochs=0",
                      "train.probe_every_epochs=1", "train.probe_per_class=1",
                      "train.save_last_every_steps=0", steps=2, batch=6, total=6)
    from model.pretrain import build_probe_sets

    tr, va = build_probe_sets(cfg)
    assert set(tr.indices).isdisjoint(va.indices)
    train(cfg, str(tmp_path / "run"), resume=None)
    probes = read_probes(tmp_path / "run")
    assert [p["epoch"] for p in probes] == [1, 2]
    for p in probes:
        r = p["probe"]
        assert 0.0 <= r["knn_top1"] <= 100.0 and r["num_val"] == len(va) and r["k"] == 20

    labels = [0, 0, 0, 1, 1, 2, -1]
    ds = type("L", (), {"labels": labels, "__len__": lambda self: len(labels)})()
    a, b = holdout_split(ds, per_class=1)
    picked = sorted(a.indices + b.indices)                          # 2 per class, never -1
    assert len(picked) == 5 and set(picked) >= {3, 4, 5} and set(picked) <= {0, 1, 2, 3, 4, 5}
    assert set(a.indices).isdisjoint(b.indices)
    assert a.labels == [0, 1, 2] and b.labels == [0, 1]           # class 2 has one image: train
