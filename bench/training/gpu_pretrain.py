r"""GPU pretraining step: ViT-B C2FMAE vs MAE under bf16, images/s and peak memory (section
``gpu_pretrain``); beside it the loader's samples/s on one core.

    python -m bench.training.gpu_pretrain [--batches 64 128 256] [--steps 10] \
        [--data ROOT [--imagenet-root DIR]] [--loader-samples 200]

Needs a CUDA device (refuses otherwise). For each batch size: a train step (forward with the
curriculum at progress 0.5, backward, fused AdamW) of ``c2fmae_vit_base`` and ``mae_vit_base``,
interleaved in the same run, bf16 autocast, TF32 on; median of ``--steps`` after 3 warm-up
steps each; peak memory: ``torch.cuda.max_memory_allocated`` during a model's build and warm-up
minus what was allocated before it (the other model's weights and state excluded). The ratio
C2FMAE/MAE is step time over step time (paper: about 1.3x; goal <= 1.15x). With ``--data``, the
loader (decode, joint crop/flip, masks to tensors: ``ImageNetMultiGranular`` + TrainTransform) is
timed in one process with one thread: samples/s per core, so GPU images/s / that = cores per GPU
the data path needs.
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.training.model_step import synthetic_batch
from bench.report import median, write_section
from model.network.c2fmae import build_model
from model.pretraining.optim import build_optimizer

NAMES = ("c2fmae_vit_base", "mae_vit_base")


def step_fn(name: str, dev):
    torch.manual_seed(0)
    model = build_model(name).to(dev).train()
    opt = build_optimizer(model, 1.5e-4, 0.05)   # fused: every parameter is on CUDA

    def step(batch):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(batch, progress=0.5)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, opt, step


def measure(batch_size: int, steps: int, dev) -> dict:
    batch = synthetic_batch(batch_size, dev)
    res = {}
    fns = {}
    for n in NAMES:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fns[n] = step_fn(n, dev)
        for _ in range(3):
            fns[n][2](batch)
        torch.cuda.synchronize()
        res[n] = {"peak_gib": (torch.cuda.max_memory_allocated() - base) / 2**30, "t": []}
    for _ in range(steps):             # interleaved: both see the same clocks and heat
        for n in NAMES:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fns[n][2](batch)
            torch.cuda.synchronize()
            res[n]["t"].append(time.perf_counter() - t0)
    del fns
    torch.cuda.empty_cache()
    for n in NAMES:
        res[n]["img_s"] = batch_size / median(res[n]["t"])
    res["ratio"] = median(res[NAMES[0]]["t"]) / median(res[NAMES[1]]["t"])
    return res


def loader_rate(root: str, imagenet_root, n: int) -> float:
    from c2fmae_data import ImageNetMultiGranular

    torch.set_num_threads(1)
    ds = ImageNetMultiGranular(root, imagenet_root, transform="train")
    idx = [i % len(ds) for i in range(n + 5)]
    for i in idx[:5]:
        ds[i]
    t0 = time.perf_counter()
    for i in idx[5:]:
        ds[i]
    return n / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256],
                   help="per-GPU batch sizes (default: 64 128 256)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per model (default: 10)")
    p.add_argument("--data", help="dataset root for the loader rate (default: not measured)")
    p.add_argument("--imagenet-root", help="image folder of a labels-only --data")
    p.add_argument("--loader-samples", type=int, default=200,
                   help="samples timed for the loader rate (default: 200)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench.training.gpu_pretrain needs a CUDA device; none is available here")
    dev = torch.device("cuda", 0)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    rows = []
    for b in args.batches:
        try:
            r = measure(b, args.steps, dev)
        except torch.cuda.OutOfMemoryError:
            rows.append(f"| {b} | out of memory | | | | |")
            torch.cuda.empty_cache()
            continue
        c, m = r[NAMES[0]], r[NAMES[1]]
        rows.append(f"| {b} | {c['img_s']:.0f} | {m['img_s']:.0f} | {r['ratio']:.2f}x | "
                    f"{c['peak_gib']:.1f} | {m['peak_gib']:.1f} |")
        print(rows[-1], flush=True)
    body = (f"### GPU pretraining step (`bench/training/gpu_pretrain.py`)\n"
            f"{torch.cuda.get_device_name(dev)}, ViT-B/16 at 224 px, bf16 autocast, fused AdamW, "
            f"TF32, progress 0.5, synthetic loader-like batches on the device; median of "
            f"{args.steps} interleaved steps after 3 warm-up steps.\n\n"
            "| batch | C2FMAE img/s | MAE img/s | C2FMAE/MAE step time | C2FMAE peak GiB | "
            "MAE peak GiB |\n| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")
    if args.data:
        rate = loader_rate(args.data, args.imagenet_root, args.loader_samples)
        body += (f"\nLoader (decode + joint crop/flip + masks), one process, one thread: "
                 f"{rate:.0f} samples/s per core.\n")
    write_section("gpu_pretrain", body)


if __name__ == "__main__":
    main()
