"""Quick probes of a frozen encoder: k-NN (k=20, cosine) and a linear probe.

Meant to run every N pretraining epochs on a small class-balanced subset, so representation
quality shows long before a 100-epoch fine-tune:

    from model.pretraining.probes import run_probes
    res = run_probes(lambda b: model.rgb_features(b["rgb"]), train_ds, val_ds, per_class=10)
    # {"knn_top1": .., "knn_top5": .., "linear_top1": .., "linear_top5": .., ...}

``encoder_features_fn(batch) -> B x D`` receives a collated batch as a dict with at least ``rgb``
and ``label`` (samples of ``ImageNetMultiGranular`` are such dicts; ``(image, label)`` tuples are
turned into one), so the same probes serve RGB-only and multi-granular features.

k-NN follows DINO (Caron et al. 2021): L2-normalised features, the k most cosine-similar training
features vote with weight exp(sim / T), T = 0.07. The linear probe trains one linear layer on the
cached features after a non-affine BatchNorm (MAE's linear-probing head), with AdamW and a cosine
schedule, full-batch on the cached features (cheap: no encoder forward per epoch).
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F


def dataset_labels(ds) -> "list[int]":
    """Labels of every sample, without decoding images when the dataset exposes them."""
    for attr in ("targets", "labels"):
        v = getattr(ds, attr, None)
        if v is not None and len(v) == len(ds):
            return [int(x) for x in v]
    out = []
    for i in range(len(ds)):
        s = ds[i]
        out.append(int(s["label"] if isinstance(s, dict) else s[1]))
    return out


def class_balanced_indices(labels: Sequence[int], per_class: int, seed: int = 0,
                           max_classes: Optional[int] = None) -> "list[int]":
    """Up to ``per_class`` indices of every class (seeded sample), classes optionally capped
    to ``max_classes`` (the first ones in sorted order)."""
    by = defaultdict(list)
    for i, y in enumerate(labels):
        by[int(y)].append(i)
    rng = random.Random(seed)
    keep = sorted(by)[:max_classes] if max_classes else sorted(by)
    out = []
    for c in keep:
        idx = by[c]
        out.extend(sorted(rng.sample(idx, per_class)) if len(idx) > per_class else idx)
    return out


def _as_dict(batch):
    if isinstance(batch, dict):
        return batch
    x, y = batch[0], batch[1]
    return {"rgb": x, "label": torch.as_tensor(y)}


@torch.no_grad()
def extract_features(fn: Callable, ds, indices: "list[int]", batch_size: int = 64,
                     num_workers: int = 0) -> "tuple[torch.Tensor, torch.Tensor]":
    """(N x D float32 features, N labels) of ``ds[indices]`` through ``fn``."""
    sub = torch.utils.data.Subset(ds, indices)
    loader = torch.utils.data.DataLoader(sub, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers)
    feats, labels = [], []
    for batch in loader:
        b = _as_dict(batch)
        f = fn(b)
        if f.ndim != 2 or f.shape[0] != len(b["label"]):
            raise ValueError(f"encoder_features_fn must return B x D, got {tuple(f.shape)}")
        feats.append(f.float().cpu())
        labels.append(torch.as_tensor(b["label"]).long().cpu())
    return torch.cat(feats), torch.cat(labels)


def knn_classify(train_f, train_y, test_f, num_classes: int, k: int = 20, T: float = 0.07,
                 chunk: int = 256) -> torch.Tensor:
    """Class scores (N_test x C) by DINO's weighted k-NN vote on cosine similarity."""
    train_f, test_f = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    k = min(k, train_f.shape[0])
    out = []
    for s in range(0, test_f.shape[0], chunk):
        sim, idx = (test_f[s:s + chunk] @ train_f.T).topk(k, dim=1)
        w = (sim / T).exp()
        votes = torch.zeros(sim.shape[0], num_classes)
        votes.scatter_add_(1, train_y[idx], w)
        out.append(votes)
    return torch.cat(out)


def linear_probe(train_f, train_y, test_f, num_classes: int, epochs: int = 100, lr: float = 1e-2,
                 weight_decay: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Class scores (N_test x C) of a BatchNorm(affine=False) + Linear head trained on features."""
    g = torch.Generator().manual_seed(seed)
    dim = train_f.shape[1]
    head = torch.nn.Sequential(torch.nn.BatchNorm1d(dim, affine=False, eps=1e-6),
                               torch.nn.Linear(dim, num_classes))
    with torch.no_grad():
        head[1].weight.copy_(torch.randn(num_classes, dim, generator=g) * 0.01)
        head[1].bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for e in range(epochs):
        for grp in opt.param_groups:
            grp["lr"] = lr * 0.5 * (1 + math.cos(math.pi * e / epochs))
        head.train()
        loss = F.cross_entropy(head(train_f), train_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        return head(test_f)


def _topk(scores: torch.Tensor, y: torch.Tensor) -> "tuple[float, float]":
    top = scores.topk(min(5, scores.shape[1]), dim=1).indices
    hit = top == y[:, None]
    return 100.0 * hit[:, 0].float().mean().item(), 100.0 * hit.any(1).float().mean().item()


def run_probes(encoder_features_fn: Callable, train_ds, val_ds, per_class: int = 10,
               val_per_class: Optional[int] = None, max_classes: Optional[int] = None,
               k: int = 20, temperature: float = 0.07, linear_epochs: int = 100,
               linear_lr: float = 1e-2, batch_size: int = 64, num_workers: int = 0,
               num_classes: Optional[int] = None, seed: int = 0) -> dict:
    """k-NN and linear-probe accuracy (%) of frozen features on class-balanced subsets.

    ``per_class`` training images per class (and ``val_per_class``, default all, for val) over at
    most ``max_classes`` classes; the encoder is called under ``torch.no_grad`` and is restored to
    its train/eval mode by the caller's own fn (wrap it with ``model.eval()`` as needed)."""
    tr_idx = class_balanced_indices(dataset_labels(train_ds), per_class, seed, max_classes)
    classes = {int(y) for y in torch.as_tensor(dataset_labels(train_ds))[tr_idx].tolist()}
    va_labels = dataset_labels(val_ds)
    va_idx = [i for i in (class_balanced_indices(va_labels, val_per_class, seed) if val_per_class
                          else range(len(va_labels))) if va_labels[i] in classes]
    if not tr_idx or not va_idx:
        raise ValueError("probes need training and validation images of shared classes")
    tr_f, tr_y = extract_features(encoder_features_fn, train_ds, tr_idx, batch_size, num_workers)
    va_f, va_y = extract_features(encoder_features_fn, val_ds, va_idx, batch_size, num_workers)
    C = num_classes or int(max(tr_y.max(), va_y.max())) + 1
    knn1, knn5 = _topk(knn_classify(tr_f, tr_y, va_f, C, k, temperature), va_y)
    lin1, lin5 = _topk(linear_probe(tr_f, tr_y, va_f, C, linear_epochs, linear_lr, seed=seed), va_y)
    return {"knn_top1": knn1, "knn_top5": knn5, "linear_top1": lin1, "linear_top5": lin5,
            "num_train": len(tr_idx), "num_val": len(va_idx), "num_classes": len(classes),
            "feature_dim": int(tr_f.shape[1]), "k": k, "temperature": temperature}


class _LabeledSubset(torch.utils.data.Subset):
    """A Subset that also carries its labels (so ``dataset_labels`` needs no decoding)."""

    def __init__(self, ds, indices: "list[int]", labels: "list[int]"):
        super().__init__(ds, indices)
        self.labels = [labels[i] for i in indices]


def holdout_split(ds, per_class: int, seed: int = 0, max_classes: Optional[int] = None
                  ) -> "tuple[_LabeledSubset, _LabeledSubset]":
    """Disjoint class-balanced probe sets from one labeled dataset (when no val split exists):
    up to ``2 * per_class`` images of each class, alternately to train and val; classes with a
    single image go to train only. Labels < 0 (not ImageNet) are left out."""
    labels = dataset_labels(ds)
    picked = class_balanced_indices([y if y >= 0 else -1 for y in labels], 2 * per_class, seed,
                                    max_classes)
    by = defaultdict(list)
    for i in picked:
        if labels[i] >= 0:
            by[labels[i]].append(i)
    tr = [i for c in sorted(by) for i in by[c][0::2]]
    va = [i for c in sorted(by) for i in by[c][1::2]]
    return _LabeledSubset(ds, tr, labels), _LabeledSubset(ds, va, labels)
