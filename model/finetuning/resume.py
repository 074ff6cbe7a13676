"""What makes a fine-tuning run resumable and reproducible, for ``model.finetune`` (RGB) and
``model.multigranular_ft``; and the checks of its inputs, made before anything is written.

Fine-tuning saves ``checkpoint.pth`` at every epoch end (model, optimizer, ``epoch``, ``steps``:
the optimizer steps done). A rerun of the same command continues with the next epoch and the
same step counter. Every random stream of an epoch is a pure function of ``(seed, epoch,
rank)``: at the start of each epoch :func:`seed_epoch` seeds python's ``random`` (timm's
RandAugment and random erasing), numpy's global generator (timm's ``Mixup`` / CutMix draws
lambda, the box and the mode from it), torch (crops, flips, drop path) and the train loader's
generator (the shuffle without DDP, and the DataLoader workers' base seed: the workers start
afresh each epoch, ``persistent_workers=False``, as MAE). An epoch redone after a kill thus draws
exactly what the uninterrupted run drew, with any number of loader workers.
"""
from __future__ import annotations

import os

import torch

from model.pretraining import checkpoint as ckpt
from model.pretraining.config import ConfigError
from model.pretraining.logs import truncate_log


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return seed * 1_000_003 + epoch * 1009 + rank


def seed_epoch(loader, seed: int, epoch: int, rank: int) -> None:
    """Seed every generator an epoch draws from, and the loader's order, from (seed, epoch,
    rank)."""
    s = epoch_seed(seed, epoch, rank)
    ckpt.seed_everything(s)
    if isinstance(loader.sampler, torch.utils.data.DistributedSampler):
        loader.sampler.set_epoch(epoch)   # the order: seed + epoch, the same on every rank
    if loader.generator is not None:      # the RandomSampler's order, the workers' seeds
        loader.generator.manual_seed(s)


def resume(path: str, model: torch.nn.Module, optimizer, output_dir: str, steps_per_epoch: int,
           fmt: str, log=print) -> "tuple[int, int]":
    """Restore ``path`` (when it exists) into model and optimizer; returns (first epoch to run,
    optimizer steps done). The epoch records a killed run logged after its checkpoint are
    dropped from log.jsonl."""
    if not os.path.exists(path):
        return 0, 0
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != fmt or "optimizer" not in ck:
        raise ConfigError(f"--output-dir {output_dir}: {os.path.basename(path)} is not a "
                          f"resumable {fmt} checkpoint; pass another --output-dir")
    getattr(model, "module", model).load_state_dict(ck["model"], strict=True)
    optimizer.load_state_dict(ck["optimizer"])
    epoch = int(ck["epoch"])
    steps = int(ck.get("steps", (epoch + 1) * steps_per_epoch))  # older files: full epochs
    dropped = truncate_log(os.path.join(output_dir, "log.jsonl"), epoch, key="epoch")
    log(f"resumed from {path} at epoch {epoch + 1}, step {steps}"
        + (f"; dropped {dropped} log.jsonl record(s) of redone epochs" if dropped else ""))
    return epoch + 1, steps


def check_file(flag: str, path: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"{flag} {path}: no such file")


def check_image_root(cfg: dict, eval_only: bool) -> str:
    """The ImageNet-layout folder with the splits this run reads; errors name the flag."""
    d = cfg["data"]
    root = d["imagenet_root"]
    if not root:
        raise ConfigError("no image folder: pass --imagenet-root DIR (data.imagenet_root)")
    if not os.path.isdir(root):
        raise ConfigError(f"--imagenet-root {root}: no such folder")
    keys = ("val_split",) if eval_only else ("train_split", "val_split")
    for key in keys:
        if not os.path.isdir(os.path.join(root, d[key])):
            raise ConfigError(f"--imagenet-root {root} has no {d[key]}/ folder (data.{key}; "
                              f"choose another with --set data.{key}=NAME)")
    return root


def start_output(output_dir: str, log=print) -> None:
    """Create the output dir; remove temporaries of checkpoint writes that a kill left."""
    os.makedirs(output_dir, exist_ok=True)
    for p in ckpt.clean_stale_temps(output_dir):
        log(f"removed {p}: the temporary of a write that was killed")
