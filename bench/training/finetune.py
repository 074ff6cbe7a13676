"""Fine-tuning cost of ViT-B/16: train step (fwd + bwd + AdamW) and evaluation throughput.

    python bench/training/finetune.py [--batch 8] [--repeats 5]

CPU: fp32 with the layer-decay AdamW groups of model.finetune, drop path 0.1, soft-target loss;
the baseline in the same run is the plain forward pass (eval) of the same model. On a GPU the same
is measured in bf16 autocast (the fine-tuning default there) and the 100-epoch recipe is projected
to 8 GPUs from the measured step time under the assumption stated in the output.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
import sys
import time

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.report import median, write_section  # noqa: E402
from model.finetuning.classifier import create_classifier, layer_decay_groups  # noqa: E402

IMAGENET_TRAIN = 1_281_167


def timed(fn, repeats: int, sync) -> "list[float]":
    fn()  # warm-up
    sync()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return out


def measure(device: torch.device, batch: int, repeats: int, dtype) -> dict:
    model = create_classifier(None, 1000, 224, 0.1).to(device)
    opt = torch.optim.AdamW(layer_decay_groups(model, 0.05, 0.75), lr=1e-4, betas=(0.9, 0.999))
    x = torch.randn(batch, 3, 224, 224, device=device)
    target = torch.softmax(torch.randn(batch, 1000, device=device), -1)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    amp = dict(device_type=device.type, dtype=dtype, enabled=dtype is not None)

    def step():
        model.train()
        with torch.autocast(**amp):
            loss = torch.sum(-target * torch.log_softmax(model(x).float(), -1), -1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer():
        model.eval()
        with torch.autocast(**amp):
            model(x)

    tr = median(timed(step, repeats, sync))
    ev = median(timed(infer, repeats, sync))
    return {"step_s": tr, "train_img_s": batch / tr, "eval_img_s": batch / ev}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--gpu-batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.manual_seed(0)
    cpu = measure(torch.device("cpu"), a.batch, a.repeats, None)
    lines = [
        "ViT-B/16 at 224 px, 1000 classes, drop path 0.1, layer-decay AdamW (model.finetune's "
        f"groups); median of {a.repeats} runs after one warm-up.", "",
        "| device | precision | batch | train step (fwd+bwd+AdamW) | train img/s | eval img/s "
        "(baseline: forward only) |", "| --- | --- | --- | --- | --- | --- |",
        f"| CPU, {torch.get_num_threads()} threads | fp32 | {a.batch} | {cpu['step_s']:.2f} s | "
        f"{cpu['train_img_s']:.2f} | {cpu['eval_img_s']:.2f} |"]
    if torch.cuda.is_available():
        gpu = measure(torch.device("cuda"), a.gpu_batch, a.repeats, torch.bfloat16)
        lines.append(f"| {torch.cuda.get_device_name(0)} | bf16 autocast | {a.gpu_batch} | "
                     f"{gpu['step_s']:.3f} s | {gpu['train_img_s']:.0f} | {gpu['eval_img_s']:.0f} |")
        hours = 100 * IMAGENET_TRAIN / (8 * gpu["train_img_s"]) / 3600
        lines += ["", f"Projected 100-epoch recipe on 8 such GPUs: **{hours:.1f} h**, assuming "
                  "linear scaling of the measured single-GPU train throughput to 8 GPUs (DDP "
                  "all-reduce hidden behind backward) and a data loader that keeps up "
                  "(RandAugment decoding at this rate needs roughly 10+ CPU cores per GPU); "
                  "evaluation passes excluded."]
    else:
        cpu_h = 100 * IMAGENET_TRAIN / cpu["train_img_s"] / 3600
        lines += ["", "No GPU was available for this run, so no bf16 number and no measured 8-GPU "
                  "projection. On a machine with CUDA the script adds the bf16 row and the "
                  "projection. For scale only: the 100-epoch recipe at this CPU throughput would "
                  f"take {cpu_h:,.0f} h on one such CPU. Under the stated assumption of ~1,000 "
                  "train img/s per A100-class GPU in bf16 for ViT-B/16 (MAE-style fine-tuning; "
                  "an assumption, not measured here), 8 GPUs would need about "
                  f"{100 * IMAGENET_TRAIN / 8000 / 3600:.1f} h."]
    write_section("finetune", "\n".join(lines))


if __name__ == "__main__":
    main()
