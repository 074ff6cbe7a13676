"""Masked-position losses (eq. 12): CE for the maps, MSE on (normalised) pixels for RGB."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model.network.adapters import IGNORE, patchify


def target_map(m: torch.Tensor, size: int) -> torch.Tensor:
    """A label map at the prediction's resolution: nearest subsampling (centre pixel of each cell)
    when the input map is finer (e.g. stride 1 maps, stride 4 predictions)."""
    H = m.shape[-1]
    if H == size:
        return m
    if H % size:
        raise ValueError(f"label map of size {H} cannot be subsampled to the prediction size {size}")
    step = H // size
    return m[..., step // 2::step, step // 2::step]


def patch_mask_to_pixels(mask: torch.Tensor, size: int) -> torch.Tensor:
    """B x N bool (patch grid) -> B x size x size bool."""
    B, N = mask.shape
    g = int(round(N ** 0.5))
    s = size // g
    return mask.reshape(B, g, 1, g, 1).expand(B, g, s, g, s).reshape(B, size, size)


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                         name: str) -> torch.Tensor:
    """Mean CE over pixels of masked patches, ``IGNORE`` (255) pixels excluded; 0 if none."""
    C, S = logits.shape[1], logits.shape[-1]
    tgt = target_map(target, S).long()
    bad = ((tgt < 0) | (tgt >= C)) & (tgt != IGNORE)
    if bool(bad.any()):
        raise ValueError(f"{name} target holds values {tgt[bad][:5].tolist()} outside 0..{C - 1} "
                         f"and {IGNORE}")
    tgt = torch.where(patch_mask_to_pixels(mask, S), tgt, IGNORE)
    total = F.cross_entropy(logits.float(), tgt, ignore_index=IGNORE, reduction="sum")
    return total / (tgt != IGNORE).sum().clamp_min(1)


def rgb_target(rgb: torch.Tensor, patch: int, norm_pix: bool) -> torch.Tensor:
    """Per-patch pixel target; with ``norm_pix`` each patch is standardised by its own mean/std
    (MAE's norm_pix_loss, eps 1e-6 on the variance)."""
    t = patchify(rgb.float(), patch)
    if norm_pix:
        mean, var = t.mean(-1, keepdim=True), t.var(-1, keepdim=True)
        t = (t - mean) / (var + 1e-6) ** 0.5
    return t


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE per patch averaged over masked patches only; 0 if none is masked."""
    per_patch = ((pred.float() - target) ** 2).mean(-1)
    m = mask.to(per_patch.dtype)
    return (per_patch * m).sum() / m.sum().clamp_min(1)
