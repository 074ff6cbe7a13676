"""Granularity-specific input projections (eq. 1), fixed 2D sin-cos positions, output heads."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE = 255


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding, (grid*grid, dim), rows in raster order (as MAE)."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    ys, xs = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64),
                         indexing="ij")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))

    def enc(pos):
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    # first half encodes the column (x), second half the row (y)
    return torch.from_numpy(np.concatenate([enc(xs), enc(ys)], axis=1)).float()


def patchify(img: torch.Tensor, patch: int) -> torch.Tensor:
    """B x C x H x W -> B x N x (patch*patch*C), pixels in (py, px, c) order (as MAE)."""
    B, C, H, W = img.shape
    g, w = H // patch, W // patch
    x = img.reshape(B, C, g, patch, w, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, g * w, patch * patch * C)


def unpatchify(x: torch.Tensor, patch: int, channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify` for a square grid."""
    B, N, _ = x.shape
    g = int(round(N ** 0.5))
    x = x.reshape(B, g, g, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, channels, g * patch, g * patch)


class RGBAdapter(nn.Module):
    """RGB patches -> tokens through the encoder's own ``patch_embed`` (a per-patch linear map).

    The patch embedding is registered in the timm encoder only (so export is a plain copy); this
    adapter keeps an unregistered reference to it.
    """

    def __init__(self, patch_embed: nn.Module):
        super().__init__()
        object.__setattr__(self, "_patch_embed", patch_embed)

    @property
    def proj(self) -> nn.Conv2d:
        return self._patch_embed.proj

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self._patch_embed(rgb)  # B x N x D


class MapAdapter(nn.Module):
    """A label map -> tokens: per-pixel class embedding (255 -> its own "unlabeled" row), then a
    per-patch linear projection (Conv2d with kernel = stride = pixels per patch side)."""

    def __init__(self, name: str, num_classes: int, embed_dim: int, dim: int, pixels_per_patch: int):
        super().__init__()
        self.name, self.num_classes, self.pixels = name, num_classes, pixels_per_patch
        self.embed = nn.Embedding(num_classes + 1, embed_dim)
        self.proj = nn.Conv2d(embed_dim, dim, kernel_size=pixels_per_patch, stride=pixels_per_patch)

    def indices(self, m: torch.Tensor) -> torch.Tensor:
        bad = ((m < 0) | (m >= self.num_classes)) & (m != IGNORE)
        if bool(bad.any()):
            v = m[bad][:5].tolist()
            raise ValueError(f"{self.name} map holds values {v} outside 0..{self.num_classes - 1} "
                             f"and {IGNORE} (unlabeled)")
        return torch.where(m == IGNORE, self.num_classes, m)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        x = self.embed(self.indices(m.long())).permute(0, 3, 1, 2)  # B x E x H x W
        return self.proj(x).flatten(2).transpose(1, 2)  # B x N x D


class MapHead(nn.Module):
    """Per-token linear predictor of C logits for each of its s x s pixels -> B x C x H x W."""

    def __init__(self, dim: int, num_classes: int, pixels_per_patch: int):
        super().__init__()
        self.c, self.s = num_classes, pixels_per_patch
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = nn.Linear(dim, num_classes * pixels_per_patch ** 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        g = int(round(N ** 0.5))
        y = self.fc(self.norm(x)).reshape(B, g, g, self.s, self.s, self.c)
        return y.permute(0, 5, 1, 3, 2, 4).reshape(B, self.c, g * self.s, g * self.s)


class RGBHead(nn.Module):
    """Per-token linear predictor of the patch's pixels, B x N x (patch*patch*3)."""

    def __init__(self, dim: int, patch: int, channels: int = 3):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = nn.Linear(dim, patch * patch * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x))


def init_weights(module: nn.Module) -> None:
    """MAE's init: xavier-uniform linears (and patch convs as flattened linears), unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        w = module.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
