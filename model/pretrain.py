"""C2FMAE pretraining (paper IV-A): one CPU process or DDP through torchrun, exact resume.

    python -m model.pretrain --config pretrain_tiny --data ROOT --output-dir OUT
    torchrun --nproc_per_node=8 -m model.pretrain --config pretrain_vit_base_400ep \
        --data ROOT --imagenet-root /imagenet --output-dir OUT

Each optimizer step sees ``total_batch`` images: ``batch_per_gpu`` per process per forward pass,
``accum_steps`` forward/backward passes (no DDP all-reduce until the last one, ``no_sync``).
The lr (warmup + cosine) and the masking curriculum (``progress = global_step / total_steps``)
are pure functions of the optimizer step, so a resumed run recomputes them exactly. Resume also
restores the sampler position inside the epoch and every RNG; see docs/PRETRAIN.md for what is
exact with data-loading workers.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from typing import Callable

import torch
import torch.distributed as dist

from . import checkpoint as ckpt
from .config import ConfigError, derive, dump_yaml, load_config
from .optim import build_optimizer, lr_at, set_lr
from .pretrain_utils import (Logger, ResumableSampler, all_gather_objects, autocast_ctx,
                             check_replicas, init_distributed, make_loader, param_digest,
                             to_device)

__all__ = ["train", "main", "build_dataset", "NonFiniteLossError", "param_digest"]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the run stops without saving it."""


# ----------------------------------------------------------------------------- data
def build_dataset(cfg: dict, train: bool, split: "str | None" = None):
    """The multi-granular dataset with the run's crop/flip augmentation (or the eval resize +
    centre crop with ``train=False``, for the panels)."""
    from c2fmae_data import ImageNetMultiGranular
    from c2fmae_data.transforms import EvalTransform, TrainTransform

    d = cfg["data"]
    if not d["root"]:
        raise ConfigError("no dataset: pass --data ROOT (or set data.root)")
    size, stride, k = d["img_size"], d["mask_stride"], d["max_instances"]
    if train:
        tf = TrainTransform(size, stride, scale=tuple(d["crop_scale"]),
                            flip_p=0.5 if d["hflip"] else 0.0, max_instances=k)
    else:
        tf = EvalTransform(size, stride, resize=round(size * 256 / 224), max_instances=k)
    return ImageNetMultiGranular(d["root"], d["imagenet_root"], split=split or d["split"],
                                 transform=tf, size=size, stride=stride, max_instances=k,
                                 on_error=d["on_error"])


# ----------------------------------------------------------------------------- the run
def build_run_model(cfg: dict):
    from .c2fmae import build_model

    return build_model(cfg["model"]["name"], **(cfg["model"]["overrides"] or {}))


def _state_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def train(cfg: dict, output_dir: str, *, resume: "str | None" = "auto", dataset=None,
          panel_dataset=None, device: str = "auto",
          on_step: "Callable[[dict], None] | None" = None) -> torch.nn.Module:
    """Pretrain per ``cfg`` into ``output_dir``; returns the (unwrapped) model.

    ``resume``: "auto" continues from ``output_dir/last.pt`` when present, a path resumes from
    that checkpoint, None starts fresh. ``on_step(record)`` is called on every rank after each
    optimizer step with the logged values."""
    rank, world, dev = init_distributed(cfg, device)
    main = rank == 0
    os.makedirs(output_dir, exist_ok=True)
    o, t = cfg["optim"], cfg["train"]
    derived = derive(cfg, world)
    accum, peak_lr = derived["accum_steps"], derived["lr"]

    ckpt.seed_everything(t["seed"])  # identical init on every rank
    model = build_run_model(cfg).to(dev)
    mc, d = getattr(model, "config", None), cfg["data"]
    for key, data_key in (("img_size", "img_size"), ("mask_stride", "mask_stride"),
                          ("max_instances", "max_instances")):
        if mc is not None and getattr(mc, key, d[data_key]) != d[data_key]:
            raise ConfigError(f"data.{data_key}={d[data_key]} but the model has {key}="
                              f"{getattr(mc, key)}; set model.overrides.{key} to match")
    optimizer = build_optimizer(model, peak_lr, o["weight_decay"], o["betas"])
    autocast, fp16 = autocast_ctx(cfg, dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=fp16)

    dataset = dataset if dataset is not None else build_dataset(cfg, train=True)
    sampler = ResumableSampler(dataset, world, rank, t["seed"])
    steps_per_epoch = (len(sampler) // o["batch_per_gpu"]) // accum
    if steps_per_epoch == 0:
        raise ConfigError(f"dataset of {len(dataset)} images is smaller than one optimizer step "
                          f"of total_batch {o['total_batch']} images")
    total_steps = t["max_steps"] or o["epochs"] * steps_per_epoch
    warmup_steps = round(total_steps * o["warmup_epochs"] / o["epochs"])
    n_epochs = math.ceil(total_steps / steps_per_epoch)

    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0}
    resume_path = ckpt.find_resume(output_dir) if resume == "auto" else resume
    if resume_path:
        ck = ckpt.load(resume_path)
        ckpt.unwrap(model).load_state_dict(ck["model"], strict=True)
        optimizer.load_state_dict(ck["optimizer"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        state = {k: int(ck[k]) for k in state}
        # step_in_epoch counts micro-batches of the saved run; another world size has another
        # accumulation, so carry over the optimizer steps done (each one is total_batch images)
        old_accum = int((ck.get("derived") or {}).get("accum_steps", accum))
        state["step_in_epoch"] = state["step_in_epoch"] // old_accum * accum
        if len(ck["rng"]) == world:
            ckpt.set_rng_state(ck["rng"][rank])
        else:  # another world size: the sample order stays, the random streams cannot
            ckpt.seed_everything(t["seed"] + 7919 * state["global_step"] + rank)
            if main:
                print(f"resume: checkpoint from {len(ck['rng'])} process(es), now {world}; "
                      "RNG streams reseeded", flush=True)
        if main:
            print(f"resumed from {resume_path} at epoch {state['epoch']} step "
                  f"{state['global_step']}", flush=True)
    else:
        ckpt.seed_everything(t["seed"] + rank)  # masking / augmentation differ per rank

    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=t["find_unused_parameters"])
    else:
        ddp = model
    logger = Logger(output_dir, main)
    if main:
        with open(os.path.join(output_dir, "config.yaml"), "w") as f:
            f.write(dump_yaml(cfg))
        print(f"pretrain: {cfg['model']['name']} on {dev}, {world} process(es), "
              f"batch {o['batch_per_gpu']} x {world} x accum {accum} = {o['total_batch']}, "
              f"lr {peak_lr:.3e}, {steps_per_epoch} steps/epoch, {total_steps} steps, "
              f"warmup {warmup_steps}", flush=True)

    panels = None
    if main and (t["panels_every_epochs"] or 0) > 0:
        from .panels import PanelWriter

        pds = panel_dataset if panel_dataset is not None else dataset_for_panels(cfg, dataset)
        panels = PanelWriter(pds, t["panel_images"], os.path.join(output_dir, "panels"),
                             seed=t["seed"])

    probe_every = t["probe_every_epochs"] or 0
    probe_sets = build_probe_sets(cfg) if main and probe_every > 0 else None

    def save(name: str) -> None:
        rng = all_gather_objects(ckpt.rng_state(), world)
        if not _state_finite(model):   # on every rank (replicas are equal): none is left waiting
            raise NonFiniteLossError(f"parameters became non-finite by step "
                                     f"{state['global_step']}; not overwriting {name}")
        if not main:
            return
        ckpt.save_atomic({
            "format": ckpt.CHECKPOINT_FORMAT, "version": ckpt.CHECKPOINT_VERSION,
            "model": ckpt.unwrap(model).state_dict(), "model_name": cfg["model"]["name"],
            "model_config": ckpt.model_config_dict(model), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if fp16 else {}, "lr": optimizer.param_groups[0]["lr"],
            **state, "rng": rng, "config": cfg, "derived": derived, "world_size": world,
        }, os.path.join(output_dir, name))

    imgs_per_step = o["batch_per_gpu"] * world * accum
    pin = dev.type == "cuda" and cfg["data"]["pin_memory"]
    model.train()
    while state["global_step"] < total_steps and state["epoch"] < n_epochs:
        epoch = state["epoch"]
        sampler.set_epoch(epoch)
        sampler.set_start(state["step_in_epoch"] * o["batch_per_gpu"])
        loader = make_loader(dataset, sampler, cfg, epoch, rank, pin)
        micro_total = steps_per_epoch * accum
        bar = None
        if main and t["progress_bar"]:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, initial=state["step_in_epoch"] // accum,
                       desc=f"epoch {epoch}", unit="step", dynamic_ncols=True, leave=False)
        sums, t0, micro = None, time.perf_counter(), state["step_in_epoch"]
        for batch in loader:
            if micro >= micro_total or state["global_step"] >= total_steps:
                break
            step = state["global_step"]
            progress = step / total_steps
            lr = lr_at(step, total_steps, warmup_steps, peak_lr, o["min_lr"])
            set_lr(optimizer, lr)
            last_micro = (micro + 1) % accum == 0
            sync = ddp.no_sync() if world > 1 and not last_micro else contextlib.nullcontext()
            batch = to_device(batch, dev)
            with sync:
                with autocast:
                    out = ddp(batch, progress=progress)
                scaler.scale(out["loss"] / accum).backward()
            vals = torch.stack([out["loss"].detach().float()] +
                               [out["losses"][k].detach().float() for k in sorted(out["losses"])])
            sums = vals if sums is None else sums + vals
            micro += 1
            if not last_micro:
                continue
            stats = sums / accum
            if world > 1:
                dist.all_reduce(stats)
                stats /= world
            stats, sums = stats.tolist(), None
            scaler.unscale_(optimizer)
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), o["clip_grad"] or math.inf)
            gn = float(gn)
            if not math.isfinite(stats[0]) or (not fp16 and not math.isfinite(gn)):
                what = "loss" if not math.isfinite(stats[0]) else "gradient norm"
                raise NonFiniteLossError(
                    f"non-finite {what} (loss={stats[0]}, grad_norm={gn}) at step {step + 1} "
                    f"(epoch {epoch}); stopping. The last good checkpoint is kept: "
                    f"{ckpt.find_resume(output_dir) or 'none written yet'}")
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            state["global_step"] += 1
            state["step_in_epoch"] = micro
            dt = time.perf_counter() - t0
            t0 = time.perf_counter()
            rec = {"step": state["global_step"], "epoch": epoch, "loss": stats[0],
                   "losses": dict(zip(sorted(out["losses"]), stats[1:])), "lr": lr,
                   "grad_norm": gn, "progress": progress, "img_per_s": imgs_per_step / dt}
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{stats[0]:.4f}", lr=f"{lr:.2e}",
                                img_s=f"{rec['img_per_s']:.1f}")
            if state["global_step"] % t["log_every_steps"] == 0:
                logger.log(rec, echo=bar is None or state["global_step"] % (
                    t["log_every_steps"] * 10) == 0)
            if on_step is not None:
                on_step(rec)
            every = t["save_last_every_steps"]
            if every and state["global_step"] % every == 0 and micro < micro_total:
                save(ckpt.LAST)
        if bar is not None:
            bar.close()
        done = state["global_step"] >= total_steps
        if micro >= micro_total:
            state["epoch"], state["step_in_epoch"] = epoch + 1, 0
        ep_done = state["epoch"]  # epochs completed
        save(ckpt.LAST)
        if micro >= micro_total and t["save_every_epochs"] and (
                ep_done % t["save_every_epochs"] == 0 or done):
            save(ckpt.epoch_name(ep_done))
        if panels is not None and ((micro >= micro_total and
                                    ep_done % t["panels_every_epochs"] == 0) or done):
            panels.write(ckpt.unwrap(model), f"epoch{ep_done:04d}-step{state['global_step']}",
                         progress=state["global_step"] / total_steps)
            model.train()
        if probe_sets is not None and ((micro >= micro_total and ep_done % probe_every == 0)
                                       or done):
            logger.log_probe(state["global_step"], ep_done,
                             run_probe(ckpt.unwrap(model), probe_sets, dev, cfg))
            model.train()
    logger.close()
    check_replicas(model, rank, world)
    if main:
        print(f"pretrain: done at step {state['global_step']}; checkpoints in {output_dir}",
              flush=True)
    return ckpt.unwrap(model)


def build_probe_sets(cfg: dict):
    """(train, val) probe sets, eval transform: the val split's images when configured, else a
    disjoint class-balanced holdout of the train split."""
    from .probes import holdout_split

    n, seed = cfg["train"]["probe_per_class"], cfg["train"]["seed"]
    train_ds = build_dataset(cfg, train=False)
    if cfg["data"]["val_split"]:
        return train_ds, build_dataset(cfg, train=False, split=cfg["data"]["val_split"])
    return holdout_split(train_ds, n, seed)


def run_probe(model, probe_sets, dev, cfg: dict) -> dict:
    """k-NN (k=20, cosine) and linear-probe top-1/top-5 of the encoder's RGB features."""
    from .probes import run_probes

    model.eval()
    return run_probes(lambda b: model.rgb_features(b["rgb"].to(dev)), *probe_sets,
                      per_class=cfg["train"]["probe_per_class"], seed=cfg["train"]["seed"],
                      batch_size=cfg["optim"]["batch_per_gpu"])


def dataset_for_panels(cfg: dict, train_dataset):
    """Fixed validation images, without augmentation (val split when configured)."""
    try:
        return build_dataset(cfg, train=False, split=cfg["data"]["val_split"])
    except ConfigError:
        return train_dataset


# ----------------------------------------------------------------------------- CLI
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="pretrain_tiny",
                   help="YAML path or shipped name (model/configs/): pretrain_vit_base_400ep, "
                        "pretrain_vit_base_1600ep, pretrain_vit_small, pretrain_tiny, "
                        "pretrain_demo")
    p.add_argument("--data", help="dataset root (data.root)")
    p.add_argument("--imagenet-root", help="ImageNet folder for non-self-contained datasets")
    p.add_argument("--output-dir", required=True, help="checkpoints, log.jsonl, panels/")
    p.add_argument("--resume", default="auto",
                   help="'auto' (OUTPUT/last.pt if present), a checkpoint path, or 'none'")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    flags = {"--epochs": ("optim.epochs", int), "--warmup-epochs": ("optim.warmup_epochs", int),
             "--total-batch": ("optim.total_batch", int),
             "--batch-per-gpu": ("optim.batch_per_gpu", int),
             "--base-lr": ("optim.base_lr", float), "--lr": ("optim.lr", float),
             "--max-steps": ("train.max_steps", int), "--seed": ("train.seed", int),
             "--num-workers": ("data.num_workers", int), "--amp": ("train.amp", str),
             "--model": ("model.name", str)}
    for flag, (key, typ) in flags.items():
        p.add_argument(flag, type=typ, help=f"sets {key}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.panels_every_epochs=5")
    p.add_argument("--print-config", action="store_true", help="print the final config and exit")
    args = p.parse_args(argv)
    args.overrides = [f"{key}={getattr(args, flag[2:].replace('-', '_'))}"
                      for flag, (key, _) in flags.items()
                      if getattr(args, flag[2:].replace("-", "_")) is not None]
    if args.data:
        args.overrides.append(f"data.root={args.data}")
    if args.imagenet_root:
        args.overrides.append(f"data.imagenet_root={args.imagenet_root}")
    args.overrides += args.set
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_yaml(cfg))
        return 0
    resume = None if args.resume == "none" else args.resume
    try:
        train(cfg, args.output_dir, resume=resume, device=args.device)
    except (NonFiniteLossError, ConfigError, ckpt.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
