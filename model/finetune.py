"""ImageNet-1K fine-tuning of a pretrained C2FMAE encoder (paper Sec. IV-A, Table I).

    torchrun --nproc_per_node=8 -m model.finetune --config finetune_vitb_400ep \
        --pretrained encoder.safetensors --imagenet-root /data/imagenet --output-dir out/ft
    python -m model.finetune --eval-only --checkpoint out/ft/checkpoint.pth --imagenet-root ...

The recipe is MAE's end-to-end fine-tuning built from timm parts: RandAugment + random erasing
(``create_transform``), Mixup/CutMix with label smoothing (``timm.data.Mixup`` +
``SoftTargetCrossEntropy``), layer-wise lr decay groups (``timm.optim.param_groups_layer_decay``),
drop path, global average pooling, AdamW with a per-iteration warmup + cosine schedule.
After every evaluation, top-1 / top-5 on the val split go to ``<checkpoint>_eval.json`` next to
``checkpoint.pth``; ``log.jsonl`` holds one line per epoch. A run restarts from its
``checkpoint.pth`` (model, optimizer, epoch, step counter) when one exists in the output dir,
and redoes the epoch it was killed in exactly (``model.finetune_resume``).
"""
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

from model.config import ConfigError, shipped_configs
from model.finetune_config import accum_steps, load_finetune_config, scaled_lr
from model.finetune_data import ImageFolderSplit, eval_transform, train_transform
from model.finetune_model import (FINETUNED_FORMAT, create_classifier, layer_decay_groups,
                                  load_finetuned, read_encoder, save_finetuned, topk_counts)
from model.finetune_resume import (check_file, check_image_root, resume, seed_epoch,
                                   start_output)
from model.optim import lr_at
from model.pretrain_utils import amp_dtype, init_distributed

CHECKPOINT = "checkpoint.pth"


# ----------------------------------------------------------------------------- process setup
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


# ----------------------------------------------------------------------------- the loop
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


# ----------------------------------------------------------------------------- entry
def finetune_parser(prog: str, pretrained_help: str, out_default: str, checkpoint_help: str
                    ) -> argparse.ArgumentParser:
    """The options both fine-tuning entry points share (this one and model.multigranular_ft)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
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


def parse_args(argv=None):
    p = finetune_parser("python -m model.finetune",
                        "encoder .safetensors (model.export) or pretraining checkpoint "
                        "(default: none, random initialisation)", "out/finetune",
                        "fine-tuned checkpoint")
    p.add_argument("--imagenet-root", help="folder with <train_split>/ and <val_split>/ wnid "
                                           "dirs (data.imagenet_root; required)")
    return p.parse_args(argv)


def read_pretrained(path: str):
    from safetensors import SafetensorError

    try:
        return read_encoder(path)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
        raise ConfigError(f"--pretrained {path}: {e}") from None


def image_split(root: str, split: str, transform, limit) -> ImageFolderSplit:
    try:
        return ImageFolderSplit(os.path.join(root, split), transform=transform, limit=limit)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--imagenet-root {root}: {e}") from None


def main(argv=None) -> dict:
    """Fine-tune (or ``--eval-only``); returns the last epoch's stats. User errors raise
    ConfigError before anything is written (``cli`` prints them as one line, exit 2)."""
    args = parse_args(argv)
    cfg = load_finetune_config(args.config, args.overrides)
    if args.imagenet_root:
        cfg["data"]["imagenet_root"] = args.imagenet_root
    root = check_image_root(cfg, args.eval_only)
    ckpt = args.checkpoint or os.path.join(args.output_dir, CHECKPOINT)
    if args.eval_only:
        check_file("--checkpoint", ckpt)
    elif args.pretrained:
        check_file("--pretrained", args.pretrained)
    rank, world, device = init_distributed(cfg)
    torch.manual_seed(cfg["train"]["seed"] + rank)
    dtype = amp_dtype(cfg, device)
    m, d = cfg["model"], cfg["data"]
    log = print if rank == 0 else (lambda *a, **k: None)
    model = ck = None
    if args.eval_only:  # the checkpoint's resolution wins over the config's
        model, ck = load_finetuned(ckpt)
        m = {**m, "img_size": int(ck["timm_kwargs"].get("img_size", m["img_size"]))}
    val_ds = image_split(root, d["val_split"], eval_transform(m["img_size"], d["eval_crop_pct"]),
                         d["limit_val"])
    val_loader = make_loader(val_ds, cfg["optim"]["batch_per_gpu"], False, cfg, world, rank)

    if args.eval_only:
        stats = topk_counts(model.to(device), val_loader, device, amp_dtype=dtype)
        stats.update(checkpoint=os.path.abspath(ckpt), split=d["val_split"], epoch=ck.get("epoch"))
        if rank == 0:
            write_json(eval_json_path(ckpt), stats)
        log(json.dumps(stats))
        return stats
    return fit(args, cfg, root, val_loader, rank, world, device, dtype, log)


def fit(args, cfg: dict, root: str, val_loader, rank: int, world: int, device, dtype,
        log) -> dict:
    """The training epochs, resumed from OUTPUT_DIR/checkpoint.pth when it exists."""
    m, d = cfg["model"], cfg["data"]
    weights = read_pretrained(args.pretrained) if args.pretrained else None
    train_ds = image_split(root, d["train_split"], train_transform(m["img_size"], cfg["aug"]),
                           d["limit_train"])
    train_loader = make_loader(train_ds, cfg["optim"]["batch_per_gpu"], True, cfg, world, rank,
                               cfg["train"]["seed"])
    accum = accum_steps(cfg, world)
    if len(train_loader) < accum:
        raise ConfigError(f"--imagenet-root {root}: {len(train_ds)} training images are fewer "
                          f"than one optimizer step (optim.total_batch "
                          f"{cfg['optim']['total_batch']} over {world} process(es))")
    if weights is None:
        log("no --pretrained: training from random initialisation")
    model = create_classifier(weights, m["num_classes"], m["img_size"], m["drop_path"],
                              m["timm_name"], m["timm_kwargs"]).to(device)
    optimizer = make_optimizer(model, cfg)
    if rank == 0:
        start_output(args.output_dir, log)
    ckpt = os.path.join(args.output_dir, CHECKPOINT)
    start, steps = resume(ckpt, model, optimizer, args.output_dir,
                          len(train_loader) // accum, FINETUNED_FORMAT, log)
    arch = model.c2fmae_arch
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index]
                                                          if device.type == "cuda" else None)
        model.c2fmae_arch = arch
    mixup = make_mixup(cfg)
    criterion = make_criterion(cfg, mixup)

    def prepare(batch):
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        return mixup(x, y) if mixup is not None else (x, y)

    log(f"fine-tuning {arch['timm_name']} on {len(train_ds)} images, {world} process(es), "
        f"accum {accum}, peak lr {scaled_lr(cfg):.3g}, from {getattr(weights, 'source', None)}")
    return run_epochs(cfg, model, optimizer, train_loader, criterion, prepare, device, dtype,
                      accum, start, steps, lambda: topk_counts(model, val_loader, device,
                                                               amp_dtype=dtype),
                      lambda extra: save_finetuned(ckpt, model, extra), args.output_dir, ckpt,
                      rank, log)


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


def cli(argv=None, entry=None) -> int:
    """``python -m model.finetune`` (or ``entry``, e.g. the multi-granular main): exit 2 with one
    line for what the user must fix."""
    try:
        (entry or main)(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
