"""Load the real models of a preset (hub id + revision, or a local weights dir) once per process.

Speed settings (docs/LABELING.md "Throughput"):
- attention: ``attn_implementation="sdpa"`` for the models whose transformers class declares SDPA
  support (SAM-HQ, SAM 3 and its CLIP text encoder, EoMT); Grounding DINO / MM-Grounding-DINO
  (deformable attention) and Mask2Former / OneFormer have no such switch in transformers 5.24;
- precision: the requested one (bf16 / fp16) for every model except the box detectors, which stay
  fp32 with TF32 matmuls on CUDA (bf16 moves Grounding DINO boxes by up to 2.6 px at 1333 px);
- ``C2FMAE_LABEL_COMPILE=1`` wraps each model's heavy part in ``torch.compile`` (off by default;
  unmeasured: no GPU was available when it was written).
"""
from __future__ import annotations

import os
import threading

from labeling.presets.catalog import ModelSpec

_CACHE: dict = {}
_LOCK = threading.Lock()
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
SDPA_KINDS = frozenset({"sam-hq", "sam3", "eomt"})
FP32_KINDS = frozenset({"grounding-dino", "mm-grounding-dino"})
COMPILE_ENV = "C2FMAE_LABEL_COMPILE"
#: the sub-module torch.compile wraps per kind ("" = the whole model)
COMPILE_TARGETS = {"sam-hq": "vision_encoder", "sam3": "vision_encoder", "eomt": "",
                   "mask2former": "model.pixel_level_module", "grounding-dino": "model.backbone",
                   "mm-grounding-dino": "model.backbone"}


def torch_dtype(precision: str):
    import torch

    if precision not in DTYPES:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[precision])


def model_dtype(kind: str, precision: str):
    """The dtype a model of ``kind`` runs in when the labeler asks for ``precision``."""
    import torch

    return torch.float32 if kind in FP32_KINDS else torch_dtype(precision)


def accelerate(model, kind: str, device: str):
    """TF32 matmuls on CUDA, and the optional torch.compile of the model's heavy part."""
    import torch

    if str(device).startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if os.environ.get(COMPILE_ENV) == "1" and kind in COMPILE_TARGETS:
        target = model
        for part in filter(None, COMPILE_TARGETS[kind].split(".")):
            target = getattr(target, part)
        target.compile(dynamic=False)
    return model


def _kw(kind: str, base: dict) -> dict:
    return {**base, "attn_implementation": "sdpa"} if kind in SDPA_KINDS else dict(base)


def local_path(spec: ModelSpec, weights_dir: "str | None") -> "str | None":
    """Where ``spec`` lives inside a weights dir (see weights.py), if it does."""
    if os.path.isdir(spec.source) or os.path.isfile(spec.source):
        return spec.source
    if weights_dir:
        p = os.path.join(weights_dir, spec.source.replace("/", "__"))
        if os.path.isdir(p):
            return p
        raise FileNotFoundError(f"{spec.source} is not in weights dir {weights_dir} "
                                f"(run `c2fmae-data weights download {weights_dir}`)")
    return None


def _load(spec: ModelSpec, device: str, precision: str, weights_dir):
    dtype = model_dtype(spec.kind, precision)
    src = local_path(spec, weights_dir) or spec.source
    kw = {} if os.path.exists(src) else {"revision": spec.revision}
    mk = _kw(spec.kind, kw)

    def ready(model):
        return accelerate(model.to(device, dtype).eval(), spec.kind, device)

    if spec.kind in ("grounding-dino", "mm-grounding-dino"):
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        from labeling.detection.grounding_dino import GroundingDinoDetector

        proc = AutoProcessor.from_pretrained(src, **kw)
        model = AutoModelForZeroShotObjectDetection.from_pretrained(src, **mk)
        return GroundingDinoDetector(ready(model), proc.image_processor, proc.tokenizer,
                                     device, dtype)
    if spec.kind == "sam-hq":
        from transformers import SamHQModel, SamHQProcessor

        from labeling.segmentation.sam_hq import SamHQSegmenter

        proc = SamHQProcessor.from_pretrained(src, **kw)
        model = SamHQModel.from_pretrained(src, **mk)
        return SamHQSegmenter(ready(model), proc.image_processor, device, dtype)
    if spec.kind == "sam3":
        from transformers import Sam3Model, Sam3Processor

        from labeling.segmentation.sam3 import Sam3Instances

        proc = Sam3Processor.from_pretrained(src, **kw)
        model = Sam3Model.from_pretrained(src, **mk)
        return Sam3Instances(ready(model), proc.image_processor, proc.tokenizer, device, dtype)
    if spec.kind == "sam-hq-official":
        from labeling.segmentation.sam_hq import OfficialSamHQSegmenter

        return OfficialSamHQSegmenter(src, dict(spec.options).get("model_type", "vit_h"), device)
    if spec.kind == "eomt":
        from transformers import AutoImageProcessor, EomtForUniversalSegmentation

        from labeling.semantic.eomt import EomtSemantic

        proc = AutoImageProcessor.from_pretrained(src, **kw)
        model = EomtForUniversalSegmentation.from_pretrained(src, **mk)
        return EomtSemantic(ready(model), proc, device, dtype)
    if spec.kind in ("mask2former", "oneformer"):
        from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation

        from labeling.semantic.mask2former import Mask2FormerSemantic

        pkw = dict(kw)
        if spec.kind == "oneformer":
            from transformers import AutoProcessor as P

            from labeling.presets.weights import processor_kwargs

            if os.path.isdir(src):      # class info from the weights dir, not the hub
                pkw.update(processor_kwargs(src))
        else:
            P = AutoImageProcessor
        proc = P.from_pretrained(src, **pkw)
        model = AutoModelForUniversalSegmentation.from_pretrained(src, **mk)
        return Mask2FormerSemantic(ready(model), proc, device, dtype,
                                   oneformer=spec.kind == "oneformer")
    raise ValueError(f"unknown model kind {spec.kind!r}")


TINY_SEMANTIC = ("mask2former", "eomt")


def load_tiny_random(device: str, precision: str, preset: str = "tiny-random",
                     semantic: "str | None" = None):
    """(detector, segmenter, semantic, kinds) of a tiny-random preset; ``semantic`` 'eomt' swaps
    in the tiny EoMT. Nothing is read from disk or the network."""
    from labeling.presets import tiny_random as T
    from labeling.presets.catalog import TINY_RANDOM

    det_kind, seg_kind = TINY_RANDOM[preset]
    sem_kind = semantic or "mask2former"
    if sem_kind not in TINY_SEMANTIC:
        raise ValueError(f"preset {preset!r} builds its models offline; semantic must be one of "
                         f"{', '.join(TINY_SEMANTIC)}, got {semantic!r}")

    def ready(model, kind):
        return accelerate(model.to(device, model_dtype(kind, precision)).eval(), kind, device)

    if det_kind == "sam3":
        from labeling.segmentation.sam3 import Sam3Instances

        m, p, tok = T.sam3()
        det = seg = Sam3Instances(ready(m, "sam3"), p, tok, device, model_dtype("sam3", precision))
    else:
        from labeling.detection.grounding_dino import GroundingDinoDetector
        from labeling.segmentation.sam_hq import SamHQSegmenter

        m, p, tok = T.grounding_dino() if det_kind == "grounding-dino" else T.mm_grounding_dino()
        det = GroundingDinoDetector(ready(m, det_kind), p, tok, device,
                                    model_dtype(det_kind, precision))
        sm, sp = T.sam_hq()
        seg = SamHQSegmenter(ready(sm, "sam-hq"), sp, device, model_dtype("sam-hq", precision))
    if sem_kind == "eomt":
        from labeling.semantic.eomt import EomtSemantic

        em, ep = T.eomt()
        sem = EomtSemantic(ready(em, "eomt"), ep, device, model_dtype("eomt", precision))
    else:
        from labeling.semantic.mask2former import Mask2FormerSemantic

        mm, mp = T.mask2former()
        sem = Mask2FormerSemantic(ready(mm, "mask2former"), mp, device,       # the tiny
                                  model_dtype("mask2former", precision), size=None)  # model's size
    return det, seg, sem, {"detector": det_kind, "segmenter": seg_kind, "semantic": sem_kind}


def cached(key, build):
    """Build once per process per key (preset, device, precision, specs)."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]
