"""The fine-tuning classifier: a timm VisionTransformer initialised from a pretrained encoder.

Pretrained weights come from either
- an encoder ``.safetensors`` written by ``python -m model.export`` (a state dict for
  ``timm.create_model(name, num_classes=0, global_pool="avg", **kwargs)``, name and kwargs in the
  file's metadata), or
- a pretraining checkpoint (``last.pt`` / ``checkpoint-EEEE.pt`` of ``python -m model.train``),
  from which the C2FMAE model is rebuilt and its ``export_encoder_state_dict()`` taken, so both
  paths give identical weights.

``create_classifier`` builds the timm model with ``num_classes`` and drop path, interpolates the
position embeddings when the fine-tuning resolution differs (timm's ``resample_abs_pos_embed``),
loads the encoder with ``strict`` key checks (only the new head may be missing) and re-initialises
the head small (trunc normal, std 2e-5, as MAE).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.optim import param_groups_layer_decay

DEFAULT_TIMM_NAME = "vit_base_patch16_224"
HEAD_INIT_STD = 2e-5  # MAE's fine-tuning head init
FINETUNED_FORMAT = "c2fmae-finetuned-classifier"


@dataclass
class EncoderWeights:
    state_dict: "dict[str, torch.Tensor]"
    timm_name: str = DEFAULT_TIMM_NAME
    timm_kwargs: "dict[str, Any]" = field(default_factory=dict)
    source: str = ""


def read_encoder(path: str) -> EncoderWeights:
    """Encoder weights + timm architecture from an export (.safetensors) or a pretraining ckpt."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"pretrained encoder {path} does not exist")
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    return _read_pretrain_checkpoint(path)


def _read_safetensors(path: str) -> EncoderWeights:
    """An export of ``model.export`` (metadata ``timm_model`` + ``timm_kwargs``); a plain ViT
    state dict without that metadata gets its sizes inferred from the tensor shapes."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    sd = load_file(path)
    if "patch_embed.proj.weight" not in sd:
        raise ValueError(f"{path} holds no ViT encoder (no patch_embed.proj.weight)")
    name = meta.get("timm_model") or DEFAULT_TIMM_NAME
    kwargs = json.loads(meta["timm_kwargs"]) if meta.get("timm_kwargs") else infer_timm_kwargs(sd)
    return EncoderWeights(sd, name, kwargs, source=path)


def _read_pretrain_checkpoint(path: str) -> EncoderWeights:
    """Rebuild the C2FMAE model of a pretraining checkpoint (strict) and export its encoder."""
    from model.pretraining.checkpoint import build_from_checkpoint, load as load_checkpoint

    model = build_from_checkpoint(load_checkpoint(path)).eval()
    name, kwargs = model.timm_encoder_name()
    return EncoderWeights(model.export_encoder_state_dict(), name, dict(kwargs), source=path)


def infer_timm_kwargs(sd: "dict[str, torch.Tensor]") -> "dict[str, Any]":
    """Architecture of a plain ViT state dict without metadata (heads assumed 64-dim)."""
    w = sd["patch_embed.proj.weight"]
    dim, patch = w.shape[0], w.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    grid = int(round((sd["pos_embed"].shape[1] - 1) ** 0.5))
    return {"embed_dim": dim, "depth": depth, "num_heads": max(1, dim // 64), "patch_size": patch,
            "img_size": grid * patch}


def create_classifier(weights: "EncoderWeights | None", num_classes: int, img_size: int,
                      drop_path: float = 0.1, timm_name: str = DEFAULT_TIMM_NAME,
                      timm_kwargs: "dict | None" = None) -> torch.nn.Module:
    """timm ViT (global avg pool, fc_norm) for ``num_classes``, encoder from ``weights``."""
    name = weights.timm_name if weights else timm_name
    kwargs = dict(weights.timm_kwargs if weights else (timm_kwargs or {}))
    kwargs.update(num_classes=num_classes, global_pool="avg", drop_path_rate=drop_path,
                  img_size=img_size)
    model = timm.create_model(name, pretrained=False, **kwargs)
    if weights is not None:
        load_encoder_into(model, weights)
    trunc_normal_(model.head.weight, std=HEAD_INIT_STD)
    torch.nn.init.zeros_(model.head.bias)
    model.c2fmae_arch = {"timm_name": name, "timm_kwargs": kwargs}
    return model


def load_encoder_into(model: torch.nn.Module, weights: EncoderWeights) -> None:
    """Load an encoder state dict, resampling pos_embed; any key mismatch besides head.* fails."""
    sd = dict(weights.state_dict)
    pe = sd.get("pos_embed")
    if pe is not None and pe.shape != model.pos_embed.shape:
        npt = 0 if model.no_embed_class else model.num_prefix_tokens
        old = int(round((pe.shape[1] - npt) ** 0.5))
        sd["pos_embed"] = resample_abs_pos_embed(pe, list(model.patch_embed.grid_size),
                                                 old_size=[old, old], num_prefix_tokens=npt)
    for k in [k for k in sd if k.startswith("head.")]:
        sd.pop(k)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ValueError(f"encoder {weights.source or '<state dict>'} does not fit "
                         f"{weights.timm_name}: missing keys {missing}, unexpected keys {unexpected}")


def layer_decay_groups(model: torch.nn.Module, weight_decay: float, layer_decay: float) -> list:
    """timm's layer-wise lr decay groups (BEiT/MAE): block i gets decay^(depth - i), the stem
    decay^(depth + 1), norms + head 1.0; no weight decay on 1-D params, pos_embed, cls_token."""
    nwd = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    return param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=layer_decay,
                                    no_weight_decay_list=nwd)


# --------------------------------------------------------------------- evaluation + checkpoints
@torch.no_grad()
def topk_counts(model, loader, device, class_subset: "list[int] | None" = None,
                amp_dtype: "torch.dtype | None" = None, forward=None) -> "dict[str, float]":
    """Top-1 / top-5 accuracy (%) of ``model`` on ``loader``; with ``class_subset`` (ImageNet-A/R)
    the logits are restricted to those classes and labels index into the subset. Counts are
    summed over processes when torch.distributed is initialised."""
    model.eval()
    sub = torch.as_tensor(class_subset, device=device) if class_subset is not None else None
    c1 = c5 = n = 0
    for batch in loader:
        x, y = (batch["rgb"], batch["label"]) if isinstance(batch, dict) else batch
        y = torch.as_tensor(y).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = forward(batch) if forward else model(x.to(device, non_blocking=True))
        logits = logits.float()
        if sub is not None:
            logits = logits[:, sub]
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top == y[:, None]
        c1 += int(hit[:, 0].sum())
        c5 += int(hit.any(1).sum())
        n += int(y.numel())
    t = torch.tensor([c1, c5, n], dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    c1, c5, n = t.tolist()
    return {"top1": 100.0 * c1 / max(n, 1), "top5": 100.0 * c5 / max(n, 1), "num_images": int(n)}


def save_finetuned(path: str, model: torch.nn.Module, extra: "dict | None" = None) -> None:
    """A self-describing fine-tuned classifier (timm name + kwargs + weights), atomically."""
    from model.pretraining.checkpoint import save_atomic

    m = getattr(model, "module", model)
    obj = {"format": FINETUNED_FORMAT, "model": m.state_dict(), **m.c2fmae_arch}
    obj.update(extra or {})
    save_atomic(obj, path)


def load_finetuned(path: str, map_location="cpu") -> "tuple[torch.nn.Module, dict]":
    """Rebuild a classifier saved by ``save_finetuned``; returns (model, the checkpoint dict)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ck = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != FINETUNED_FORMAT:
        raise ValueError(f"{path} is not a fine-tuned classifier written by model.finetune")
    kwargs = dict(ck["timm_kwargs"])
    kwargs["drop_path_rate"] = 0.0
    model = timm.create_model(ck["timm_name"], pretrained=False, **kwargs)
    model.load_state_dict(ck["model"], strict=True)
    model.c2fmae_arch = {"timm_name": ck["timm_name"], "timm_kwargs": ck["timm_kwargs"]}
    return model, ck
