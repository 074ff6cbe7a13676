"""The RGB-only MAE baseline's decoder (He et al. 2022): the baseline row of Tables V/VI.

``build_model("mae_vit_base")`` gives a :class:`model.network.c2fmae.C2FMAE` with ``arch="mae"``: RGB input
only, 75% random masking (49 of 196 visible), and this decoder: the visible tokens (and the class
token) projected to 512, mask tokens inserted, fixed sin-cos positions, 8 self-attention blocks
(16 heads), then the per-patch pixel predictor. Same encoder, same losses, same outputs (rgb only).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from model.network.adapters import sincos_pos_embed_2d


class MAEDecoder(nn.Module):
    def __init__(self, encoder_dim: int, dim: int = 512, num_heads: int = 16, depth: int = 8,
                 grid: int = 14, mlp_ratio: float = 4.0):
        super().__init__()
        self.N = grid * grid
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        pos = torch.cat([torch.zeros(1, dim), sincos_pos_embed_2d(dim, grid)]).unsqueeze(0)
        self.register_buffer("pos", pos, persistent=False)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio, qkv_bias=True)
                                      for _ in range(depth)])
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: B x (1+V) x D_enc encoder output with the class token first; positions: B x V patch
        indices of the visible tokens. Returns {"rgb": B x N x dim} (class token dropped)."""
        y = self.embed(x)
        B, _, d = y.shape
        full = self.mask_token.to(y.dtype).expand(B, self.N, d)
        full = full.scatter(1, positions.unsqueeze(-1).expand(-1, -1, d), y[:, 1:])
        h = torch.cat([y[:, :1], full], dim=1) + self.pos.to(y.dtype)
        return {"rgb": self.blocks(h)[:, 1:]}
