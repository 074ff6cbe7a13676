"""The shared encoder: a plain timm ``VisionTransformer`` (eq. 1), and what C2FMAE and MAE share
around it (running it on a token sequence, RGB features, export to a stock timm model)."""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn as nn
from timm.models import checkpoint_seq
from timm.models.vision_transformer import VisionTransformer

from model.network.adapters import sincos_pos_embed_2d

# (embed_dim, depth, num_heads) of the stock timm ViTs at patch 16 / 224 px
TIMM_NAMES = {(768, 12, 12): "vit_base_patch16_224", (384, 12, 6): "vit_small_patch16_224",
              (192, 12, 3): "vit_tiny_patch16_224"}


def build_encoder(img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                  mlp_ratio: float = 4.0, drop_path_rate: float = 0.0) -> VisionTransformer:
    """timm ViT with a class token, ``global_pool="avg"`` (so ``norm`` is Identity and ``fc_norm``
    the final LayerNorm), no head, and a frozen 2D sin-cos ``pos_embed`` (zero at the class token)."""
    enc = VisionTransformer(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim,
                            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
                            class_token=True, global_pool="avg", num_classes=0,
                            drop_path_rate=drop_path_rate)
    grid = img_size // patch_size
    pe = torch.cat([torch.zeros(1, embed_dim), sincos_pos_embed_2d(embed_dim, grid)])
    enc.pos_embed.data.copy_(pe.unsqueeze(0))
    enc.pos_embed.requires_grad_(False)
    nn.init.normal_(enc.cls_token, std=0.02)
    return enc


def run_blocks(enc: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Prepend the class token (with its zero position) and run the blocks; B x (1+L) x D."""
    cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
    x = enc.norm_pre(enc.pos_drop(torch.cat([cls, tokens], dim=1)))
    if enc.grad_checkpointing and torch.is_grad_enabled():
        x = checkpoint_seq(enc.blocks, x)
    else:
        x = enc.blocks(x)
    return enc.norm(x)


class EncoderAPI:
    """Mixin for models holding ``self.encoder`` (timm ViT) and ``self.config``."""

    encoder: VisionTransformer

    def rgb_position(self) -> torch.Tensor:
        """What is added to every RGB patch token: sin-cos position (+ RGB granularity embedding)."""
        return self.encoder.pos_embed[:, 1:]

    def rgb_features(self, rgb: torch.Tensor) -> torch.Tensor:
        """Pooled features from RGB alone, all patches visible: avg-pool of patch tokens, fc_norm."""
        x = run_blocks(self.encoder, self.encoder.patch_embed(rgb) + self.rgb_position())
        return self.encoder.fc_norm(x[:, 1:].mean(dim=1))

    def export_encoder_state_dict(self) -> Dict[str, torch.Tensor]:
        """State dict for ``timm.create_model(*self.timm_encoder_name())`` (strict load): the
        encoder's own weights with the RGB granularity embedding folded into ``pos_embed``."""
        sd = {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}
        sd["pos_embed"][:, 1:] = self.rgb_position().detach()
        return sd

    def timm_encoder_name(self) -> Tuple[str, dict]:
        """(timm model name, kwargs) whose model loads :meth:`export_encoder_state_dict`."""
        c = self.config
        key = (c.embed_dim, c.depth, c.num_heads)
        kwargs = {"num_classes": 0, "global_pool": "avg"}
        std = c.patch_size == 16 and c.img_size == 224 and c.mlp_ratio == 4.0
        name = TIMM_NAMES.get(key) if std else None
        if name is None:
            name = "vit_base_patch16_224"
            kwargs.update(embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
                          img_size=c.img_size, patch_size=c.patch_size, mlp_ratio=c.mlp_ratio)
        return name, kwargs
