"""Multi-granular fine-tuning: RGB + instance + semantic inputs (Table I, dagger row).

    torchrun --nproc_per_node=8 -m model.multigranular_ft --config finetune_vitb_400ep \
        --pretrained pretrain_out/last.pt --data MG_ROOT --imagenet-root /imagenet --output-dir OUT
    python -m model.multigranular_ft --eval-only --checkpoint OUT/checkpoint.pth --data MG_ROOT ...

The pretrained C2FMAE is rebuilt from its pretraining checkpoint with its input adapters (RGB patch
projection, per-pixel class embeddings of the instance and semantic maps, granularity
embeddings); the decoder and reconstruction heads are dropped. Every token of every granularity is
visible (``model.encode(batch, visible=None)``); the classifier is avg-pool over all tokens ->
the encoder's ``fc_norm`` -> a linear head (trunc normal, std 2e-5). Images, maps and labels come
from ``ImageNetMultiGranular`` (train: joint random-resized crop + flip of the three; val: resize +
center crop), so the val split's labels are read from the dataset.

Same recipe and config files as ``model.finetune`` (layer decay over the encoder blocks with the
adapters in the stem, warmup + cosine AdamW, drop path, label smoothing) with one difference:
pixel-blending Mixup has no meaning for label maps, so only CutMix is used, with one box cut
consistently out of the RGB image and both maps (box on the map grid, scaled by the stride);
the RGB-only augmentations RandAugment / random erasing are not applied (they would desynchronise
pixels and maps). Fine-tuning runs at the pretraining resolution. CutMix draws from numpy's
global generator, as timm's Mixup, so a rerun resumes like ``model.finetune``
(``model.finetuning.resume``: epoch checkpoints with the step counter, every epoch seeded from
(seed, epoch, rank)).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from timm.data.mixup import cutmix_bbox_and_lam, mixup_target
from timm.layers import trunc_normal_

from model.pretraining.config import ConfigError
from model.finetuning.engine import (eval_json_path, finetune_parser, make_loader,
                                     make_optimizer, run_cli, run_epochs, write_json)
from model.finetuning.config import accum_steps, load_finetune_config, scaled_lr
from model.finetuning.classifier import HEAD_INIT_STD, topk_counts
from model.finetuning.resume import check_file, resume, start_output
from model.pretraining.data import check_data_paths
from model.pretraining.distributed import amp_dtype, init_distributed

FORMAT = "c2fmae-multigranular-classifier"
MAPS = ("instance", "semantic")


class MultiGranularClassifier(torch.nn.Module):
    """C2FMAE adapters + encoder, all tokens visible, avg pool, fc_norm, linear head."""

    def __init__(self, c2f: torch.nn.Module, num_classes: int):
        super().__init__()
        c2f.decoder = torch.nn.Identity()   # pretraining-only parts
        c2f.heads = torch.nn.ModuleDict()
        self.c2f = c2f
        self.head = torch.nn.Linear(c2f.config.embed_dim, num_classes)
        trunc_normal_(self.head.weight, std=HEAD_INIT_STD)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, batch: dict) -> torch.Tensor:
        tokens = self.c2f.encode(batch, visible=None)  # B x (1 + 3N) x D, class token first
        return self.head(self.c2f.encoder.fc_norm(tokens[:, 1:].mean(dim=1)))

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm layer groups: adapters + embeddings = stem, block i = i + 1, norms/head last."""
        return {"stem": r"^c2f\.(?:adapters|gran_embed)|^c2f\.encoder\.(?:cls_token|pos_embed|patch_embed)",
                "blocks": [(r"^c2f\.encoder\.blocks\.(\d+)", None),
                           (r"^c2f\.encoder\.norm", (99999,))]}

    def no_weight_decay(self) -> set:
        return {"c2f.encoder.pos_embed", "c2f.encoder.cls_token"} | {
            f"c2f.gran_embed.{g}" for g in self.c2f.gran_embed}


def build_classifier(pretrained: str, num_classes: int, drop_path: float) -> MultiGranularClassifier:
    """Rebuild the C2FMAE of a pretraining checkpoint with ``drop_path`` and load it strictly."""
    from model.network.c2fmae import C2FMAEConfig, C2FMAE, build_model
    from model.pretraining.checkpoint import load

    ck = load(pretrained)
    if ck.get("model_config") is not None:
        c2f = C2FMAE(C2FMAEConfig.from_dict({**ck["model_config"], "drop_path_rate": drop_path}))
    else:
        m = ck.get("config", {}).get("model", {})
        c2f = build_model(ck.get("model_name") or m["name"],
                          **{**m.get("overrides", {}), "drop_path_rate": drop_path})
    c2f.load_state_dict(ck["model"], strict=True)
    missing = [g for g in ("rgb", *MAPS) if g not in c2f.inputs]
    if missing:
        raise ValueError(f"{pretrained} was pretrained without the {missing} input(s); "
                         "multi-granular fine-tuning needs rgb, instance and semantic adapters")
    return MultiGranularClassifier(c2f, num_classes)


def consistent_cutmix(batch: dict, alpha: float, num_classes: int, smoothing: float,
                      stride: int, rng=np.random) -> dict:
    """CutMix (batch mode, pair = flipped batch) applied to RGB and both maps with one box.
    lambda from ``rng`` (a Generator, or numpy's global one); the box from numpy's global
    generator (timm's ``rand_bbox``)."""
    y = batch["label"]
    lam = float(rng.beta(alpha, alpha))
    m = batch["instance"]
    (y0, y1, x0, x1), lam = cutmix_bbox_and_lam(m.shape, lam, correct_lam=True)  # map grid
    out = dict(batch)
    for g, s in (("rgb", stride), ("instance", 1), ("semantic", 1)):
        t = batch[g].clone()
        t[..., y0 * s:y1 * s, x0 * s:x1 * s] = batch[g].flip(0)[..., y0 * s:y1 * s, x0 * s:x1 * s]
        out[g] = t
    out["target"] = mixup_target(y, num_classes, lam, smoothing)
    return out


def save(path: str, model, extra: dict) -> None:
    from model.pretraining.checkpoint import save_atomic

    m = getattr(model, "module", model)
    save_atomic({"format": FORMAT, "model": m.state_dict(), "num_classes": m.head.out_features,
                 "model_config": m.c2f.config.to_dict(), **extra}, path)


def load_classifier(path: str) -> "tuple[MultiGranularClassifier, dict]":
    from model.network.c2fmae import C2FMAE, C2FMAEConfig

    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ValueError(f"{path} is not a classifier written by model.multigranular_ft")
    model = MultiGranularClassifier(C2FMAE(C2FMAEConfig.from_dict(ck["model_config"])),
                                    ck["num_classes"])
    model.load_state_dict(ck["model"], strict=True)
    return model, ck


def make_dataset(args, split: str, train: bool, c, limit):
    """The multi-granular split at the pretrained model's size, mask stride and instance cap;
    errors that a flag fixes are ConfigErrors naming it."""
    from c2fmae_data import ImageNetMultiGranular
    from c2fmae_data.format.schema import FormatError

    try:
        ds = ImageNetMultiGranular(args.data, args.imagenet_root, split,
                                   transform="train" if train else "eval", size=c.img_size,
                                   stride=c.mask_stride, max_instances=c.max_instances)
    except (FormatError, ValueError) as e:
        raise ConfigError(f"--data {args.data}: {e}") from None
    if not args.imagenet_root and not ds.manifest.get("self_contained", False):
        raise ConfigError(f"--data {args.data} holds labels only (no image bytes): pass "
                          "--imagenet-root DIR, the folder its keys are relative to")
    return torch.utils.data.Subset(ds, range(min(limit, len(ds)))) if limit else ds


def build_parser() -> argparse.ArgumentParser:
    p = finetune_parser("python -m model.multigranular_ft", __doc__.split("\n")[0],
                        "pretraining checkpoint (model.pretrain last.pt); required unless "
                        "--eval-only", "out/finetune_mg", "classifier")
    p.add_argument("--data", required=True, help="multi-granular dataset root (manifest.json)")
    p.add_argument("--imagenet-root", help="image folder when the dataset does not embed images "
                                           "(default: none)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def check_inputs(args) -> str:
    """Paths the run reads, checked before anything is written; returns the checkpoint path."""
    check_data_paths({"root": args.data, "imagenet_root": args.imagenet_root})
    ckpt = args.checkpoint or os.path.join(args.output_dir, "checkpoint.pth")
    if args.eval_only:
        check_file("--checkpoint", ckpt)
    elif not args.pretrained:
        raise ConfigError("--pretrained (a pretraining checkpoint, model.pretrain last.pt) is "
                          "required")
    else:
        check_file("--pretrained", args.pretrained)
    return ckpt


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = load_finetune_config(args.config, args.overrides)
    ckpt = check_inputs(args)
    rank, world, device = init_distributed(cfg)
    torch.manual_seed(cfg["train"]["seed"] + rank)
    dtype, d = amp_dtype(cfg, device), cfg["data"]
    log = print if rank == 0 else (lambda *x, **k: None)
    if args.eval_only:
        model, _ = load_classifier(ckpt)
    else:
        try:
            model = build_classifier(args.pretrained, cfg["model"]["num_classes"],
                                     cfg["model"]["drop_path"])
        except (ValueError, RuntimeError, KeyError) as e:  # CheckpointError is a RuntimeError
            raise ConfigError(f"--pretrained {args.pretrained}: {e}") from None
    c = model.c2f.config
    model.to(device)
    to_dev = (lambda b: {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                         for k, v in b.items()})
    val_ds = make_dataset(args, d["val_split"], False, c, d["limit_val"])
    val_loader = make_loader(val_ds, cfg["optim"]["batch_per_gpu"], False, cfg, world, rank)
    evaluate = (lambda net: topk_counts(net, val_loader, device, amp_dtype=dtype,
                                        forward=lambda b: net({**to_dev(b)})))
    if args.eval_only:
        stats = {**evaluate(model), "checkpoint": os.path.abspath(ckpt), "split": d["val_split"]}
        if rank == 0:
            write_json(eval_json_path(ckpt), stats)
        log(json.dumps(stats))
        return stats
    return fit(args, cfg, model, to_dev, lambda: evaluate(model), ckpt, rank, world, device,
               dtype, log)


def fit(args, cfg: dict, model, to_dev, evaluate, ckpt: str, rank: int, world: int, device,
        dtype, log) -> dict:
    """The training epochs, resumed from the output dir's checkpoint.pth when it exists."""
    d, a, c = cfg["data"], cfg["aug"], model.c2f.config
    train_ds = make_dataset(args, d["train_split"], True, c, d["limit_train"])
    train_loader = make_loader(train_ds, cfg["optim"]["batch_per_gpu"], True, cfg, world, rank,
                               cfg["train"]["seed"])
    accum = accum_steps(cfg, world)
    if len(train_loader) < accum:
        raise ConfigError(f"--data {args.data}: {len(train_ds)} training samples are fewer than "
                          f"one optimizer step (optim.total_batch {cfg['optim']['total_batch']})")
    optimizer = make_optimizer(model, cfg)
    if rank == 0:
        start_output(args.output_dir, log)
    start, steps = resume(ckpt, model, optimizer, args.output_dir, len(train_loader) // accum,
                          FORMAT, log)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    use_cutmix, smooth = a["cutmix"] > 0, a["smoothing"]

    def criterion(logits, target):
        if target.ndim == 2:  # soft targets from CutMix (smoothing included)
            return torch.sum(-target * torch.log_softmax(logits.float(), -1), -1).mean()
        return torch.nn.functional.cross_entropy(logits.float(), target, label_smoothing=smooth)

    def prepare(batch):
        b = to_dev(batch)
        if use_cutmix and np.random.random() < a["mixup_prob"]:
            b = consistent_cutmix(b, a["cutmix"], cfg["model"]["num_classes"], smooth,
                                  c.mask_stride)
            return b, b["target"]
        return b, b["label"]

    log(f"multi-granular fine-tuning on {len(train_ds)} samples, accum {accum}, "
        f"peak lr {scaled_lr(cfg):.3g}, from {args.pretrained}")
    return run_epochs(cfg, net, optimizer, train_loader, criterion, prepare, device, dtype,
                      accum, start, steps, evaluate, lambda extra: save(ckpt, model, extra),
                      args.output_dir, ckpt, rank, log)


def cli(argv=None) -> int:
    """``python -m model.multigranular_ft``: exit 2 with one line for what the user must fix."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
