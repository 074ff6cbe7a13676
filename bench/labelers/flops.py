"""FLOPs per image per labeling stage, for every preset and semantic model (CPU, no GPU).

    flock /tmp/c2fmae-bench.lock python3 bench/labelers/flops.py --preset all

Every stage is the full-size architecture of its pinned checkpoint (bench/labelers/models.py)
with random weights, fed inputs of exactly the shape its processor makes from a 500x375 ImageNet
image, batch 1, and counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convs,
attention; elementwise ops are not FLOPs there). First on the ``meta`` device (no memory, no
compute); a stage whose forward needs real values (``.item()``, data-dependent shapes: SAM 3,
EoMT, MM-Grounding-DINO) is then run for real on CPU tensors under ``torch.no_grad`` (tens of
seconds each). CPU SDPA (``_scaled_dot_product_flash_attention_for_cpu``) has no formula in
torch's counter, so one is given (2 matmuls: 4*B*H*Lq*Lk*D, the same as its CUDA kernels).
Writes ``bench/labelers/results/labeling_flops.json`` (read by ``bench/labelers/engine.py --gpu`` and
``bench/labelers/projection.py``) and the ``labeling-flops`` section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.report import write_section  # noqa: E402

IMAGE_HW = (375, 500)
RESULTS = Path(__file__).resolve().parent / "results" / "labeling_flops.json"
BOXES_PER_IMAGE = 3       # assumed SAM-HQ prompts per image (ImageNet is object-centric)
GD_TOKENS = 12            # "tench . tinca tinca ." with [CLS]/[SEP]
SAM3_TOKENS = 32          # SAM 3's processor pads every phrase to 32 tokens


def _phrases_per_image() -> float:
    from labeling.detection.prompts import class_prompt

    return sum(len(class_prompt(c).phrases) for c in range(1000)) / 1000


def _cpu_sdpa_flops(query, key, value, *args, out_val=None, **kwargs) -> int:
    lead = math.prod(query.shape[:-2])
    return 2 * lead * query.shape[-2] * key.shape[-2] * (query.shape[-1] + value.shape[-1])


_cpu_sdpa_flops._get_raw = True


class Counter:
    """``with counter():`` regions add to ``total`` (FLOPs)."""

    def __init__(self):
        import torch

        self.total = 0
        self.mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
                        _cpu_sdpa_flops}

    @contextlib.contextmanager
    def __call__(self):
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False, custom_mapping=self.mapping) as fc:
            yield
        self.total += fc.get_total_flops()


def _pixels(kind: str, dev):
    """The processor's tensors for one 500x375 image, moved to ``dev`` (values: noise)."""
    import torch

    from bench.labelers.models import processors

    proc = processors()[kind][0]
    img = [torch.zeros(3, *IMAGE_HW, dtype=torch.uint8)]
    kw = {"task_inputs": ["semantic"]} if kind == "oneformer" else {}
    if kind in ("mask2former", "oneformer"):
        from labeling.semantic.mask2former import COCO_EVAL_SIZE

        kw["size"] = COCO_EVAL_SIZE
    out = proc(images=img, return_tensors="pt", **kw)
    res = {}
    for k in ("pixel_values", "pixel_mask", "task_inputs"):
        if k in out:
            v = out[k]
            res[k] = (torch.randn(v.shape, device=dev) if v.is_floating_point()
                      else v.to(dev))
    return res


def _text(dev, n):
    import torch

    return {"input_ids": torch.full((1, n), 1000, device=dev, dtype=torch.long),
            "attention_mask": torch.ones(1, n, device=dev, dtype=torch.long)}


def _detector(model, dev, count):
    with count():
        model(**_pixels("grounding-dino", dev), **_text(dev, GD_TOKENS))


def _sam_hq(model, dev, count):
    """(encoder, decoder with 1 box, decoder with 8 boxes) in three counters."""
    import torch

    pix = _pixels("sam-hq", dev)["pixel_values"]
    with count[0]():
        emb, inter = model.get_image_embeddings(pix)
    for c, n in ((count[1], 1), (count[2], 8)):
        boxes = torch.tensor([[[100.0, 100.0, 600.0, 500.0]] * n], device=dev)
        with c():
            model(image_embeddings=emb, intermediate_embeddings=inter, input_boxes=boxes,
                  multimask_output=False, hq_token_only=False)


def _sam3(model, dev, count):
    """(vision encoder, text encoder of one phrase, DETR + masks of one phrase row)."""
    pix = _pixels("sam3", dev)["pixel_values"]
    with count[0]():
        vis = model.get_vision_features(pixel_values=pix)
    t = _text(dev, SAM3_TOKENS)
    with count[1]():
        text = model.get_text_features(**t)
    with count[2]():
        model(vision_embeds=vis, text_embeds=text, attention_mask=t["attention_mask"])


def _semantic(kind):
    def run(model, dev, count):
        with count():
            model(**_pixels(kind, dev))
    return run


#: stage group -> (model kind, runner, stage names (one per counter))
GROUPS = {
    "grounding-dino": ("grounding-dino", _detector, ["grounding-dino-B"]),
    "mm-grounding-dino": ("mm-grounding-dino", _detector, ["mm-grounding-dino-B"]),
    "sam-hq": ("sam-hq", _sam_hq, ["sam-hq-H encoder", "sam-hq-H decoder, 1 box",
                                   "sam-hq-H decoder, 8 boxes"]),
    "sam3": ("sam3", _sam3, ["sam3 vision encoder", "sam3 text encoder, per phrase",
                             "sam3 DETR + masks, per phrase row"]),
    "mask2former": ("mask2former", _semantic("mask2former"), ["mask2former-swin-L"]),
    "oneformer": ("oneformer", _semantic("oneformer"), ["oneformer-swin-L"]),
    "eomt": ("eomt", _semantic("eomt"), ["eomt-L"]),
}


def _count_group(group: str, dev: str) -> "list[float]":
    import torch

    from bench.labelers.models import build_model

    kind, run, names = GROUPS[group]
    counters = [Counter() for _ in names]
    model = build_model(kind, dev).requires_grad_(False)   # no autograd hooks on outputs
    with torch.no_grad():
        run(model, dev, counters if len(counters) > 1 else counters[0])
    return [c.total / 1e12 for c in counters]


def count_group(group: str) -> "tuple[list[float], str]":
    """TFLOP per stage of ``group`` and how it was counted ('meta' or 'cpu')."""
    try:
        return _count_group(group, "meta"), "meta"
    except Exception as e:  # noqa: BLE001 - data-dependent ops need real values
        print(f"{group}: meta failed ({type(e).__name__}: {str(e)[:80]}); counting on CPU",
              flush=True)
        return _count_group(group, "cpu"), "cpu"


def preset_totals(stages: dict, boxes: int = BOXES_PER_IMAGE, rows: "float | None" = None
                  ) -> dict:
    """TFLOP/image per (preset, semantic) from the per-stage counts."""
    from bench.labelers.models import INSTANCE_PRESETS, SEMANTICS

    rows = _phrases_per_image() if rows is None else rows
    per_box = (stages["sam-hq-H decoder, 8 boxes"] - stages["sam-hq-H decoder, 1 box"]) / 7
    sam_hq = (stages["sam-hq-H encoder"] + stages["sam-hq-H decoder, 1 box"]
              + (boxes - 1) * per_box)
    inst = {"default": stages["grounding-dino-B"] + sam_hq,
            "mm-gdino": stages["mm-grounding-dino-B"] + sam_hq,
            "sam3": stages["sam3 vision encoder"]
            + rows * stages["sam3 DETR + masks, per phrase row"]}
    sem = {"mask2former": stages["mask2former-swin-L"], "oneformer": stages["oneformer-swin-L"],
           "eomt": stages["eomt-L"]}
    return {f"{p}+{s}": {"instances": inst[p], "semantic": sem[s], "total": inst[p] + sem[s]}
            for p in INSTANCE_PRESETS for s in SEMANTICS}


def table(res: dict) -> str:
    st, how = res["stages"], res["method"]
    out = ["| stage (500x375 image, batch 1) | input | TFLOP | counted on |",
           "| --- | --- | --- | --- |"]
    for name, v in st.items():
        out.append(f"| {name} | {res['inputs'].get(name, '')} | {v:.4f} | {how[name]} |")
    out += ["", f"Per image, with {res['boxes_per_image']} SAM-HQ boxes per image (assumed) and "
            f"{res['phrases_per_image']:.3f} SAM 3 phrase rows per image (the mean over the 1000 "
            "class prompts); SAM 3's text features are cached per phrase (1564 phrases for "
            "1.28M images), so they add ~0 per image:", "",
            "| preset + semantic | instances TFLOP | semantic TFLOP | **total TFLOP / image** |",
            "| --- | --- | --- | --- |"]
    for k, v in res["presets"].items():
        out.append(f"| {k} | {v['instances']:.3f} | {v['semantic']:.3f} | **{v['total']:.3f}** |")
    return "\n".join(out) + "\n"


INPUTS = {"grounding-dino-B": f"1066x800 + {GD_TOKENS} tokens",
          "mm-grounding-dino-B": f"1066x800 + {GD_TOKENS} tokens",
          "sam-hq-H encoder": "1024x1024", "sam-hq-H decoder, 1 box": "embeddings + 1 box",
          "sam-hq-H decoder, 8 boxes": "embeddings + 8 boxes",
          "sam3 vision encoder": "1008x1008", "sam3 text encoder, per phrase": "32 tokens",
          "sam3 DETR + masks, per phrase row": "FPN features + 1 phrase",
          "mask2former-swin-L": "1088x800 (800x1066 padded to /32)",
          "oneformer-swin-L": "1066x800 + task tokens", "eomt-L": "640x640 (padded square)"}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="all", choices=["all", *GROUPS],
                    help="'all' (every stage group) or one group")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--from-json", action="store_true",
                    help="count nothing: rewrite the section from bench/labelers/results/labeling_flops.json")
    args = ap.parse_args(argv)
    groups = [] if args.from_json else list(GROUPS) if args.preset == "all" else [args.preset]
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    stages, method = dict(old.get("stages", {})), dict(old.get("method", {}))
    for g in groups:
        t = time.perf_counter()
        vals, how = count_group(g)
        for name, v in zip(GROUPS[g][2], vals):
            stages[name], method[name] = v, how
            print(f"{name}: {v:.4f} TFLOP ({how}, {time.perf_counter() - t:.0f} s)", flush=True)
    res = {"date": old.get("date") if args.from_json else time.strftime("%Y-%m-%d"),
           "image_hw": IMAGE_HW, "stages": stages,
           "method": method, "inputs": INPUTS, "boxes_per_image": BOXES_PER_IMAGE,
           "phrases_per_image": _phrases_per_image()}
    if all(n in stages for g in GROUPS.values() for n in g[2]):
        res["presets"] = preset_totals(stages)
    if args.no_write:
        print(json.dumps(res, indent=1))
        return
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=1) + "\n")
    if "presets" in res:
        write_section("labeling-flops", "### Labeling FLOPs per image (`bench/labelers/flops.py`)"
                      "\n\n"
                      f"Counted {res['date']} (bench/labelers/results/labeling_flops.json).\n\n"
                      + table(res) + NOTE)


NOTE = (
    "\nMethod: torch `FlopCounterMode` (matmul/conv/attention FLOPs, 1 multiply-add = 2 FLOPs), "
    "full-size configs of the pinned checkpoints (bench/labelers/models.py), random weights, "
    "batch 1, inputs of exactly the shape each hub processor makes from a 500x375 image. "
    "'meta': counted on the meta device; 'cpu': the forward fails on meta (`.item()` in SAM 3 "
    "and EoMT; a constant made on the CPU inside Grounding DINO / MM-GDINO / Mask2Former / "
    "OneFormer), so it ran for real on CPU tensors under `torch.no_grad` (CPU SDPA given the "
    "CUDA kernels' formula); Grounding DINO-B and Mask2Former counted on meta by the earlier "
    "version of this script gave 1.069 and 1.606 (inputs built by hand, ~3% lower). FLOP counts do not depend on the machine or its load. The machine-readable table "
    "is bench/labelers/results/labeling_flops.json. Parameters of the builds, as a check against the "
    "checkpoints: Grounding DINO-B and MM-GDINO-B 232.3M, SAM-HQ-H 642.7M, SAM 3 840.4M, "
    "Mask2Former Swin-L 215.5M (its hub safetensors: 866 MB = 216M fp32), OneFormer Swin-L "
    "218.8M (OneFormer's model zoo: 219M), EoMT-L 316.7M. GPU runs (`bench/labelers/engine.py --gpu`) report achieved "
    "TFLOP/s against it.\n")


if __name__ == "__main__":
    main()
