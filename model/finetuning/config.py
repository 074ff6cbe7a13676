"""Fine-tuning configs: YAML over ``DEFAULTS`` plus ``--set a.b=value`` overrides.

Same conventions as the pretraining configs (``model/pretraining/config.py``, whose override parser and
batch / lr helpers are reused): unknown keys are an error naming the key; the peak lr is
``base_lr x total_batch / 256`` unless ``optim.lr`` is set; ``total_batch`` is reached with
``batch_per_gpu x processes x accumulation``. Defaults are MAE's fine-tuning recipe (ViT-B);
the shipped configs ``finetune_vitb_400ep`` / ``finetune_vitb_1600ep`` hold the paper's two
settings (base lr 1e-3 / layer decay 0.7 and 5e-4 / 0.65).
"""
from __future__ import annotations

import copy
from typing import Any

from model.pretraining.config import (ConfigError, accum_steps, apply_overrides, merge_file,
                          scaled_lr)

DEFAULTS: "dict[str, Any]" = {
    "model": {
        "timm_name": "vit_base_patch16_224",  # used when --pretrained carries no architecture
        "timm_kwargs": {},
        "num_classes": 1000,
        "img_size": 224,
        "drop_path": 0.1,
    },
    "data": {
        "imagenet_root": None,       # <root>/<train_split>/<wnid>/*.JPEG, <root>/<val_split>/...
        "train_split": "train",
        "val_split": "val",
        "limit_train": None,         # keep this many images (class-interleaved), for smoke runs
        "limit_val": None,
        "eval_crop_pct": 0.875,      # 224 / 256
        "num_workers": 10,
        "pin_memory": True,
    },
    "aug": {
        "auto_augment": "rand-m9-mstd0.5-inc1",  # RandAugment as MAE
        "color_jitter": None,        # unused with RandAugment (as MAE)
        "reprob": 0.25,              # random erasing
        "remode": "pixel",
        "recount": 1,
        "mixup": 0.8,                # alpha; 0 = off
        "cutmix": 1.0,               # alpha; 0 = off
        "mixup_prob": 1.0,
        "mixup_switch_prob": 0.5,
        "mixup_mode": "batch",
        "smoothing": 0.1,            # label smoothing
    },
    "optim": {
        "epochs": 100,
        "warmup_epochs": 5,
        "total_batch": 1024,
        "batch_per_gpu": 128,
        "base_lr": 1.0e-3,
        "lr": None,
        "min_lr": 1.0e-6,
        "layer_decay": 0.75,
        "weight_decay": 0.05,
        "betas": [0.9, 0.999],
        "clip_grad": None,
    },
    "train": {
        "seed": 0,
        "amp": "auto",               # auto: bf16 on CUDA, fp32 on CPU | bf16 | none
        "eval_every_epochs": 1,
        "log_every_steps": 50,
        "max_steps": None,           # stop early (smoke runs); the schedule keeps the full length
        "dist_backend": "auto",
    },
}


def load_finetune_config(name_or_path: "str | None" = None,
                         overrides: "list[str] | None" = None) -> dict:
    """DEFAULTS <- YAML (path or shipped name such as ``finetune_tiny_cpu``) <- overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if name_or_path:
        cfg = merge_file(cfg, name_or_path, opaque=("timm_kwargs",), kind="finetune")
    cfg = apply_overrides(cfg, overrides)
    check(cfg)
    return cfg


def check(cfg: dict) -> None:
    o, a = cfg["optim"], cfg["aug"]
    for key in ("epochs", "total_batch", "batch_per_gpu"):
        if not isinstance(o[key], int) or o[key] <= 0:
            raise ConfigError(f"optim.{key} must be a positive integer, got {o[key]!r}")
    if not 0 <= o["warmup_epochs"] <= o["epochs"]:
        raise ConfigError(f"optim.warmup_epochs {o['warmup_epochs']} outside 0..optim.epochs")
    if not 0 < o["layer_decay"] <= 1:
        raise ConfigError(f"optim.layer_decay must be in (0, 1], got {o['layer_decay']!r}")
    if (a["mixup"] > 0 or a["cutmix"] > 0) and o["batch_per_gpu"] % 2:
        raise ConfigError(f"optim.batch_per_gpu {o['batch_per_gpu']} must be even with mixup/cutmix")
    if cfg["train"]["amp"] not in ("auto", "bf16", "none"):
        raise ConfigError(f"train.amp {cfg['train']['amp']!r} is not auto|bf16|none")


__all__ = ["DEFAULTS", "ConfigError", "load_finetune_config", "accum_steps", "scaled_lr"]
