"""AdamW with the MAE parameter groups, and the per-iteration warmup + cosine lr.

Weight decay is not applied to norms, biases, position embeddings, granularity (modality)
embeddings, mask tokens and the class token (paper IV-A, as MAE / MultiMAE). A parameter is in
the no-decay group when it is 1-D (every norm weight and bias), when the model (or a submodule,
timm-style) lists it in ``no_weight_decay()``, or when its name matches ``NO_DECAY_PATTERNS``.
"""
from __future__ import annotations

import math
import re
from typing import Iterable

import torch
from torch import nn

# names of tokens / embeddings that are not weights of a linear map
NO_DECAY_PATTERNS = (r"pos_embed", r"cls_token", r"mask_token", r"gran(ularity)?_embed",
                     r"modality_embed", r"type_embed", r"task_embed", r"query_token", r"reg_token")
_NO_DECAY_RE = re.compile("|".join(NO_DECAY_PATTERNS))


def _declared_no_decay(model: nn.Module) -> "set[str]":
    """Full names listed by ``no_weight_decay()`` of the model or any submodule (timm style)."""
    out = set()
    for prefix, mod in model.named_modules():
        fn = getattr(mod, "no_weight_decay", None)
        if callable(fn):
            for n in fn():
                out.add(f"{prefix}.{n}" if prefix else n)
    return out


def is_no_decay(name: str, param: torch.Tensor, declared: "Iterable[str]" = ()) -> bool:
    return param.ndim <= 1 or name in set(declared) or bool(_NO_DECAY_RE.search(name))


def param_groups(model: nn.Module, weight_decay: float) -> "list[dict]":
    """Two AdamW groups: ``decay`` (weight_decay) and ``no_decay`` (0); frozen params skipped."""
    declared = _declared_no_decay(model)
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if is_no_decay(name, p, declared):
            no_decay.append(p)
            no_decay_names.append(name)
        else:
            decay.append(p)
            decay_names.append(name)
    return [{"params": decay, "weight_decay": weight_decay, "names": decay_names},
            {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float,
                    betas=(0.9, 0.95)) -> torch.optim.AdamW:
    groups = param_groups(model, weight_decay)
    for g in groups:  # the optimizer keeps only standard keys in its state dict
        g.pop("names")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas),
                             fused=use_fused(p for g in groups for p in g["params"]) or None)


def use_fused(params) -> bool:
    """The fused (one-kernel) AdamW when every parameter is on a CUDA device."""
    params = list(params)
    return bool(params) and all(p.is_cuda for p in params) and torch.cuda.is_available()


def lr_at(t: float, total: float, warmup: float, peak_lr: float, min_lr: float = 0.0) -> float:
    """Linear warmup from 0 over ``warmup``, then half-cosine from ``peak_lr`` to ``min_lr`` at
    ``total``, as MAE (``util/lr_sched.adjust_learning_rate``). ``t``, ``total`` and ``warmup`` in
    one unit: optimizer steps (pretraining) or fractional epochs (fine-tuning, evaluated at
    every optimizer step); the one schedule of both."""
    if warmup > 0 and t < warmup:
        return peak_lr * t / warmup
    span = total - warmup
    frac = min(1.0, (t - warmup) / span) if span > 0 else 1.0
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
