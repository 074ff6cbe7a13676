"""Robustness metrics of Table IV: ImageNet-A/R class subsets, ImageNet-C mCE, summary score.

- ImageNet-A and ImageNet-R hold 200 of the 1000 classes. A 1000-way classifier is scored on them
  by keeping only the logits of those classes (as their authors do); the subsets are read from the
  index files timm ships (``timm/data/_info/imagenet_{a,r}_indices.txt`` with the matching
  ``imagenet_{a,r}_synsets.txt``), and checked against timm's ImageNet-1K order.
- ImageNet-C corruption error (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to
  Common Corruptions and Perturbations", ICLR 2019, eq. in Sec. 3):
      CE_c = sum_s E_{s,c} / sum_s E^{AlexNet}_{s,c},   mCE = mean_c CE_c   over the 15 corruptions,
  with AlexNet's errors the constants of the authors' release (github.com/hendrycks/robustness,
  ImageNet-C/test.py), given there as AlexNet's error averaged over the 5 severities (so
  sum_s E_s / sum_s E^A_s = mean_s E_s / mean_s E^A_s).
- The paper's robustness summary: mean(acc_A, acc_R, acc_Sketch, 100 - mCE), all in %.
"""
from __future__ import annotations

import os
from functools import lru_cache

#: AlexNet top-1 error on ImageNet-C, mean over severities 1..5 (Hendrycks & Dietterich 2019).
ALEXNET_ERR = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
CORRUPTIONS = tuple(ALEXNET_ERR)  # the 15 benchmark corruptions that define mCE
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")  # held-out set
SEVERITIES = (1, 2, 3, 4, 5)


def _info_dir() -> str:
    import timm.data

    return os.path.join(os.path.dirname(timm.data.__file__), "_info")


@lru_cache(maxsize=None)
def class_subset(benchmark: str) -> "tuple[tuple[int, ...], tuple[str, ...]]":
    """(ImageNet-1K indices, wnids) of the 200 classes of ``imagenet-a`` / ``imagenet-r``, from
    timm's shipped files; each index is checked to be the wnid's position in timm's 1K order."""
    from c2fmae_data.format.categories import imagenet_wnids

    short = {"imagenet-a": "imagenet_a", "imagenet-r": "imagenet_r"}[benchmark]
    d = _info_dir()
    with open(os.path.join(d, f"{short}_indices.txt")) as f:
        idx = tuple(int(x) for x in f.read().split())
    with open(os.path.join(d, f"{short}_synsets.txt")) as f:
        wnids = tuple(f.read().split())
    full = imagenet_wnids()
    if len(idx) != 200 or len(wnids) != 200 or any(full[i] != w for i, w in zip(idx, wnids)):
        raise RuntimeError(f"timm's {short} index and synset files disagree with its ImageNet order")
    return idx, wnids


def corruption_errors(acc: "dict[str, dict[int, float]]") -> "dict[str, float]":
    """Top-1 error (%) per corruption averaged over severities, from acc[c][s] in %."""
    return {c: sum(100.0 - a for a in sev.values()) / len(sev) for c, sev in acc.items()}


def mce(acc: "dict[str, dict[int, float]]") -> "dict":
    """ImageNet-C summary from top-1 accuracies (%) ``acc[corruption][severity]``.

    Returns ``{"ce": {c: CE_c in %}, "mce": mCE in %}``. All 15 corruptions with all 5 severities
    are required (a partial run gets no mCE: the number would not be comparable)."""
    missing = [c for c in CORRUPTIONS if c not in acc]
    if missing:
        raise ValueError(f"mCE needs all 15 ImageNet-C corruptions; missing {missing}")
    ce = {}
    for c in CORRUPTIONS:
        sev = acc[c]
        if sorted(sev) != list(SEVERITIES):
            raise ValueError(f"corruption {c!r} has severities {sorted(sev)}, expected 1..5")
        err = sum(100.0 - sev[s] for s in SEVERITIES)          # sum_s E_{s,c}, in %
        ce[c] = 100.0 * err / (100.0 * ALEXNET_ERR[c] * len(SEVERITIES))  # CE_c, in %
    return {"ce": ce, "mce": sum(ce.values()) / len(ce)}


def robustness_score(acc_a: float, acc_r: float, acc_sketch: float, mce_pct: float) -> float:
    """The paper's Table IV summary: mean of A, R, Sketch top-1 and (100 - mCE), in %."""
    return (acc_a + acc_r + acc_sketch + (100.0 - mce_pct)) / 4.0
