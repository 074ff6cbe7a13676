"""FLOPs per image per labeling stage, for every preset, at the real input sizes (CPU, no weights).

    flock /tmp/c2fmae-bench.lock python3 bench/labeling_flops.py          # FLOP table (meta device)
    python3 bench/labeling_flops.py --gpu                                  # on a CUDA machine

The models are the full-size architectures with random weights, built on the ``meta`` device
(no memory, no compute) and counted with ``torch.utils.flop_counter.FlopCounterMode`` on meta
inputs of the size each processor produces for a 500x375 ImageNet image. A stage whose forward
needs real values (data-dependent shapes) is reported as "not countable on meta" with the error.
``--gpu`` runs each preset's full-size models with random weights in bf16 (detectors fp32/TF32)
at batch 4/8/16 and records images/s, achieved TFLOP/s against this table, and peak memory.
Writes the ``labeling-flops`` section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGE_HW = (375, 500)
NOTE = "Notes: 2-core CPU, load average 13.5 while counted (FLOP counts do not depend on load). Inputs: Grounding DINO / MM-GDINO 1066x800 with a 12-token prompt; SAM-HQ encoder 1024x1024 (+ ~8 GFLOP per box for the decoder, not included); Mask2Former short side 800 (800x1088 padded); EoMT 640x640; SAM 3 1008x1008 with one 32-token phrase. Stages marked not countable use data-dependent ops (.item()) that neither meta nor fake tensors can run; `--gpu` measures them. MM-Grounding-DINO-B has Grounding DINO-B's Swin-B/BERT-base shapes, so ~1.07 TFLOP is expected. Unmeasured here (no GPU): images/s, achieved TFLOP/s and peak memory of `--gpu`; the CPU-side ms/image outside forwards is measured by bench/labeling.py (section `labeling`). The interpreter may segfault at exit after fake-tensor counting (rc 139); the section is written before that.\n"


def _configs():
    """name -> (builder of the model, input builder (device, dtype) -> kwargs)."""
    import torch
    from transformers import (BertConfig, EomtConfig, EomtForUniversalSegmentation,
                              GroundingDinoConfig, GroundingDinoForObjectDetection,
                              Mask2FormerConfig, Mask2FormerForUniversalSegmentation,
                              MMGroundingDinoConfig, MMGroundingDinoForObjectDetection,
                              Sam3Config, Sam3Model, SamHQConfig, SamHQMaskDecoderConfig,
                              SamHQModel, SamHQVisionConfig, SwinConfig)

    from c2fmae_data.categories import COCO_PANOPTIC_NAMES

    def swin(embed, heads, outs):
        return SwinConfig(image_size=384, embed_dim=embed, depths=[2, 2, 18, 2], num_heads=heads,
                          window_size=12, out_features=outs)

    id2label = dict(enumerate(COCO_PANOPTIC_NAMES))
    gd_size = (800, 1066)        # Grounding DINO: short side 800, long <= 1333
    text_len = 12                # "tench . tinca tinca ." with [CLS]/[SEP] ~ 10-12 tokens

    def det_inputs(dev, dt):
        return {"pixel_values": torch.zeros(1, 3, *gd_size, device=dev, dtype=dt),
                "pixel_mask": torch.ones(1, *gd_size, device=dev, dtype=torch.long),
                "input_ids": torch.full((1, text_len), 1000, device=dev, dtype=torch.long),
                "attention_mask": torch.ones(1, text_len, device=dev, dtype=torch.long)}

    def sam_hq_enc(dev, dt):
        return {"pixel_values": torch.zeros(1, 3, 1024, 1024, device=dev, dtype=dt)}

    def m2f_inputs(dev, dt):
        return {"pixel_values": torch.zeros(1, 3, 800, 1088, device=dev, dtype=dt),
                "pixel_mask": torch.ones(1, 800, 1088, device=dev, dtype=torch.long)}

    def eomt_inputs(dev, dt):
        return {"pixel_values": torch.zeros(1, 3, 640, 640, device=dev, dtype=dt)}

    def sam3_inputs(dev, dt):    # one image, 3 phrases -> 3 rows share one vision pass
        return {"pixel_values": torch.zeros(1, 3, 1008, 1008, device=dev, dtype=dt),
                "input_ids": torch.full((1, 32), 1, device=dev, dtype=torch.long),
                "attention_mask": torch.ones(1, 32, device=dev, dtype=torch.long)}

    return {
        "grounding-dino-B": (lambda: GroundingDinoForObjectDetection(GroundingDinoConfig(
            backbone_config=swin(128, [4, 8, 16, 32], ["stage2", "stage3", "stage4"]),
            text_config=BertConfig())), det_inputs, "forward"),
        "mm-grounding-dino-B": (lambda: MMGroundingDinoForObjectDetection(MMGroundingDinoConfig(
            backbone_config=swin(128, [4, 8, 16, 32], ["stage2", "stage3", "stage4"]),
            text_config=BertConfig())), det_inputs, "forward"),
        "sam-hq-H encoder": (lambda: SamHQModel(SamHQConfig(
            vision_config=SamHQVisionConfig(hidden_size=1280, num_hidden_layers=32,
                                            num_attention_heads=16,
                                            global_attn_indexes=[7, 15, 23, 31]),
            mask_decoder_config=SamHQMaskDecoderConfig(vit_dim=1280))), sam_hq_enc,
            "get_image_embeddings"),
        "sam3 (vision + text + DETR + masks)": (lambda: Sam3Model(Sam3Config()), sam3_inputs,
                                                "forward"),
        "mask2former-swin-L @800": (lambda: Mask2FormerForUniversalSegmentation(
            Mask2FormerConfig(backbone_config=swin(192, [6, 12, 24, 48],
                                                   ["stage1", "stage2", "stage3", "stage4"]),
                              num_queries=200, id2label=id2label,
                              label2id={v: k for k, v in id2label.items()})), m2f_inputs,
            "forward"),
        "eomt-L 640": (lambda: EomtForUniversalSegmentation(EomtConfig(
            num_labels=133, id2label=id2label, label2id={v: k for k, v in id2label.items()})),
            eomt_inputs, "forward"),
    }


PRESET_STAGES = {   # stage -> how many times per image (SAM 3: 3 phrase rows share the vision)
    "default": ["grounding-dino-B", "sam-hq-H encoder", "mask2former-swin-L @800"],
    "mm-gdino": ["mm-grounding-dino-B", "sam-hq-H encoder", "mask2former-swin-L @800"],
    "sam3": ["sam3 (vision + text + DETR + masks)", "mask2former-swin-L @800"],
    "default + eomt": ["grounding-dino-B", "sam-hq-H encoder", "eomt-L 640"],
    "sam3 + eomt": ["sam3 (vision + text + DETR + masks)", "eomt-L 640"],
}


def _count_meta(build, inputs, method) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build().eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        getattr(model, method)(**inputs("meta", torch.float32))
    return fc.get_total_flops() / 1e12


def _count_fake(build, inputs, method) -> float:
    """FakeTensorMode: like meta, but constants made on the CPU inside a forward are accepted."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv
    from torch.utils.flop_counter import FlopCounterMode

    with FakeTensorMode(allow_non_fake_inputs=True, shape_env=ShapeEnv()):
        model = build().eval()
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            getattr(model, method)(**inputs("cpu", torch.float32))
    return fc.get_total_flops() / 1e12


def count_flops(stages=None) -> "dict[str, float | str]":
    """TFLOP per image per stage (or why it could be counted neither on meta nor fake tensors)."""
    out = {}
    for name, (build, inputs, method) in _configs().items():
        if stages and name not in stages:
            continue
        errors = []
        for how in (_count_meta, _count_fake):
            try:
                out[name] = how(build, inputs, method)
                break
            except Exception as e:  # noqa: BLE001 - data-dependent ops need real values
                errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:70]}")
        else:
            out[name] = "not countable without real execution (" + "; ".join(errors) + ")"
        print(name, out[name], flush=True)
    return out


def flop_table(flops) -> str:
    rows = ["| stage | TFLOP / image |", "| --- | --- |"]
    rows += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |"
             for k, v in flops.items()]
    rows += ["", "| preset | TFLOP / image (sum of countable stages) |", "| --- | --- |"]
    for p, st in PRESET_STAGES.items():
        vals = [flops.get(s) for s in st]
        tot = sum(v for v in vals if isinstance(v, float))
        miss = [s for s, v in zip(st, vals) if not isinstance(v, float)]
        rows.append(f"| {p} | {tot:.3f}" + (f" (without {', '.join(miss)})" if miss else "")
                    + " |")
    return "\n".join(rows) + "\n"


def bench_gpu(flops) -> str:
    """Each preset's full-size models (random weights) through ``Labeler.label``, bf16."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device; none is available here")
    from bench.labeling import _items, full_size_models
    from labeling.labeler import Labeler
    from labeling.thresholds import ThresholdPolicy

    items = _items()[:48]
    rows = ["| preset | batch | images/s | TFLOP/s achieved | peak GiB |",
            "| --- | --- | --- | --- | --- |"]
    det, seg, sem = full_size_models("cuda", torch.bfloat16)
    det.model.float()                       # detectors stay fp32/TF32 (labeling/loading.py)
    det.dtype = torch.float32
    torch.backends.cuda.matmul.allow_tf32 = True
    lab = Labeler(det, seg, sem, policy=ThresholdPolicy(start=0.35, floor=0.0), device="cuda",
                  precision="bf16")
    tflop = sum(v for v in (flops.get(s) for s in PRESET_STAGES["default"])
                if isinstance(v, float))
    prepared = [lab.prepare(it) for it in items]
    for batch in (4, 8, 16):
        lab.label(prepared[:batch])
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for b in range(0, len(prepared), batch):
            lab.label(prepared[b:b + batch])
        torch.cuda.synchronize()
        ips = len(prepared) / (time.perf_counter() - t)
        rows.append(f"| default | {batch} | {ips:.2f} | {ips * tflop:.1f} | "
                    f"{torch.cuda.max_memory_allocated() / 2**30:.1f} |")
        print(rows[-1], flush=True)
    return "\n".join(rows) + "\n"


def write_section(text: str, name: str = "labeling-flops") -> None:
    path = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md")
    with open(path) as f:
        doc = f.read()
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(doc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--stages", nargs="*", default=None, help="count only these stages")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    flops = count_flops(args.stages)
    text = (f"FLOPs per {IMAGE_HW[1]}x{IMAGE_HW[0]} image (torch FlopCounterMode on meta / fake "
            f"tensors, full-size configs, random weights never materialised, {time.strftime('%Y-%m-%d')}):\n\n" + flop_table(flops))
    text += "\n" + NOTE
    if args.gpu:
        text += "\n" + bench_gpu(flops)
    if not args.no_write:
        write_section(text)
    print(text)


if __name__ == "__main__":
    main()
