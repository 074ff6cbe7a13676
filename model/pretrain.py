r"""C2FMAE pretraining (paper IV-A): one CPU process or DDP through torchrun, exact resume.

    python -m model.pretrain --config pretrain_tiny --data ROOT --output-dir OUT
    torchrun --nproc_per_node=8 -m model.pretrain --config pretrain_vit_base_400ep \
        --data ROOT --imagenet-root /imagenet --output-dir OUT

Each optimizer step sees ``total_batch`` images: ``batch_per_gpu`` per process per forward pass,
``accum_steps`` forward/backward passes (no DDP all-reduce until the last one, ``no_sync``).
The lr (warmup + cosine) and the masking curriculum (``progress = global_step / total_steps``)
are pure functions of the optimizer step, so a resumed run recomputes them exactly. Resume also
restores the sampler position inside the epoch and every RNG; see docs/PRETRAIN.md for what is
exact with data-loading workers. Data: the map-style dataset through a shard-window or global
shuffle (``data.shard_window``), or the stream (``data.loader: stream``) in trainer mode.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset

from c2fmae_data.format.schema import FormatError
from c2fmae_data.loading.source import SampleError

from model.pretraining import checkpoint as ckpt
from model.pretraining.config import ConfigError, derive, dump_yaml, load_config
from model.pretraining.optim import build_optimizer
from model.pretraining.engine import NonFiniteLossError, Run, Schedule, train_one_epoch
from model.pretraining.hooks import Hooks, build_probe_sets, dataset_for_panels  # noqa: F401
from model.pretraining.data import build_dataset, build_sampler, make_loader
from model.pretraining.distributed import (autocast_ctx, check_replicas, init_distributed,
                                           param_digest)
from model.pretraining.logs import Logger

__all__ = ["train", "main", "build_dataset", "build_run", "NonFiniteLossError", "param_digest"]


# ----------------------------------------------------------------------------- setup
def build_run_model(cfg: dict):
    from model.network.c2fmae import build_model

    return build_model(cfg["model"]["name"], **(cfg["model"]["overrides"] or {}))


def check_model_fits_data(model, cfg: dict) -> None:
    mc, d = getattr(model, "config", None), cfg["data"]
    for key in ("img_size", "mask_stride", "max_instances"):
        if mc is not None and getattr(mc, key, d[key]) != d[key]:
            raise ConfigError(f"data.{key}={d[key]} but the model has {key}="
                              f"{getattr(mc, key)}; set model.overrides.{key} to match")


def make_schedule(cfg: dict, samples_per_rank: int, accum: int, peak_lr: float) -> Schedule:
    o, t = cfg["optim"], cfg["train"]
    steps_per_epoch = (samples_per_rank // o["batch_per_gpu"]) // accum
    if steps_per_epoch == 0:
        raise ConfigError(f"dataset of {samples_per_rank} images per process is smaller than "
                          f"one optimizer step of total_batch {o['total_batch']} images")
    total_steps = t["max_steps"] or o["epochs"] * steps_per_epoch
    return Schedule(steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                    warmup_steps=round(total_steps * o["warmup_epochs"] / o["epochs"]),
                    accum=accum, peak_lr=peak_lr, min_lr=o["min_lr"])


def stream_samples_per_rank(cfg: dict, dataset, rank: int, world: int) -> int:
    """Samples per epoch of one rank of a streaming dataset in trainer mode: every (rank, worker)
    reader yields the same whole number of batches in every epoch."""
    if not hasattr(dataset, "batches_per_reader"):
        raise ConfigError(f"{type(dataset).__name__}: an IterableDataset without "
                          "set_batching / batches_per_reader cannot resume exactly")
    if dataset.rank is None or dataset.world_size is None:
        dataset.rank, dataset.world_size = rank, world
    b, workers = cfg["optim"]["batch_per_gpu"], max(1, cfg["data"]["num_workers"])
    if len(dataset.units) < world * workers:
        raise ConfigError(f"data.loader=stream: {len(dataset.units)} row groups for {world} "
                          f"process(es) x {workers} worker(s); every reader needs at least one "
                          "(fewer --num-workers, or data.loader=map)")
    return dataset.batches_per_reader(b, world, workers) * workers * b


def build_run(cfg: dict, output_dir: str, resume: "str | None", dataset=None,
              device: str = "auto") -> Run:
    """Model, optimizer, scaler, sampler and schedule; restored from a checkpoint when
    ``resume`` is "auto" (and output_dir/last.pt exists) or a path."""
    rank, world, dev = init_distributed(cfg, device)
    o, seed = cfg["optim"], cfg["train"]["seed"]
    derived = derive(cfg, world)

    ckpt.seed_everything(seed)  # identical init on every rank
    model = build_run_model(cfg).to(dev)
    check_model_fits_data(model, cfg)
    optimizer = build_optimizer(model, derived["lr"], o["weight_decay"], o["betas"])
    autocast, fp16 = autocast_ctx(cfg, dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=fp16)

    dataset = dataset if dataset is not None else build_dataset(cfg, train=True)
    if isinstance(dataset, IterableDataset):
        sampler, per_rank = None, stream_samples_per_rank(cfg, dataset, rank, world)
    else:
        sampler = build_sampler(cfg, dataset, world, rank)
        per_rank = len(sampler)
    sched = make_schedule(cfg, per_rank, derived["accum_steps"], derived["lr"])
    run = Run(cfg=cfg, output_dir=output_dir, model=model, ddp=model, optimizer=optimizer,
              scaler=scaler, autocast=autocast, fp16=fp16, device=dev, rank=rank, world=world,
              derived=derived, sched=sched, dataset=dataset, sampler=sampler,
              state={"epoch": 0, "step_in_epoch": 0, "global_step": 0})

    resume_path = ckpt.find_resume(output_dir) if resume == "auto" else resume
    if resume_path and not os.path.isfile(resume_path):
        raise ConfigError(f"--resume {resume_path}: no such checkpoint file")
    if resume_path:
        restore(run, resume_path)
    else:
        ckpt.seed_everything(seed + rank)  # masking / augmentation differ per rank
    if world > 1:
        run.ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=cfg["train"]["find_unused_parameters"])
    return run


def restore(run: Run, path: str) -> None:
    """Weights, optimizer, scaler, position in the schedule and every RNG from a checkpoint."""
    ck = ckpt.load(path)
    run.model.load_state_dict(ck["model"], strict=True)
    run.optimizer.load_state_dict(ck["optimizer"])
    if ck.get("scaler"):
        run.scaler.load_state_dict(ck["scaler"])
    state = {k: int(ck[k]) for k in run.state}
    # step_in_epoch counts micro-batches of the saved run; another world size has another
    # accumulation, so carry over the optimizer steps done (each one is total_batch images)
    accum = run.sched.accum
    old_accum = int((ck.get("derived") or {}).get("accum_steps", accum))
    state["step_in_epoch"] = state["step_in_epoch"] // old_accum * accum
    run.state.update(state)
    if len(ck["rng"]) == run.world:
        ckpt.set_rng_state(ck["rng"][run.rank])
    else:  # another world size: the sample order stays, the random streams cannot
        ckpt.seed_everything(run.cfg["train"]["seed"] + 7919 * state["global_step"] + run.rank)
        if run.main:
            print(f"resume: checkpoint from {len(ck['rng'])} process(es), now {run.world}; "
                  "RNG streams reseeded", flush=True)
    if run.main:
        print(f"resumed from {path} at epoch {state['epoch']} step {state['global_step']}",
              flush=True)


def start_output(run: Run) -> None:
    """Rank 0: stale temporaries removed, config.yaml, log.jsonl (records of the steps this run
    redoes dropped, then appended to), and one line describing the run."""
    cfg, o, s = run.cfg, run.cfg["optim"], run.sched
    os.makedirs(run.output_dir, exist_ok=True)
    if run.main:
        for p in ckpt.clean_stale_temps(run.output_dir):
            print(f"removed {p}: the temporary of a write that was killed", flush=True)
    start = run.state["global_step"]
    run.logger = Logger(run.output_dir, run.main, start_step=start)
    if run.main:
        if run.logger.dropped:
            print(f"log.jsonl: dropped {run.logger.dropped} record(s) after step {start}, "
                  "from the earlier run; this run redoes those steps", flush=True)
        with open(os.path.join(run.output_dir, "config.yaml"), "w") as f:
            f.write(dump_yaml(cfg))
        print(f"pretrain: {cfg['model']['name']} on {run.device}, {run.world} process(es), "
              f"batch {o['batch_per_gpu']} x {run.world} x accum {s.accum} = "
              f"{o['total_batch']}, lr {s.peak_lr:.3e}, {s.steps_per_epoch} steps/epoch, "
              f"{s.total_steps} steps, warmup {s.warmup_steps}", flush=True)


def epoch_loader(run: Run, epoch: int):
    """This rank's loader for ``epoch``, starting after the micro-batches already done."""
    done, b = run.state["step_in_epoch"], run.cfg["optim"]["batch_per_gpu"]
    if hasattr(run.dataset, "set_augment_seed"):  # crops/flips from (seed, epoch, sample index)
        run.dataset.set_augment_seed(run.cfg["train"]["seed"], epoch)
    if run.sampler is None:                       # a stream: it skips the batches done itself
        run.dataset.set_epoch(epoch)
        run.dataset.set_batching(b, start=done)
    else:
        run.sampler.set_epoch(epoch)
        run.sampler.set_start(done * b)
    pin = run.device.type == "cuda" and run.cfg["data"]["pin_memory"]
    return make_loader(run.dataset, run.sampler, run.cfg, epoch, run.rank, pin)


# ----------------------------------------------------------------------------- the run
def train(cfg: dict, output_dir: str, *, resume: "str | None" = "auto", dataset=None,
          panel_dataset=None, device: str = "auto",
          on_step: "Callable[[dict], None] | None" = None) -> torch.nn.Module:
    """Pretrain per ``cfg`` into ``output_dir``; returns the (unwrapped) model.

    ``resume``: "auto" continues from ``output_dir/last.pt`` when present, a path resumes from
    that checkpoint, None starts fresh. ``on_step(record)`` is called on every rank after each
    optimizer step with the logged values."""
    run = build_run(cfg, output_dir, resume, dataset, device)
    start_output(run)
    hooks = Hooks(run, panel_dataset, on_step)
    run.model.train()
    while not run.finished():
        epoch = run.state["epoch"]
        loader = epoch_loader(run, epoch)
        hooks.start_epoch(epoch)
        complete = train_one_epoch(run, loader, epoch, hooks.after_step)
        hooks.after_epoch(complete)
    run.logger.close()
    check_replicas(run.model, run.rank, run.world)
    if run.main:
        print(f"pretrain: done at step {run.state['global_step']}; checkpoints in "
              f"{output_dir}", flush=True)
    return run.model


# ----------------------------------------------------------------------------- CLI
#: shortcut flags -> the config key they set
FLAGS = {"--epochs": ("optim.epochs", int), "--warmup-epochs": ("optim.warmup_epochs", int),
         "--total-batch": ("optim.total_batch", int),
         "--batch-per-gpu": ("optim.batch_per_gpu", int),
         "--base-lr": ("optim.base_lr", float), "--lr": ("optim.lr", float),
         "--max-steps": ("train.max_steps", int), "--seed": ("train.seed", int),
         "--num-workers": ("data.num_workers", int), "--amp": ("train.amp", str),
         "--model": ("model.name", str)}


def build_parser() -> argparse.ArgumentParser:
    from model.pretraining.config import shipped_configs

    p = argparse.ArgumentParser(prog="python -m model.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="pretrain_tiny",
                   help="YAML path or shipped name (model/configs/): "
                        f"{', '.join(shipped_configs('pretrain'))} (default: %(default)s)")
    p.add_argument("--data", help="dataset root with manifest.json (data.root; required)")
    p.add_argument("--imagenet-root", help="image folder the keys of a labels-only dataset are "
                                           "relative to (data.imagenet_root; default: none, "
                                           "the dataset embeds its images)")
    p.add_argument("--output-dir", required=True,
                   help="checkpoints, log.jsonl, config.yaml, panels/ (required)")
    p.add_argument("--resume", default="auto",
                   help="'auto' (OUTPUT/last.pt if present), a checkpoint path, or 'none' "
                        "(default: %(default)s)")
    p.add_argument("--device", default="auto",
                   help="auto (cuda when available) | cpu | cuda (default: %(default)s)")
    for flag, (key, typ) in FLAGS.items():
        p.add_argument(flag, type=typ, help=f"sets {key} (default: the config's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.panels_every_epochs=5 "
                        "(repeatable)")
    p.add_argument("--print-config", action="store_true", help="print the final config and exit")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.overrides = [f"{key}={getattr(args, flag[2:].replace('-', '_'))}"
                      for flag, (key, _) in FLAGS.items()
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
    except (ConfigError, ckpt.CheckpointError) as e:  # the user's to fix, before training
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (SampleError, FormatError) as e:  # a data problem found mid-run (one line)
        print(f"error: {e} (--set data.on_error=skip substitutes failing samples)",
              file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0

if __name__ == "__main__":
    sys.exit(main())
