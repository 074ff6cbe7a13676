"""The device check of the labelers: every preset's full-size models on one GPU.

    python bench/labelers/engine.py --gpu [--out DIR]        # on the device machine (< 10 min on H200)
    python bench/labelers/engine.py --gpu --dry-run           # CPU: the same loop on the tiny models

For each setting (preset + semantic model), full-size architectures with random weights built
directly on the GPU (bench/labelers/models.py), bf16 except the box detectors (fp32 / TF32, as
labeling/presets/loading.py loads them), through ``Labeler.label`` at batch 4 / 8 / 16: one warm-up
batch, then ``--batches`` timed batches. The images are real imagenet-sample images resized to
500x375 (the FLOP table's size, so every batch is one bucket); noise images where the data is
absent. Recorded per row: end-to-end images/s (one thread: CPU work serial with the GPU's),
model-only images/s (time inside the gated model calls, CUDA-synchronised), achieved TFLOP/s
(model-only rate x the FLOP table's TFLOP/image, with the measured boxes per image), peak GPU
memory, instances per image, failed records. A ``--budget-s`` guard stops starting settings
once spent, so the run always returns. ``--dry-run`` builds every full-size setting on the
``meta`` device (configs and wrappers), then runs the loop with the tiny presets on CPU.
"""
from __future__ import annotations

import gc
import io
import json
import time
from pathlib import Path

SETTINGS = [("default", "mask2former"), ("sam3", "mask2former"), ("mm-gdino", "mask2former"),
            ("default", "oneformer"), ("default", "eomt"), ("sam3", "eomt")]
BATCHES = (4, 8, 16)


def fixed_size_items(n: int, hw=(375, 500)):
    """``n`` SourceImages of one size: real images resized (or noise where the data is absent)."""
    import numpy as np
    from PIL import Image

    from labeling.images import SourceImage

    try:
        from bench.labelers.samples import DATA, sample_items
        src = sample_items() if (DATA / "imagenet-sample").exists() else []
    except Exception:  # noqa: BLE001 - no data: noise images
        src = []
    rng, out = np.random.default_rng(0), []
    for i in range(n):
        if src:
            it = src[i % len(src)]
            im = Image.open(io.BytesIO(it.data)).convert("RGB").resize((hw[1], hw[0]))
            key, wnid, ci = f"{it.key}#{i}", it.wnid, it.class_index
        else:
            im = Image.fromarray(rng.integers(0, 255, (*hw, 3), dtype=np.uint8))
            key, wnid, ci = f"noise/{i}.jpg", "n01440764", 0
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        out.append(SourceImage(key, wnid, ci, buf.getvalue()))
    return out


def _tflop_per_image(flops: dict, preset: str, semantic: str, boxes: float) -> "float | None":
    if not flops.get("stages"):
        return None
    from bench.labelers.flops import preset_totals

    return preset_totals(flops["stages"], boxes=max(boxes, 1.0))[f"{preset}+{semantic}"]["total"]


def time_setting(lab, preps, batches, n_batches, cuda: bool) -> "list[dict]":
    import torch

    from labeling.overlap import GpuGate, gate_labeler

    gate = gate_labeler(lab, GpuGate(sync_cuda=cuda))
    rows = []
    for b in batches:
        lab.label(preps[:b])                                          # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        held0, t, recs = gate.held_s, time.perf_counter(), []
        for k in range(n_batches):
            recs += lab.label(preps[k * b:(k + 1) * b])
        if cuda:
            torch.cuda.synchronize()
        wall, held = time.perf_counter() - t, gate.held_s - held0
        ok = [r for r in recs if r["status"] == "ok"]
        rows.append({"batch": b, "images": len(recs), "images_per_s": len(recs) / wall,
                     "model_images_per_s": len(recs) / held if held else None,
                     "instances_per_image": sum(r["num_instances"] for r in ok) / max(len(ok), 1),
                     "failed": len(recs) - len(ok),
                     "first_failure": next((r["reason"] for r in recs if r["status"] != "ok"),
                                           None),
                     "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None})
    return rows


def build(preset, semantic, device, precision, dry_run):
    from bench.labelers.models import full_labeler, tiny_labeler

    if dry_run:
        full_labeler(preset, semantic, "meta", precision)     # configs + wrappers build
        return tiny_labeler(preset, semantic, "cpu", "fp32")
    return full_labeler(preset, semantic, device, precision)


def run(settings=SETTINGS, batches=BATCHES, n_batches=3, precision="bf16", dry_run=False,
        budget_s=480.0, log=print) -> dict:
    import torch

    from bench.labelers.flops import RESULTS as FLOPS

    cuda = not dry_run
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device (use --dry-run to check the loop on CPU)")
    device = "cuda" if cuda else "cpu"
    flops = json.loads(FLOPS.read_text()) if FLOPS.exists() else {}
    from labeling.images import prepare

    preps = [prepare(it) for it in fixed_size_items(max(batches) * n_batches)]
    t0, out = time.perf_counter(), {"device": torch.cuda.get_device_name(0) if cuda else "cpu",
                                    "precision": precision, "dry_run": dry_run, "rows": []}
    for preset, semantic in settings:
        if time.perf_counter() - t0 > budget_s:
            out["rows"].append({"preset": preset, "semantic": semantic, "skipped": "budget"})
            continue
        try:
            tb = time.perf_counter()
            lab = build(preset, semantic, device, precision, dry_run)
            build_s = time.perf_counter() - tb
            for r in time_setting(lab, preps, batches, n_batches, cuda):
                tf = _tflop_per_image(flops, preset, semantic, r["instances_per_image"])
                r.update(preset=preset, semantic=semantic, build_s=build_s, tflop_per_image=tf,
                         achieved_tflops=(tf * r["model_images_per_s"]
                                          if tf and r["model_images_per_s"] else None))
                out["rows"].append(r)
                log(json.dumps(r))
        except Exception as e:  # noqa: BLE001 - one setting's crash must not lose the others
            out["rows"].append({"preset": preset, "semantic": semantic,
                                "error": f"{type(e).__name__}: {str(e)[:300]}"})
            log(out["rows"][-1])
        lab = None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    out["total_s"] = time.perf_counter() - t0
    return out


def _f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)


def table(res: dict) -> str:
    rows = ["| preset + semantic | batch | images/s end to end | images/s in models | "
            "TFLOP/image | achieved TFLOP/s | peak GiB | instances / image | failed |",
            "| --- |" + " --- |" * 8]
    for r in res["rows"]:
        name = f"{r['preset']}+{r['semantic']}"
        if "batch" not in r:
            rows.append(f"| {name} | {r.get('error') or r.get('skipped')} |" + " |" * 7)
            continue
        rows.append(f"| {name} | {r['batch']} | {_f(r['images_per_s'])} | "
                    f"{_f(r['model_images_per_s'])} | {_f(r['tflop_per_image'], '{:.3f}')} | "
                    f"{_f(r['achieved_tflops'], '{:.1f}')} | {_f(r['peak_gib'], '{:.1f}')} | "
                    f"{r['instances_per_image']:.1f} | {r['failed']} |")
    dry = (" DRY RUN: tiny models on CPU, so the rates and TFLOP/s mean nothing; it only "
           "checks the loop." if res["dry_run"] else "")
    return (f"{res['device']}, {res['precision']} (detectors fp32/TF32), random weights, "
            f"500x375 images, {res['total_s']:.0f} s in all.{dry}\n\n" + "\n".join(rows) + "\n")


def main(args) -> None:
    """``args``: dry_run, out, batches (list), n_batches, precision, budget_s."""
    from bench.report import write_section

    batches = tuple(args.batches) if not args.dry_run else (2,)
    res = run(batches=batches, n_batches=args.n_batches if not args.dry_run else 1,
              precision=args.precision, dry_run=args.dry_run, budget_s=args.budget_s)
    text = table(res)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "labeling_gpu.json").write_text(json.dumps(res, indent=1))
        (Path(args.out) / "labeling_gpu.md").write_text(text)
    if not args.dry_run:
        write_section("labeling-gpu", "### Labeling on one GPU (`bench/labelers/engine.py --gpu`)\n\n"
                      + text)
