"""Load the real models of a preset (hub id + revision, or a local weights dir) once per process."""
from __future__ import annotations

import os
import threading

from .presets import ModelSpec

_CACHE: dict = {}
_LOCK = threading.Lock()
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def torch_dtype(precision: str):
    import torch

    if precision not in DTYPES:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[precision])


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
    dtype = torch_dtype(precision)
    src = local_path(spec, weights_dir) or spec.source
    kw = {} if os.path.exists(src) else {"revision": spec.revision}
    if spec.kind == "grounding-dino":
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        from .detector import GroundingDinoDetector

        proc = AutoProcessor.from_pretrained(src, **kw)
        model = AutoModelForZeroShotObjectDetection.from_pretrained(src, **kw)
        return GroundingDinoDetector(model.to(device, dtype), proc.image_processor,
                                     proc.tokenizer, device, dtype)
    if spec.kind == "sam-hq":
        from transformers import SamHQModel, SamHQProcessor

        from .segmenter import SamHQSegmenter

        proc = SamHQProcessor.from_pretrained(src, **kw)
        model = SamHQModel.from_pretrained(src, **kw)
        return SamHQSegmenter(model.to(device, dtype), proc.image_processor, device, dtype)
    if spec.kind == "sam-hq-official":
        from .segmenter import OfficialSamHQSegmenter

        return OfficialSamHQSegmenter(src, dict(spec.options).get("model_type", "vit_h"), device)
    if spec.kind in ("mask2former", "oneformer"):
        from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation

        from .semantic import Mask2FormerSemantic

        pkw = dict(kw)
        if spec.kind == "oneformer":
            from transformers import AutoProcessor as P

            from .weights import processor_kwargs

            if os.path.isdir(src):      # class info from the weights dir, not the hub
                pkw.update(processor_kwargs(src))
        else:
            P = AutoImageProcessor
        proc = P.from_pretrained(src, **pkw)
        model = AutoModelForUniversalSegmentation.from_pretrained(src, **kw)
        return Mask2FormerSemantic(model.to(device, dtype), proc, device, dtype,
                                   oneformer=spec.kind == "oneformer")
    raise ValueError(f"unknown model kind {spec.kind!r}")


def load_tiny_random(device: str, precision: str):
    from . import tiny_random as T
    from .detector import GroundingDinoDetector
    from .segmenter import SamHQSegmenter
    from .semantic import Mask2FormerSemantic

    dtype = torch_dtype(precision)
    gd, gp, tok = T.grounding_dino()
    sm, sp = T.sam_hq()
    mm, mp = T.mask2former()
    return (GroundingDinoDetector(gd.to(device, dtype), gp, tok, device, dtype),
            SamHQSegmenter(sm.to(device, dtype), sp, device, dtype),
            Mask2FormerSemantic(mm.to(device, dtype), mp, device, dtype, size=None))


def cached(key, build):
    """Build once per process per key (preset, device, precision, specs)."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]
