"""Cascaded coarse-to-fine decoder (paper section III-C, eq. 2-4) and its ablation switches.

H (B x G*N x d) is the encoder output projected to the decoder width with mask tokens at masked
positions, plus fixed sin-cos positions and a learned embedding per granularity. Task block k
(S -> I -> R by default) takes its task's N-token slice of H as queries and attends to

* ``cascade``:          keys/values = H with F^{k-1} added at the previous task's slice (F^0 = 0);
* ``parallel``:         keys/values = H alone (every task independent, MultiMAE-like);
* ``cascade_no_xattn``: no cross-attention; the queries get F^{k-1} added token-wise and go
                        straight to the self-attention blocks.

then two self-attention blocks (timm ``Block``), giving F^k, which the task's head turns into
predictions.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Block

from model.network.adapters import sincos_pos_embed_2d

DECODER_MODES = ("cascade", "cascade_no_xattn", "parallel")


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decoder width {dim} is not divisible by {num_heads} heads")
        self.h = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        B, Nq, D = x.shape
        q = self.q(x).reshape(B, Nq, self.h, D // self.h).transpose(1, 2)
        k, v = self.kv(ctx).reshape(B, ctx.shape[1], 2, self.h, D // self.h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, Nq, D))


class CrossBlock(nn.Module):
    """Pre-norm cross-attention + MLP, both residual (eq. 3)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_kv = nn.LayerNorm(dim, eps=1e-6)
        self.attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_q(x), self.norm_kv(ctx))
        return x + self.mlp(self.norm2(x))


class TaskBlock(nn.Module):
    """One cross-attention block (optional) then ``depth`` self-attention blocks (eq. 3-4)."""

    def __init__(self, dim: int, num_heads: int, depth: int = 2, cross: bool = True,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.cross = CrossBlock(dim, num_heads, mlp_ratio) if cross else None
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio, qkv_bias=True)
                                      for _ in range(depth)])

    def forward(self, q: torch.Tensor, ctx: torch.Tensor = None) -> torch.Tensor:
        if self.cross is not None:
            q = self.cross(q, ctx)
        return self.blocks(q)


class CascadeDecoder(nn.Module):
    """Builds H from the visible encoder tokens and runs the task blocks in ``tasks`` order."""

    def __init__(self, encoder_dim: int, dim: int, num_heads: int, depth: int,
                 granularities: Sequence[str], tasks: Sequence[str], grid: int,
                 mode: str = "cascade", mlp_ratio: float = 4.0):
        super().__init__()
        if mode not in DECODER_MODES:
            raise ValueError(f"unknown decoder_mode {mode!r}; choose one of {DECODER_MODES}")
        missing = [t for t in tasks if t not in granularities]
        if missing:
            raise ValueError(f"tasks {missing} are not among the decoder granularities {granularities}")
        self.mode, self.granularities, self.tasks = mode, tuple(granularities), tuple(tasks)
        self.N = grid * grid
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos", sincos_pos_embed_2d(dim, grid).unsqueeze(0), persistent=False)
        self.gran_embed = nn.ParameterDict({g: nn.Parameter(torch.zeros(1, 1, dim))
                                            for g in self.granularities})
        self.blocks = nn.ModuleDict({t: TaskBlock(dim, num_heads, depth, mode != "cascade_no_xattn",
                                                  mlp_ratio) for t in self.tasks})
        nn.init.normal_(self.mask_token, std=0.02)
        for p in self.gran_embed.values():
            nn.init.normal_(p, std=0.02)

    def build_h(self, x_vis: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """eq. (2): H = scatter(embed(visible tokens)) over mask tokens + positions + granularity."""
        B, V, _ = x_vis.shape
        y = self.embed(x_vis)
        H = self.mask_token.to(y.dtype).expand(B, len(self.granularities) * self.N, -1)
        H = H.scatter(1, positions.unsqueeze(-1).expand(-1, -1, y.shape[-1]), y)
        extra = torch.cat([self.pos + self.gran_embed[g] for g in self.granularities], dim=1)
        return H + extra.to(H.dtype)

    def _slice(self, task: str) -> slice:
        i = self.granularities.index(task)
        return slice(i * self.N, (i + 1) * self.N)

    def forward(self, x_vis: torch.Tensor, positions: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x_vis: B x V x D_enc visible encoder tokens (no class token); positions: B x V indices
        into the G*N decoder sequence. Returns {task: F^k, B x N x d}."""
        H = self.build_h(x_vis, positions)
        out, prev = {}, None
        for t in self.tasks:
            q = H[:, self._slice(t)]
            blk = self.blocks[t]
            if self.mode == "parallel":
                f = blk(q, H)
            elif self.mode == "cascade_no_xattn":
                f = blk(q if prev is None else q + out[prev])
            else:
                ctx = H
                if prev is not None:  # eq. (3): F^{k-1} added at the previous task's positions
                    s = self._slice(prev)
                    ctx = torch.cat([H[:, :s.start], H[:, s] + out[prev], H[:, s.stop:]], dim=1)
                f = blk(q, ctx)
            out[t], prev = f, t
        return out
