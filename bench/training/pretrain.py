"""Trainer overhead: optimizer steps/s of ``model.pretrain.train`` vs a bare loop over the same
model, optimizer and batches (forward, backward, AdamW step), plus the time of one atomic
checkpoint save. Test-size C2FMAE at 64 px on CPU, in-memory batches, median of several runs.

    python -m bench.training.pretrain
"""
from __future__ import annotations

import os
import tempfile
import time

import torch

from bench.report import median, write_section
from model.pretraining import checkpoint as ckpt
from model.network.c2fmae import build_model
from model.pretraining.config import load_config
from model.pretraining.optim import build_optimizer
from model.pretrain import train

STEPS, BATCH, RUNS = 12, 8, 3
OVR = {"img_size": 64, "num_visible": 12}


class Memory(torch.utils.data.Dataset):
    def __init__(self, n=64):
        g = torch.Generator().manual_seed(0)
        self.rgb = torch.randn(n, 3, 64, 64, generator=g)
        self.ins = torch.randint(0, 6, (n, 16, 16), generator=g)
        self.sem = torch.randint(0, 133, (n, 16, 16), generator=g)

    def __len__(self):
        return len(self.rgb)

    def __getitem__(self, i):
        return {"rgb": self.rgb[i], "instance": self.ins[i], "semantic": self.sem[i]}


def bare(ds) -> float:
    torch.manual_seed(0)
    m = build_model("c2fmae_vit_test", **OVR)
    opt = build_optimizer(m, 1e-3, 0.05)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True)
    stamps, n = [], 0
    while n < STEPS:
        for b in loader:
            out = m(b, progress=n / STEPS)
            out["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            n += 1
            stamps.append(time.perf_counter())
            if n == STEPS:
                break
    return (STEPS - 1) / (stamps[-1] - stamps[0])  # steady state: from the end of step 1


def trainer(ds) -> float:
    cfg = load_config("pretrain_demo", [
        "model.overrides.img_size=64", "model.overrides.num_visible=12", "data.img_size=64",
        f"optim.batch_per_gpu={BATCH}", f"optim.total_batch={BATCH}", f"train.max_steps={STEPS}",
        "train.log_every_steps=1", "train.save_last_every_steps=0", "train.panels_every_epochs=0",
        "train.save_every_epochs=0"])
    stamps = []
    with tempfile.TemporaryDirectory() as d:
        train(cfg, d, resume=None, dataset=ds, on_step=lambda rec: stamps.append(
            time.perf_counter()))
    return (STEPS - 1) / (stamps[-1] - stamps[0])


def save_time(name: str) -> float:
    m = build_model(name)
    opt = build_optimizer(m, 1e-3, 0.05)
    for p in m.parameters():  # AdamW state as after a step
        if p.requires_grad:
            opt.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p),
                            "exp_avg_sq": torch.zeros_like(p)}
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        ckpt.save_atomic({"model": m.state_dict(), "optimizer": opt.state_dict(),
                          "rng": [ckpt.rng_state()]}, os.path.join(d, "last.pt"))
        dt = time.perf_counter() - t0
        size = os.path.getsize(os.path.join(d, "last.pt"))
    return dt, size


def main():
    torch.set_num_threads(2)
    ds = Memory()
    b = [bare(ds) for _ in range(RUNS)]
    t = [trainer(ds) for _ in range(RUNS)]
    dt, size = save_time("c2fmae_vit_base")
    mb, mt = median(b), median(t)
    body = (f"### Pretraining trainer (`bench/training/pretrain.py`)\n"
            f"Test-size C2FMAE at 64 px, batch {BATCH}, {STEPS} steps, CPU, fp32, median of "
            f"{RUNS} runs, steady state (steps 2-{STEPS}; startup and final save excluded). "
            f"\n\n"
            f"| loop | steps/s |\n| --- | --- |\n| bare forward/backward/AdamW | {mb:.2f} |\n"
            f"| `model.pretrain.train` (lr schedule, stats, grad norm, log) | {mt:.2f} "
            f"({100 * (mb - mt) / mb:+.0f}% overhead) |\n\n"
            f"Atomic save of a ViT-B C2FMAE checkpoint with AdamW state: {dt:.2f} s, "
            f"{size / 2**20:.0f} MiB.\n")
    write_section("pretrain", body)


if __name__ == "__main__":
    main()
