"""Model speed: C2FMAE vs RGB-only MAE train step, and mask generation cost (section ``model``).

    python -m bench.training.model_step [--batch 8] [--steps 3] [--size base] [--mask-batch 256]

In one run: a ViT train step (forward + backward + AdamW) of ``c2fmae_vit_<size>`` and of
``mae_vit_<size>`` at the same batch, interleaved, median (and best) of ``--steps`` after one warm-up each
(goal: ratio <= 1.2); the progressive mask generation for a batch of 256 at several training
progress points against a plain random masking of the same 588 tokens (goal: <= 2% of the C2FMAE
step, compared per sample). On a GPU the step is repeated under bf16 autocast.
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.report import median, write_section
from model.network.c2fmae import build_model


def synthetic_batch(B: int, device, seed: int = 0) -> dict:
    """Loader-like batch with blocky maps (a few regions / objects per image, like real labels)."""
    g = torch.Generator().manual_seed(seed)
    sem = torch.randint(0, 133, (B, 1, 7, 7), generator=g).float()
    sem = torch.nn.functional.interpolate(sem, size=56, mode="nearest")[:, 0].long()
    inst = torch.zeros(B, 56, 56, dtype=torch.long)
    for k in range(1, 6):
        y, x, h, w = torch.randint(0, 40, (4,), generator=g).tolist()
        inst[:, y:y + h // 2 + 4, x:x + w // 2 + 4] = k
    return {"rgb": torch.randn(B, 3, 224, 224, generator=g).to(device),
            "semantic": sem.to(device), "instance": inst.to(device)}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_times(names, batch, steps, device, amp=False):
    models = {n: build_model(n).to(device).train() for n in names}
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-4) for n, m in models.items()}
    times = {n: [] for n in names}
    for i in range(steps + 1):  # interleaved so that load changes hit both alike
        for n in names:
            _sync(device)
            t = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = models[n](batch, progress=0.3)
            out["loss"].backward()
            opts[n].step()
            opts[n].zero_grad(set_to_none=True)
            _sync(device)
            if i:
                times[n].append(time.perf_counter() - t)
    return {n: (median(v), min(v)) for n, v in times.items()}


def mask_times(model, batch, reps, device):
    out = {}
    for p in (0.0, 1 / 3, 0.5, 2 / 3, 1.0):
        ts = []
        for _ in range(reps + 1):
            _sync(device)
            t = time.perf_counter()
            model.sample_masks(batch, p)
            _sync(device)
            ts.append(time.perf_counter() - t)
        out[p] = median(ts[1:])
    ts = []
    B = batch["rgb"].shape[0]
    for _ in range(reps + 1):  # plain random masking of 588 tokens, 98 visible
        _sync(device)
        t = time.perf_counter()
        ids = torch.rand(B, 588, device=device).argsort(dim=1)
        torch.zeros(B, 588, dtype=torch.bool, device=device).scatter_(1, ids[:, 98:], True)
        _sync(device)
        ts.append(time.perf_counter() - t)
    return out, median(ts[1:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--size", default="base", choices=["base", "small", "tiny", "test"])
    ap.add_argument("--mask-batch", type=int, default=256)
    ap.add_argument("--mask-reps", type=int, default=10)
    ap.add_argument("--note", default="", help="free text added to the section (e.g. machine load)")
    a = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    names = [f"c2fmae_vit_{a.size}", f"mae_vit_{a.size}"]
    batch = synthetic_batch(a.batch, device)
    st = step_times(names, batch, a.steps, device)
    c2f = st[names[0]][0]

    def row(label, r):
        (cm, cb), (mm, mb_) = r[names[0]], r[names[1]]
        return (f"| {label} | {a.batch} | {cm:.3f} / {cb:.3f} | {mm:.3f} / {mb_:.3f} | "
                f"{cm / mm:.2f} / {cb / mb_:.2f} |")

    rows = [row("fp32", st)]
    if device.type == "cuda":
        rows.append(row("bf16 autocast", step_times(names, batch, a.steps, device, amp=True)))
    mb = synthetic_batch(a.mask_batch, device, seed=1)
    mt, rnd = mask_times(build_model("c2fmae_vit_test").to(device), mb, a.mask_reps, device)
    worst = max(mt.values())
    per_sample_step = c2f / a.batch
    per_sample_mask = worst / a.mask_batch
    mrows = "\n".join(f"| {p:.2f} | {t * 1e3:.1f} | {t / a.mask_batch * 1e6:.0f} |" for p, t in mt.items())
    body = f"""## model: train step and mask generation (`python -m bench.training.model_step`)

Train step = forward + backward + AdamW, synthetic loader-like batch, median and best of {a.steps} steps after
one warm-up, both models interleaved in the same run. C2FMAE: {names[0]} (588 tokens, 98 visible,
cascaded decoder 256 wide); MAE: {names[1]} (196 tokens, 49 visible, 8 x 512 decoder).

| precision | batch | C2FMAE s/step (median / best) | MAE s/step (median / best) | ratio (median / best; goal <= 1.2) |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Mask generation for a batch of {a.mask_batch} (progress p picks the strategy blend: 0 = SG, 1/3 =
SG+IG, 0.5 = IG, 2/3 = IG+RD, 1 = RD), median of {a.mask_reps}:

| progress | ms / batch | us / sample |
| --- | --- | --- |
{mrows}

Plain random masking of the same 588 tokens: {rnd * 1e3:.2f} ms / batch ({rnd / a.mask_batch * 1e6:.1f} us / sample).
Worst case per sample: {per_sample_mask * 1e6:.0f} us, i.e. **{100 * per_sample_mask / per_sample_step:.2f}%**
of the C2FMAE step per sample ({per_sample_step * 1e3:.0f} ms / sample at batch {a.batch}; goal <= 2%).
Device: {device.type}. {a.note}"""
    write_section("model", body)


if __name__ == "__main__":
    main()
