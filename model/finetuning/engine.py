"""The fine-tuning loop both entry points share (``model.finetune``: RGB, ``model.multigranular_ft``):
loaders, Mixup/CutMix and the criterion, layer-decay AdamW, ``train_one_epoch`` (per-iteration
warmup + cosine lr, gradient accumulation), the epoch loop with evaluation and saving, and the
shared options and one-line error exit of their CLIs."""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from model.finetuning.classifier import layer_decay_groups
from model.finetuning.config import scaled_lr
from model.finetuning.resume import seed_epoch
from model.pretraining.config import ConfigError, shipped_configs
from model.pretraining.optim import lr_at


def make_loader(ds, batch: int, train: bool, cfg: dict, world: int, rank: int, seed: int = 0):
    sampler = None
    if world > 1 and train:
        sampler = torch.utils.data.DistributedSampler(ds, world, rank, shuffle=True, seed=seed)
    elif world > 1:  # evaluation: a strided shard per rank, no padding duplicates -> exact counts
        ds = torch.utils.data.Subset(ds, range(rank, len(ds), world))
    g = torch.Generator().manual_seed(seed)
    d = cfg["data"]
    return torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=train and sampler is None, sampler=sampler, generator=g,
        num_workers=d["num_workers"], pin_memory=d["pin_memory"] and torch.cuda.is_available(),
        drop_last=train, persistent_workers=d["num_workers"] > 0 and not train)  # see seed_epoch


def make_mixup(cfg: dict):
    """timm Mixup/CutMix (labels -> smoothed soft targets) or None when both alphas are 0."""
    a = cfg["aug"]
    if a["mixup"] <= 0 and a["cutmix"] <= 0:
        return None
    return Mixup(mixup_alpha=a["mixup"], cutmix_alpha=a["cutmix"], prob=a["mixup_prob"],
                 switch_prob=a["mixup_switch_prob"], mode=a["mixup_mode"],
                 label_smoothing=a["smoothing"], num_classes=cfg["model"]["num_classes"])


def make_criterion(cfg: dict, mixup) -> torch.nn.Module:
    if mixup is not None:
        return SoftTargetCrossEntropy()  # smoothing is inside the mixed targets
    if cfg["aug"]["smoothing"] > 0:
        return LabelSmoothingCrossEntropy(cfg["aug"]["smoothing"])
    return torch.nn.CrossEntropyLoss()


def make_optimizer(model, cfg: dict) -> torch.optim.Optimizer:
    o = cfg["optim"]
    groups = layer_decay_groups(model, o["weight_decay"], o["layer_decay"])
    return torch.optim.AdamW(groups, lr=scaled_lr(cfg), betas=tuple(o["betas"]))


def train_one_epoch(model, loader, optimizer, criterion, cfg: dict, epoch: int, device,
                    prepare, accum: int = 1, dtype=None, log=print, step0: int = 0) -> dict:
    """One epoch; ``prepare(batch) -> (inputs, targets)`` on device (mixup applied there).
    The lr is set per optimizer step: ``lr_at(epoch + i / len) x lr_scale`` of each group."""
    o = cfg["optim"]
    model.train()
    peak, n_it = scaled_lr(cfg), len(loader)
    clip, every = cfg["optim"]["clip_grad"], cfg["train"]["log_every_steps"]
    max_steps, steps, total, seen = cfg["train"]["max_steps"], step0, 0.0, 0
    usable = n_it - n_it % accum   # a trailing partial accumulation would never be stepped
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(loader):
        if i >= usable:
            break
        if i % accum == 0:
            lr = lr_at(epoch + i / n_it, o["epochs"], o["warmup_epochs"], peak, o["min_lr"])
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
        x, y = prepare(batch)
        # DDP all-reduces gradients only on the micro-batch that ends an accumulation
        sync = model.no_sync() if ddp and (i + 1) % accum else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = criterion(model(x), y)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at epoch {epoch} iteration {i}")
            (loss / accum).backward()
        total, seen = total + value, seen + 1
        if (i + 1) % accum == 0:
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            if every and steps % every == 0:
                log(f"epoch {epoch} it {i + 1}/{n_it} loss {value:.4f} lr {lr:.3g}")
            if max_steps and steps >= max_steps:
                break
    return {"train_loss": total / max(seen, 1), "lr": lr if seen else 0.0, "steps": steps}


def eval_json_path(checkpoint: str) -> str:
    root, _ = os.path.splitext(checkpoint)
    return root + "_eval.json"


def end_epoch(cfg: dict, epoch: int, tr: dict, t0: float, evaluate, save, output_dir: str,
              ckpt: str, val_split: str, rank: int, log) -> "tuple[dict, bool]":
    """The end of a fine-tuning epoch: evaluate when due (and at the last epoch), save and record
    on rank 0, log. Returns (stats, whether this was the last epoch)."""
    max_steps = cfg["train"]["max_steps"]
    last = epoch + 1 == cfg["optim"]["epochs"] or bool(max_steps and tr["steps"] >= max_steps)
    stats = {"epoch": epoch, **tr, "epoch_time_s": round(time.time() - t0, 2)}
    if last or (epoch + 1) % cfg["train"]["eval_every_epochs"] == 0:
        stats.update(evaluate())
    if rank == 0:
        save()
        record_epoch(output_dir, ckpt, stats, val_split)
    log(json.dumps(stats))
    return stats, last


def record_epoch(output_dir: str, ckpt: str, stats: dict, val_split: str) -> None:
    """One ``log.jsonl`` line per epoch; the top-1/top-5 JSON next to the checkpoint when the
    epoch was evaluated."""
    with open(os.path.join(output_dir, "log.jsonl"), "a") as f:
        f.write(json.dumps(stats) + "\n")
    if "top1" in stats:
        write_json(eval_json_path(ckpt), {**stats, "checkpoint": os.path.abspath(ckpt),
                                          "split": val_split})


def write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def run_epochs(cfg: dict, model, optimizer, loader, criterion, prepare, device, dtype,
               accum: int, start: int, steps: int, evaluate, save, output_dir: str, ckpt: str,
               rank: int, log) -> dict:
    """Epochs ``start``.. of a fine-tuning run (RGB or multi-granular): each seeded from
    (seed, epoch, rank), trained, evaluated when due, saved with the step counter."""
    stats: dict = {}
    max_steps = cfg["train"]["max_steps"]
    for epoch in range(start, cfg["optim"]["epochs"]):
        if max_steps and steps >= max_steps:
            break
        seed_epoch(loader, cfg["train"]["seed"], epoch, rank)
        t0 = time.time()
        tr = train_one_epoch(model, loader, optimizer, criterion, cfg, epoch, device,
                             prepare, accum, dtype, log, steps)
        steps = tr["steps"]
        stats, last = end_epoch(
            cfg, epoch, tr, t0, evaluate,
            lambda: save({"optimizer": optimizer.state_dict(), "epoch": epoch, "steps": steps,
                          "config": cfg}),
            output_dir, ckpt, cfg["data"]["val_split"], rank, log)
        if last:
            break
    return stats


def finetune_parser(prog: str, description: str, pretrained_help: str, out_default: str,
                    checkpoint_help: str) -> argparse.ArgumentParser:
    """The options both fine-tuning entry points share (model.finetune, model.multigranular_ft)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", default="finetune_vitb_400ep",
                   help="YAML path or shipped name (model/configs/): "
                        f"{', '.join(shipped_configs('finetune'))} (default: %(default)s)")
    p.add_argument("--pretrained", help=pretrained_help)
    p.add_argument("--output-dir", default=out_default,
                   help="checkpoint.pth, its _eval.json, log.jsonl (default: %(default)s)")
    p.add_argument("--eval-only", action="store_true", help="evaluate --checkpoint, no training")
    p.add_argument("--checkpoint", help=f"{checkpoint_help} for --eval-only "
                                        "(default: OUTPUT_DIR/checkpoint.pth)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set optim.epochs=1 (repeatable)")
    return p


def run_cli(main, argv=None) -> int:
    """Run a fine-tuning ``main``: exit 2 with one line for what the user must fix."""
    try:
        main(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0
