"""One pretraining epoch, in the shape of MAE's ``engine_pretrain.train_one_epoch``.

``train_one_epoch(run, loader, epoch, after_step)`` runs the micro-batches of one epoch: for each
one the lr and the masking progress of the current optimizer step, a forward pass under autocast
and a backward pass (DDP all-reduce only on the last micro-batch of an accumulation, ``no_sync``);
every ``accum`` micro-batches one optimizer step (grad-norm clipping, non-finite check, AdamW step)
and ``after_step(record, epoch_ends)``; after the epoch's last step ``run.state`` already points
at the start of the next epoch, so whatever a hook saves resumes there. Everything it trains with is a :class:`Run`, built by
``model.pretrain.build_run``; checkpoints, panels and probes are hooks (``model.pretraining.hooks``).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from model.pretraining import checkpoint as ckpt
from model.pretraining.optim import lr_at, set_lr
from model.pretraining.data import to_device
from model.pretraining.logs import Logger


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the run stops without saving it."""


@dataclass
class Schedule:
    """The run's length and lr in optimizer steps; lr and progress are pure functions of the step,
    so a resumed run recomputes them exactly."""
    steps_per_epoch: int      # optimizer steps per epoch
    total_steps: int
    warmup_steps: int
    accum: int                # micro-batches (forward/backward passes) per optimizer step
    peak_lr: float
    min_lr: float

    @property
    def micro_per_epoch(self) -> int:
        return self.steps_per_epoch * self.accum

    @property
    def n_epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def lr(self, step: int) -> float:
        return lr_at(step, self.total_steps, self.warmup_steps, self.peak_lr, self.min_lr)

    def progress(self, step: int) -> float:
        """The masking curriculum's position, ``global_step / total_steps``."""
        return step / self.total_steps


@dataclass
class Run:
    """Everything the loop trains with (one per process)."""
    cfg: dict
    output_dir: str
    model: torch.nn.Module        # the bare model
    ddp: torch.nn.Module          # DistributedDataParallel(model), or the model itself
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: Any                 # a reusable autocast (or null) context
    fp16: bool                    # fp16 autocast: the GradScaler is active
    device: torch.device
    rank: int
    world: int
    derived: dict
    sched: Schedule
    dataset: Any
    sampler: Any                  # None for a stream (an IterableDataset orders itself)
    state: dict                   # epoch, step_in_epoch (micro-batches), global_step
    logger: "Logger | None" = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def finished(self) -> bool:
        return (self.state["global_step"] >= self.sched.total_steps
                or self.state["epoch"] >= self.sched.n_epochs)


def mask_generator(run: Run, step: int, micro: int) -> torch.Generator:
    """The masking RNG of one micro-batch, a pure function of (seed, optimizer step, micro-batch
    within the step, rank): a resumed run draws the same masks whatever RNG state it restored."""
    seed = ((run.cfg["train"]["seed"] * 1_000_003 + step) * 4099 + micro % run.sched.accum) \
        * 65_537 + run.rank
    return torch.Generator(device=run.device).manual_seed(seed % (2 ** 63))


def forward_backward(run: Run, batch: dict, progress: float, last_micro: bool,
                     generator: "torch.Generator | None" = None) -> dict:
    """One micro-batch: forward under autocast, backward of ``loss / accum``."""
    sync = (run.ddp.no_sync() if run.world > 1 and not last_micro
            else contextlib.nullcontext())
    batch = to_device(batch, run.device)
    with sync:
        with run.autocast:
            out = run.ddp(batch, progress=progress, generator=generator)
        run.scaler.scale(out["loss"] / run.sched.accum).backward()
    return out


def loss_vector(out: dict) -> torch.Tensor:
    """[total, task losses in sorted name order], detached fp32."""
    return torch.stack([out["loss"].detach().float()] +
                       [out["losses"][k].detach().float() for k in sorted(out["losses"])])


def optimizer_step(run: Run, stats: torch.Tensor, step: int, epoch: int) -> "tuple[list, float]":
    """Average the accumulated stats over ranks, clip, check finiteness, step AdamW.
    Returns (stats as a list, gradient norm before clipping)."""
    if run.world > 1:
        dist.all_reduce(stats)
        stats /= run.world
    stats = stats.tolist()
    clip = run.cfg["optim"]["clip_grad"]
    run.scaler.unscale_(run.optimizer)
    gn = float(torch.nn.utils.clip_grad_norm_(run.model.parameters(), clip or math.inf))
    if not math.isfinite(stats[0]) or (not run.fp16 and not math.isfinite(gn)):
        what = "loss" if not math.isfinite(stats[0]) else "gradient norm"
        raise NonFiniteLossError(
            f"non-finite {what} (loss={stats[0]}, grad_norm={gn}) at step {step + 1} "
            f"(epoch {epoch}); stopping. The last good checkpoint is kept: "
            f"{ckpt.find_resume(run.output_dir) or 'none written yet'}")
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    return stats, gn


def train_one_epoch(run: Run, loader, epoch: int,
                    after_step: "Callable[[dict, bool], None] | None" = None) -> bool:
    """Train from ``run.state["step_in_epoch"]`` to the end of the epoch (or of the run).
    Updates ``run.state`` after each optimizer step (to ``epoch + 1``, step 0 after the epoch's
    last one); returns whether the epoch is complete."""
    s, st = run.sched, run.state
    imgs_per_step = run.cfg["optim"]["batch_per_gpu"] * run.world * s.accum
    sums, t0, micro = None, time.perf_counter(), st["step_in_epoch"]
    for batch in loader:
        if micro >= s.micro_per_epoch or st["global_step"] >= s.total_steps:
            break
        step = st["global_step"]
        progress, lr = s.progress(step), s.lr(step)
        set_lr(run.optimizer, lr)
        last_micro = (micro + 1) % s.accum == 0
        out = forward_backward(run, batch, progress, last_micro, mask_generator(run, step, micro))
        vals = loss_vector(out)
        sums = vals if sums is None else sums + vals
        micro += 1
        if not last_micro:
            continue
        stats, gn = optimizer_step(run, sums / s.accum, step, epoch)
        sums = None
        st["global_step"] += 1
        epoch_ends = micro >= s.micro_per_epoch
        st["epoch"], st["step_in_epoch"] = (epoch + 1, 0) if epoch_ends else (epoch, micro)
        now = time.perf_counter()
        rec = {"step": st["global_step"], "epoch": epoch, "loss": stats[0],
               "losses": dict(zip(sorted(out["losses"]), stats[1:])), "lr": lr,
               "grad_norm": gn, "progress": progress, "img_per_s": imgs_per_step / (now - t0)}
        t0 = now
        if after_step is not None:
            after_step(rec, epoch_ends)
    return micro >= s.micro_per_epoch
