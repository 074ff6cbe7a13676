"""Quick probes: DINO's weighted k-NN by hand, class balancing, probes on separable features."""
from __future__ import annotations

import math

import timm
import torch

from model.finetuning.data import ImageFolderSplit, eval_transform
from model.pretraining.probes import class_balanced_indices, knn_classify, run_probes


def test_knn_weighted_vote_by_hand():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 1])
    q = torch.tensor([[2.0, 0.2]])
    votes = knn_classify(train, y, q, num_classes=2, k=2, T=0.5)
    qn = q / q.norm()
    sims = [float(qn @ (t / t.norm())) for t in train]  # 0.995, 0.0995, 0.7739 -> keep 0 and 2
    expect0, expect1 = math.exp(sims[0] / 0.5), math.exp(sims[2] / 0.5)
    torch.testing.assert_close(votes, torch.tensor([[expect0, expect1]]))


def test_class_balanced_indices():
    labels = [0] * 10 + [1] * 3 + [2] * 7
    idx = class_balanced_indices(labels, per_class=4, seed=1)
    counts = [sum(labels[i] == c for i in idx) for c in range(3)]
    assert counts == [4, 3, 4] and len(set(idx)) == len(idx)
    assert idx == class_balanced_indices(labels, per_class=4, seed=1)
    assert {labels[i] for i in class_balanced_indices(labels, 2, max_classes=2)} == {0, 1}


class Blobs(torch.utils.data.Dataset):
    """Gaussian clusters as 'images'; label = cluster. Exposes ``labels`` like the loaders."""

    def __init__(self, n_per, classes=4, seed=0, spread=0.3):
        g = torch.Generator().manual_seed(seed)
        centers = torch.randn(classes, 16, generator=torch.Generator().manual_seed(99)) * 3
        self.labels = [c for c in range(classes) for _ in range(n_per)]
        self.x = centers[self.labels] + spread * torch.randn(len(self.labels), 16, generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"rgb": self.x[i], "label": self.labels[i]}


def test_probes_separate_clusters_and_not_noise():
    train, val = Blobs(12), Blobs(5, seed=1)
    res = run_probes(lambda b: b["rgb"], train, val, per_class=8, linear_epochs=50)
    assert res["knn_top1"] == 100.0 and res["linear_top1"] == 100.0
    assert (res["num_train"], res["num_val"], res["num_classes"]) == (32, 20, 4)
    noise = run_probes(lambda b: torch.randn(len(b["label"]), 16), train, val, per_class=8,
                       linear_epochs=50)
    assert noise["knn_top1"] < 75.0  # random features cannot carry the labels


def test_probes_on_real_images_with_a_frozen_vit(imagenet_sample):
    ds = ImageFolderSplit(str(imagenet_sample / "train"), transform=eval_transform(32), limit=20)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, img_size=32,
                            global_pool="avg", embed_dim=32, depth=1, num_heads=2).eval()
    res = run_probes(lambda b: vit(b["rgb"]), ds, ds, per_class=1, num_classes=1000,
                     linear_epochs=5)
    # val == train: each image's nearest neighbour is itself -> k-NN with k=1 is exact
    assert res["num_train"] == 20 and res["feature_dim"] == 32
    exact = run_probes(lambda b: vit(b["rgb"]), ds, ds, per_class=1, k=1, linear_epochs=1)
    assert exact["knn_top1"] == 100.0
    assert 0.0 <= res["linear_top1"] <= 100.0
