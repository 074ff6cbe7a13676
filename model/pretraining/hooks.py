"""What a pretraining run does besides training: logging, checkpoints, panels, probes.

:class:`Hooks` is called by the loop after each optimizer step (``after_step``) and after each
epoch or partial epoch (``after_epoch``); it decides from ``cfg["train"]`` what is due.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from model.pretraining import checkpoint as ckpt
from model.pretraining.config import ConfigError
from model.pretraining.engine import NonFiniteLossError, Run
from model.pretraining.data import build_dataset
from model.pretraining.distributed import all_gather_objects


def _state_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def save_checkpoint(run: Run, name: str) -> None:
    """Collective: gathers every rank's RNG state; rank 0 writes ``output_dir/name`` atomically.
    Refuses (on every rank) to write non-finite parameters."""
    rng = all_gather_objects(ckpt.rng_state(), run.world)
    if not _state_finite(run.model):   # on every rank (replicas are equal): none is left waiting
        raise NonFiniteLossError(f"parameters became non-finite by step "
                                 f"{run.state['global_step']}; not overwriting {name}")
    if not run.main:
        return
    ckpt.save_atomic({
        "format": ckpt.CHECKPOINT_FORMAT, "version": ckpt.CHECKPOINT_VERSION,
        "model": run.model.state_dict(), "model_name": run.cfg["model"]["name"],
        "model_config": ckpt.model_config_dict(run.model),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.fp16 else {},
        "lr": run.optimizer.param_groups[0]["lr"], **run.state, "rng": rng, "config": run.cfg,
        "derived": run.derived, "world_size": run.world,
    }, os.path.join(run.output_dir, name))


def _due(every: "int | None", step: int) -> bool:
    return bool(every) and step % every == 0


class Hooks:
    """Progress bar, log.jsonl, the caller's ``on_step``, checkpoints, panels and probes, each at
    the steps or epochs ``cfg["train"]`` asks for.

    Checkpoints: ``last.pt`` (the resume point) every ``save_last_every_steps`` steps and at each
    epoch end; a periodic checkpoint every ``save_every_epochs`` epochs (``checkpoint-EEEE.pt``)
    or, when ``save_every_steps`` > 0, every that many steps (``checkpoint-stepSSSSSSS.pt``; then
    no epoch-end saves, for runs whose epochs are a few steps). Each run's end saves both. A
    periodic checkpoint is a hard link to the ``last.pt`` just written (no second write); only the
    last ``keep_checkpoints`` of its kind are kept (0 = all). Panels: every
    ``panels_every_epochs`` epochs, or every ``panels_every_steps`` steps when that is > 0, and at
    the end."""

    def __init__(self, run: Run, panel_dataset=None,
                 on_step: "Callable[[dict], None] | None" = None):
        t = run.cfg["train"]
        self.run, self.t, self.on_step, self.bar = run, t, on_step, None
        self.save_steps, self.panel_steps = t["save_every_steps"] or 0, t["panels_every_steps"] or 0
        self.saved_at, self.periodic_at, self.panels_at = -1, -1, -1  # steps already written
        self.panels = None
        if run.main and ((t["panels_every_epochs"] or 0) > 0 or self.panel_steps > 0):
            from model.pretraining.panels import PanelWriter

            pds = panel_dataset if panel_dataset is not None else dataset_for_panels(
                run.cfg, run.dataset)
            self.panels = PanelWriter(pds, t["panel_images"],
                                      os.path.join(run.output_dir, "panels"), seed=t["seed"])
        self.probe_every = t["probe_every_epochs"] or 0
        self.probe_sets = (build_probe_sets(run.cfg) if run.main and self.probe_every > 0
                           else None)

    # ------------------------------------------------------------------------- actions
    def save(self, periodic: "str | None" = None) -> None:
        """last.pt (once per step), and the named periodic checkpoint linked to it."""
        run, step = self.run, self.run.state["global_step"]
        if self.saved_at != step:
            save_checkpoint(run, ckpt.LAST)
            self.saved_at = step
        if periodic is None or self.periodic_at == step:
            return
        self.periodic_at = step
        if run.main:
            path = os.path.join(run.output_dir, periodic)
            ckpt.link_or_copy(os.path.join(run.output_dir, ckpt.LAST), path)
            ckpt.prune_periodic(run.output_dir, "step" if self.save_steps else "epoch",
                                self.t["keep_checkpoints"] or 0, protect=path)

    def write_panels(self) -> None:
        run, step = self.run, self.run.state["global_step"]
        if self.panels is None or self.panels_at == step:
            return
        self.panels_at = step
        self.panels.write(run.model, f"epoch{run.state['epoch']:04d}-step{step}",
                          progress=step / run.sched.total_steps)
        run.model.train()

    # ------------------------------------------------------------------------- per step
    def start_epoch(self, epoch: int) -> None:
        run = self.run
        if run.main and self.t["progress_bar"]:
            from tqdm import tqdm

            self.bar = tqdm(total=run.sched.steps_per_epoch,
                            initial=run.state["step_in_epoch"] // run.sched.accum,
                            desc=f"epoch {epoch}", unit="step", dynamic_ncols=True, leave=False)

    def after_step(self, rec: dict, epoch_ends: bool) -> None:
        step, every_log = rec["step"], self.t["log_every_steps"]
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{rec['lr']:.2e}",
                                 img_s=f"{rec['img_per_s']:.1f}")
        if step % every_log == 0:
            self.run.logger.log(rec, echo=self.bar is None or step % (every_log * 10) == 0)
        if self.on_step is not None:
            self.on_step(rec)
        if self.save_steps:
            if _due(self.save_steps, step):
                self.save(ckpt.step_name(step))
            elif _due(self.t["save_last_every_steps"], step):
                self.save()
        elif _due(self.t["save_last_every_steps"], step) and not epoch_ends:
            self.save()  # (the epoch end saves anyway)
        if _due(self.panel_steps, step):
            self.write_panels()

    # ------------------------------------------------------------------------- per epoch
    def after_epoch(self, complete: bool) -> None:
        """After an epoch (``complete``) or the partial epoch that ends the run."""
        run, t = self.run, self.t
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        step, ep_done = run.state["global_step"], run.state["epoch"]  # epochs completed
        done = step >= run.sched.total_steps
        if self.save_steps:
            if done:
                self.save(ckpt.step_name(step))
        else:
            every = t["save_every_epochs"]
            periodic = complete and every and (ep_done % every == 0 or done)
            self.save(ckpt.epoch_name(ep_done) if periodic else None)
        epoch_panels = (not self.panel_steps and complete
                        and _due(t["panels_every_epochs"], ep_done))
        if epoch_panels or done:
            self.write_panels()
        if self.probe_sets is not None and ((complete and ep_done % self.probe_every == 0)
                                            or done):
            run.logger.log_probe(step, ep_done,
                                 run_probe(run.model, self.probe_sets, run.device, run.cfg))
            run.model.train()


def build_probe_sets(cfg: dict):
    """(train, val) probe sets, eval transform: the val split's images when configured, else a
    disjoint class-balanced holdout of the train split."""
    from model.pretraining.probes import holdout_split

    n, seed = cfg["train"]["probe_per_class"], cfg["train"]["seed"]
    train_ds = build_dataset(cfg, train=False)
    if cfg["data"]["val_split"]:
        return train_ds, build_dataset(cfg, train=False, split=cfg["data"]["val_split"])
    return holdout_split(train_ds, n, seed)


def run_probe(model, probe_sets, dev, cfg: dict) -> dict:
    """k-NN (k=20, cosine) and linear-probe top-1/top-5 of the encoder's RGB features."""
    from model.pretraining.probes import run_probes

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
