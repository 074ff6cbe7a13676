"""``C2FMAEConfig``: every switch of the model, and the named sizes of ``build_model``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from model.network.masking import BLENDS, DEFAULT_KNOTS

GRANULARITIES = ("semantic", "instance", "rgb")  # canonical order of token groups


@dataclass
class C2FMAEConfig:
    arch: str = "c2fmae"                # "c2fmae" | "mae" (RGB-only baseline)
    # encoder (timm ViT)
    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    # inputs
    mask_stride: int = 4                # stride of the input label maps (4 -> 56x56, 1 -> 224x224)
    pred_stride: int = 4                # stride of the predicted label maps
    num_semantic: int = 133
    max_instances: int = 32             # K: instance logits have K+1 classes (0 = background)
    map_embed_dim: int = 64             # per-pixel class embedding width of the map adapters
    inputs: Tuple[str, ...] = GRANULARITIES
    # masking (section III-D)
    num_visible: int = 98               # visible tokens over all input granularities (of 588)
    masking_schedule: str = "sg-ig-rd"  # also ig-sg-rd, rd-ig-sg, rd, ig, sg
    schedule_knots: Tuple[float, ...] = DEFAULT_KNOTS
    masking_blend: str = "count"        # curriculum blend: count (default) | topk (eq. 10-11 literal) | sample
    instance_alpha: float = 0.75        # eq. (8) share of masked patches put on objects
    dirichlet_alpha: float = 1.0
    semantic_class_weights: Optional[Tuple[float, ...]] = None  # eq. (6) w_c, equal by default
    # decoder (section III-C)
    decoder_dim: int = 256
    decoder_heads: int = 8
    decoder_depth: int = 2              # self-attn blocks per task block (MAE: total blocks)
    decoder_mode: str = "cascade"       # "cascade" | "cascade_no_xattn" | "parallel"
    task_order: Tuple[str, ...] = GRANULARITIES  # predicted tasks, in decoding order
    # losses (eq. 12)
    norm_pix_loss: bool = True
    loss_weights: Dict[str, float] = field(
        default_factory=lambda: {"semantic": 1.0, "instance": 1.0, "rgb": 1.0})

    def __post_init__(self):
        for name in ("inputs", "task_order", "schedule_knots", "semantic_class_weights"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                setattr(self, name, tuple(v))
        for name in ("inputs", "task_order"):
            bad = [g for g in getattr(self, name) if g not in GRANULARITIES]
            if bad or len(set(getattr(self, name))) != len(getattr(self, name)) \
                    or not getattr(self, name):
                raise ValueError(f"config {name}={getattr(self, name)} must be distinct, non-empty "
                                 f"names from {GRANULARITIES}")
        if self.arch not in ("c2fmae", "mae"):
            raise ValueError(f"config arch={self.arch!r} must be 'c2fmae' or 'mae'")
        if self.masking_blend not in BLENDS:
            raise ValueError(f"config masking_blend={self.masking_blend!r} must be one of {BLENDS}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        for s in ("mask_stride", "pred_stride"):
            if self.patch_size % getattr(self, s):
                raise ValueError(f"{s}={getattr(self, s)} must divide patch_size {self.patch_size}")
        unknown = set(self.loss_weights) - set(GRANULARITIES)
        if unknown:
            raise ValueError(f"loss_weights has unknown keys {sorted(unknown)}")
        self.loss_weights = {**{g: 1.0 for g in GRANULARITIES}, **self.loss_weights}

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid ** 2

    def to_dict(self) -> dict:
        """Plain YAML/JSON-friendly dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "C2FMAEConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown C2FMAEConfig keys {unknown}")
        return cls(**d)


_SIZES = {
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "test": dict(embed_dim=64, depth=2, num_heads=2, map_embed_dim=8),
}
_MAE = dict(arch="mae", inputs=("rgb",), task_order=("rgb",), num_visible=49,
            masking_schedule="rd", decoder_dim=512, decoder_heads=16, decoder_depth=8)
MODEL_CONFIGS = {
    "c2fmae_vit_base": _SIZES["base"],
    "c2fmae_vit_small": _SIZES["small"],
    "c2fmae_vit_tiny": _SIZES["tiny"],
    "c2fmae_vit_test": dict(_SIZES["test"], decoder_dim=32, decoder_heads=2),
    "mae_vit_base": dict(_SIZES["base"], **_MAE),
    "mae_vit_small": dict(_SIZES["small"], **_MAE),
    "mae_vit_tiny": dict(_SIZES["tiny"], **_MAE),
    "mae_vit_test": dict(_SIZES["test"], **dict(_MAE, decoder_dim=32, decoder_heads=2,
                                                decoder_depth=2)),
}


def model_config(name: str, **overrides) -> C2FMAEConfig:
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_CONFIGS)}")
    return C2FMAEConfig.from_dict({**MODEL_CONFIGS[name], **overrides})
