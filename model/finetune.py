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
and redoes the epoch it was killed in exactly (``model.finetuning.resume``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from model.finetuning.classifier import (FINETUNED_FORMAT, create_classifier, load_finetuned,
                                         read_encoder, save_finetuned, topk_counts)
from model.finetuning.config import accum_steps, load_finetune_config, scaled_lr
from model.finetuning.data import ImageFolderSplit, eval_transform, train_transform
from model.finetuning.engine import (eval_json_path, finetune_parser, make_criterion, make_loader,
                                     make_mixup, make_optimizer, run_cli, run_epochs, write_json)
from model.finetuning.resume import check_file, check_image_root, resume, start_output
from model.pretraining.config import ConfigError
from model.pretraining.distributed import amp_dtype, init_distributed

CHECKPOINT = "checkpoint.pth"


def build_parser() -> argparse.ArgumentParser:
    p = finetune_parser("python -m model.finetune", __doc__.split("\n")[0],
                        "encoder .safetensors (model.export) or pretraining checkpoint "
                        "(default: none, random initialisation)", "out/finetune",
                        "fine-tuned checkpoint")
    p.add_argument("--imagenet-root", help="folder with <train_split>/ and <val_split>/ wnid "
                                           "dirs (data.imagenet_root; required)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


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


def cli(argv=None) -> int:
    """``python -m model.finetune``: exit 2 with one line for what the user must fix."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
