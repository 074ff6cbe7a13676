"""CPU milliseconds per image OUTSIDE the model forwards, for every preset (tiny random models).

    flock /tmp/c2fmae-bench.lock python3 bench/labelers/cpu.py [--images 48] [--reps 3]

On the real imagenet-sample images (../shared/data), one thread, batch 8: each preset's offline
tiny preset (the same wrappers, processors' code and post-processing as the full-size models)
runs ``Labeler.label`` end to end; the time inside the models' calls is taken with
``labeling.overlap.GpuGate`` (the gate the GPU worker uses; CUDA sync off) and subtracted.
Split: ``prepare`` (decode, EXIF, sha256, model copy: a separate Ray task in the pipeline),
``processors`` (every image processor / tokenizer call inside ``label``), ``post`` (the rest:
score/box decoding, threshold walk, NMS, mask resizing, composition, PNG encoding).
The tiny processors resize to the tiny models' sizes, so the processors are ALSO timed alone at
the hub checkpoints' sizes (bench/labelers/models.py) on the same images: that row is the one
the projection (bench/labelers/projection.py) uses. OneFormer has no tiny config: its processor
is timed at hub size; its post-processing is Mask2Former's code (same wrapper).
Writes bench/labelers/results/labeling_cpu.json and the ``labeling-cpu`` section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.labelers.samples import DATA, sample_items  # noqa: E402
from bench.report import median, write_section  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "labeling_cpu.json"
TINY = [("default", "mask2former"), ("default", "eomt"), ("sam3", "mask2former"),
        ("sam3", "eomt"), ("mm-gdino", "mask2former")]
HUB_KINDS = ("grounding-dino", "sam-hq", "sam3", "mask2former", "oneformer", "eomt")


class Timed:
    """Callable wrapper adding the seconds of each call to ``acc[0]``; other attributes pass."""

    def __init__(self, inner, acc):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_acc", acc)

    def __call__(self, *a, **k):
        t = time.perf_counter()
        try:
            return self._inner(*a, **k)
        finally:
            self._acc[0] += time.perf_counter() - t

    def __getattr__(self, name):
        return getattr(self._inner, name)


ROLE_METHODS = (("detector", "detect"), ("segmenter", "segment"),
                ("segmenter", "segment_detections"), ("semantic", "predict"))


def instrument(lab):
    """Gate the models (time inside them), time every processor / tokenizer call, and time
    each role's method so that its own post-processing (method - forwards - processors) is
    known. Returns (gate, processor seconds [s], per-role post seconds {role: [s]})."""
    from labeling.overlap import GpuGate, gate_labeler

    gate = gate_labeler(lab, GpuGate(sync_cuda=False))
    acc, post = [0.0], {"detector": [0.0], "segmenter": [0.0], "semantic": [0.0],
                        "methods": [0.0]}
    parts = {id(p): p for p in (lab.detector, lab.segmenter, lab.semantic)}.values()
    for p in parts:
        for attr in ("image_processor", "processor", "tokenizer"):
            obj = getattr(p, attr, None)
            if obj is not None and not isinstance(obj, Timed):
                setattr(p, attr, Timed(obj, acc))
    for role, name in ROLE_METHODS:
        part = getattr(lab, role)
        if hasattr(part, name) and name not in vars(part):
            setattr(part, name, _post_timer(getattr(part, name), gate, acc, post[role],
                                            post["methods"]))
    return gate, acc, post


def _post_timer(fn, gate, acc, own, methods):
    def call(*a, **k):
        t, f0, p0 = time.perf_counter(), gate.held_s, acc[0]
        try:
            return fn(*a, **k)
        finally:
            el = time.perf_counter() - t
            methods[0] += el
            own[0] += el - (gate.held_s - f0) - (acc[0] - p0)
    return call


def time_tiny(preset, semantic, items, reps, batch=8) -> dict:
    from bench.labelers.models import tiny_labeler

    lab = tiny_labeler(preset, semantic)
    gate, acc, post = instrument(lab)
    lab.label_items(items[:2])                            # warm-up
    n, rows = len(items), []
    for _ in range(reps):
        t = time.perf_counter()
        preps = [lab.prepare(it) for it in items]
        t1 = time.perf_counter()
        held0 = gate.held_s
        for v in (acc, *post.values()):
            v[0] = 0.0
        for b in range(0, n, batch):
            lab.label(preps[b:b + batch])
        wall = time.perf_counter() - t1
        ms = {"prepare": (t1 - t) / n * 1e3, "processors": acc[0] / n * 1e3,
              "forward": (gate.held_s - held0) / n * 1e3,
              "labeler_post": (wall - post["methods"][0]) / n * 1e3}
        ms.update({f"{r}_post": post[r][0] / n * 1e3 for r in ("detector", "segmenter",
                                                               "semantic")})
        ms["host"] = ms["processors"] + ms["detector_post"] + ms["labeler_post"]
        ms["outside"] = ms["host"] + ms["segmenter_post"] + ms["semantic_post"]
        rows.append(ms)
    return {k: median(r[k] for r in rows) for k in rows[0]}


def time_hub_processors(items, reps) -> dict:
    """ms/image of each hub-size processor alone on the images' model copies (+ tokenizer)."""
    import numpy as np
    import torch

    from bench.labelers.models import processors
    from labeling.images import prepare
    from labeling.detection.prompts import class_prompt
    from labeling.semantic.mask2former import COCO_EVAL_SIZE

    procs = processors()
    preps = [p for p in map(prepare, items) if not isinstance(p, dict)]
    out = {}
    for kind in HUB_KINDS:
        proc, tok = procs[kind]
        kw = {"size": COCO_EVAL_SIZE} if kind in ("mask2former", "oneformer") else {}
        if kind == "oneformer":
            kw["task_inputs"] = ["semantic"]
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            for p in preps:
                im = torch.from_numpy(np.ascontiguousarray(p.model_image)).permute(2, 0, 1)
                proc(images=[im], return_tensors="pt", **kw)
                if tok is not None:
                    tok([class_prompt(p.class_index).text], return_tensors="pt")
            times.append((time.perf_counter() - t) / len(preps) * 1e3)
        out[kind] = median(times)
    return out


def hub_prep(hub: dict) -> dict:
    """Processor ms/image per preset+semantic at hub sizes."""
    inst = {"default": hub["grounding-dino"] + hub["sam-hq"], "mm-gdino":
            hub["grounding-dino"] + hub["sam-hq"], "sam3": hub["sam3"]}
    return {f"{p}+{s}": inst[p] + hub[s] for p in inst for s in ("mask2former", "oneformer",
                                                                 "eomt")}


def body(res) -> str:
    out = [f"{res['images']} real imagenet-sample images, 1 thread, batch 8, median of "
           f"{res['reps']} runs; load (1-min) {res['load_before']:.1f} before, "
           f"{res['load_after']:.1f} after.", "",
           "| preset + semantic (tiny random models) | prepare | processors (tiny sizes) | "
           "detector post | labeler post (walk, NMS, compose, PNGs) | **host CPU in `label`** "
           "| mask post | semantic post | all outside forwards | in forwards (tiny) |",
           "| --- |" + " --- |" * 9]
    for k, v in res["tiny"].items():
        out.append(f"| {k} | {v['prepare']:.1f} | {v['processors']:.1f} | "
                   f"{v['detector_post']:.1f} | {v['labeler_post']:.1f} | **{v['host']:.1f}** | "
                   f"{v['segmenter_post']:.1f} | {v['semantic_post']:.1f} | {v['outside']:.1f} "
                   f"| {v['forward']:.1f} |")
    out += ["", "Processors alone at the hub checkpoints' sizes (ms / image, incl. tokenizer):",
            "", "| " + " | ".join(HUB_KINDS) + " |", "|" + " --- |" * len(HUB_KINDS),
            "| " + " | ".join(f"{res['hub_processors'][k]:.1f}" for k in HUB_KINDS) + " |", "",
            "ms / image. `prepare` runs in the pipeline's separate prepare tasks, not in the GPU "
            "worker. *Host CPU* = processors + detector post (scores/boxes to numpy) + labeler "
            "post: the GPU worker's own CPU work. *Mask post* (SAM-HQ `post_process_masks`, "
            "SAM 3 mask resize) and *semantic post* (per-pixel class scores, arg-max) are torch "
            "ops on the models' output tensors: on the GPU in a GPU run, on the CPU here (at the "
            "tiny models' sizes). Goal for the host CPU work: <= 10 ms / image."]
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    import os

    import cv2
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if not (DATA / "imagenet-sample").exists():
        raise SystemExit(f"{DATA / 'imagenet-sample'} is absent")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    items = sample_items()[:args.images]
    res = {"images": len(items), "reps": args.reps, "load_before": os.getloadavg()[0],
           "date": time.strftime("%Y-%m-%d")}
    res["tiny"] = {}
    for p, s in TINY:
        res["tiny"][f"{p}+{s}"] = time_tiny(p, s, items, args.reps)
        print(p, s, res["tiny"][f"{p}+{s}"], flush=True)
    res["hub_processors"] = time_hub_processors(items, args.reps)
    res["hub_prep"] = hub_prep(res["hub_processors"])
    res["load_after"] = os.getloadavg()[0]
    print(json.dumps(res, indent=1))
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=1) + "\n")
        write_section("labeling-cpu", "### Labeling CPU work outside model forwards "
                      "(`bench/labelers/cpu.py`)\n\n" + body(res))


if __name__ == "__main__":
    main()
