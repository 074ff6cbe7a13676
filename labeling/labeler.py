"""``Labeler``: prepare (CPU) + label (GPU) of ImageNet images into format-v1 records.

    lab = Labeler.from_preset("tiny-random")           # or "default", "tiny", "fake", "fake:20"
    records = lab.label_items([SourceImage(key, wnid, class_index, data)])

Per batch: Grounding DINO on the class prompt -> adaptive threshold walk -> class-aware NMS + cap
-> HQ-SAM prompted with all kept boxes -> compose the id map; Mask2Former -> semantic map. One
image's failure (including CUDA OOM after retries at a smaller size) becomes a failed record for
that image only. No Ray in here: pipelines/ distributes it.
"""
from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Any, Sequence

import numpy as np

from c2fmae_data.format.schema import (STATUS_OK, encode_instance_png, encode_semantic_png,
                                failed_record)
from c2fmae_data.format.manifest import code_version

from labeling import compose as C
from labeling.images import (DEFAULT_MAX_MODEL_SIDE, DEFAULT_MAX_PIXELS, Prepared, SourceImage,
                     model_copy, prepare)
from labeling.preflight import check_finite
from labeling.presets.catalog import (PRESET_POLICIES, TINY_RANDOM, TINY_RANDOM_POLICY,
                                      parse_preset, resolve_specs)
from labeling.detection.prompts import DEFAULT_MAX_LEMMAS, class_prompt
from labeling.detection.thresholds import ThresholdPolicy, select

__all__ = ["Labeler", "SourceImage", "Prepared", "PLACEHOLDER_WARNING"]
log = logging.getLogger(__name__)
PLACEHOLDER_WARNING = ("tiny-random preset: RANDOM WEIGHTS - the labels it writes are "
                       "PLACEHOLDERS, useful only to test the pipeline, never to train on")
OOM_RETRY_SIDES = (1024, 512)     # a single image hitting CUDA OOM is retried at these sizes
_KNOWN = {"weights_dir", "thresholds", "max_pixels", "max_model_side", "max_lemmas",
          "detector", "segmenter", "semantic", "models_override"}


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def _to_source(arr: np.ndarray, p: Prepared) -> np.ndarray:
    """Crop the padding of a model-sized map and resize it (nearest) to the source size."""
    vh, vw = p.valid_hw or arr.shape[:2]
    arr = arr[:vh, :vw]
    if arr.shape[:2] != (p.height, p.width):
        import cv2

        dtype = arr.dtype
        arr = cv2.resize(arr.astype(np.float32 if dtype == np.int32 else dtype),
                         (p.width, p.height), interpolation=cv2.INTER_NEAREST).astype(dtype)
    return np.ascontiguousarray(arr)


class Labeler:
    def __init__(self, detector, segmenter, semantic, *, policy: "ThresholdPolicy | None" = None,
                 preset: str = "custom", device: str = "cpu", precision: str = "fp32",
                 models: "dict[str, Any] | None" = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_model_side: int = DEFAULT_MAX_MODEL_SIDE,
                 max_lemmas: int = DEFAULT_MAX_LEMMAS, placeholder: bool = False):
        self.detector, self.segmenter, self.semantic = detector, segmenter, semantic
        self.policy = policy or ThresholdPolicy()
        self.preset, self.device, self.precision = preset, device, precision
        self.models = models or {}
        self.max_pixels, self.max_model_side, self.max_lemmas = max_pixels, max_model_side, max_lemmas
        self.placeholder = placeholder

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, models: str = "default", device: str = "cpu", precision: str = "fp32",
                    **overrides) -> "Labeler":
        """Presets: default | sam3 | mm-gdino | tiny | tiny-random | sam3-tiny-random |
        mm-gdino-tiny-random | fake | fake:<latency_ms>. Overrides:
        weights_dir, thresholds (ThresholdPolicy or dict), max_pixels, max_model_side,
        max_lemmas, detector / segmenter / semantic (hub id, local dir, 'oneformer', 'eomt',
        'sam-hq-official:<ckpt.pth>[:<model_type>]')."""
        from labeling.presets.loading import _load, cached, load_tiny_random, torch_dtype

        bad = set(overrides) - _KNOWN
        if bad:
            raise TypeError(f"unknown Labeler option(s) {sorted(bad)}; known: {sorted(_KNOWN)}")
        torch_dtype(precision)  # validates
        name, latency = parse_preset(models)
        thr = overrides.get("thresholds")
        policy = thr if isinstance(thr, ThresholdPolicy) else (
            ThresholdPolicy(**thr) if thr else None)
        common = {k: overrides[k] for k in ("max_pixels", "max_model_side", "max_lemmas")
                  if overrides.get(k) is not None}
        if name == "fake":
            from labeling.presets.fakes import FakeDetector, FakeSegmenter, FakeSemantic

            info = {r: {"kind": "fake", "latency_ms": latency}
                    for r in ("detector", "segmenter", "semantic")}
            return cls(FakeDetector(latency_ms=latency), FakeSegmenter(), FakeSemantic(),
                       policy=policy, preset=models, device=device, precision=precision,
                       models=info, **common)
        if name in TINY_RANDOM:
            warnings.warn(PLACEHOLDER_WARNING, stacklevel=2)
            log.warning(PLACEHOLDER_WARNING)
            sem_choice = overrides.get("semantic")
            det, seg, sem, kinds = cached(
                (name, device, precision, sem_choice),
                lambda: load_tiny_random(device, precision, name, sem_choice))
            info = {r: {"kind": k, "source": f"{name} (labeling/presets/tiny_random.py)", "seed": 0}
                    for r, k in kinds.items()}
            return cls(det, seg, sem, policy=policy or TINY_RANDOM_POLICY, preset=models,
                       device=device, precision=precision, models=info, placeholder=True,
                       **common)
        specs = resolve_specs(name, {r: overrides.get(r) for r in
                                     ("detector", "segmenter", "semantic")})
        wdir = overrides.get("weights_dir")
        loaded = {r: cached((s, device, precision, wdir),
                            lambda s=s: _load(s, device, precision, wdir))
                  for r, s in specs.items()}
        info = {r: {**s.to_json(), **cls._pinned(s, wdir)} for r, s in specs.items()}
        return cls(loaded["detector"], loaded["segmenter"], loaded["semantic"],
                   policy=policy or PRESET_POLICIES.get(name), preset=models, device=device, precision=precision, models=info, **common)

    @staticmethod
    def _pinned(spec, wdir) -> dict:
        if not wdir:
            return {}
        from labeling.presets.weights import read_lock

        entry = read_lock(wdir).get("models", {}).get(spec.source, {})
        return {"weights_dir": str(wdir), "revision": entry.get("revision", spec.revision)}

    def provenance(self) -> "dict[str, Any]":
        return {"labeler": "labeling.Labeler", "preset": self.preset, "models": self.models,
                "thresholds": self.policy.to_json(), "max_lemmas": self.max_lemmas,
                "max_pixels": self.max_pixels, "max_model_side": self.max_model_side,
                "precision": self.precision, "device": self.device,
                "code_version": code_version(), "placeholder_labels": self.placeholder}

    # ------------------------------------------------------------------ stages
    def prepare(self, item: SourceImage) -> "Prepared | dict":
        return prepare(item, max_pixels=self.max_pixels, max_model_side=self.max_model_side)

    def label_items(self, items: "Sequence[SourceImage]") -> "list[dict]":
        return self.label([self.prepare(it) for it in items])

    def label(self, batch: "Sequence[Prepared | dict]") -> "list[dict]":
        """One complete record per input, in input order (failed records pass through)."""
        out: list = [None] * len(batch)
        todo = []
        for i, p in enumerate(batch):
            if isinstance(p, dict):
                out[i] = p
            elif not 0 <= p.class_index < 1000:
                out[i] = failed_record(p.key, f"class_index {p.class_index} has no class name "
                                       "to prompt the detector with", **self._base(p))
            else:
                todo.append(i)
        try:
            recs = self._label_group([batch[i] for i in todo])
            for i, r in zip(todo, recs):
                out[i] = r
        except Exception as e:  # noqa: BLE001 - isolate the failing image(s)
            if len(todo) > 1:
                log.warning("batch of %d failed (%s); labeling one by one", len(todo), e)
            for i in todo:
                out[i] = self._label_one(batch[i], first_error=e if len(todo) == 1 else None)
        return out

    def preflight(self) -> dict:
        """One generated image through every model, unisolated (labeling/preflight.py)."""
        from labeling.preflight import preflight

        return preflight(self)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _base(p: Prepared) -> dict:
        return p.base_fields()

    def _label_one(self, p: Prepared, first_error=None) -> dict:
        err = first_error
        if err is None:
            try:
                return self._label_group([p])[0]
            except Exception as e:  # noqa: BLE001
                err = e
        for side in OOM_RETRY_SIDES:
            if not _is_oom(err) or side >= max(p.model_image.shape[:2]):
                break
            self._empty_cache()
            log.warning("%s: out of memory, retrying at longest side %d", p.key, side)
            mrgb, scale, valid = model_copy(p.rgb, side)
            smaller = dataclasses.replace(p, model_rgb=mrgb, model_scale=scale, valid_hw=valid)
            try:
                return self._label_group([smaller])[0]
            except Exception as e:  # noqa: BLE001
                err = e
        return failed_record(p.key, f"labeling failed: {type(err).__name__}: {err}",
                             **self._base(p))

    def _empty_cache(self):
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass

    def _label_group(self, preps: "list[Prepared]") -> "list[dict]":
        """Label ``preps`` in buckets of one model-input size each, so that no image is padded
        to another's size: Grounding DINO's and Mask2Former's outputs for an image then do not
        depend on its batch companions (nor on the one-by-one retry path)."""
        buckets: "dict[tuple, list[int]]" = {}
        for i, p in enumerate(preps):
            buckets.setdefault(tuple(p.model_image.shape), []).append(i)
        out: list = [None] * len(preps)
        for idx in buckets.values():
            for i, rec in zip(idx, self._label_bucket([preps[i] for i in idx])):
                out[i] = rec
        return out

    def _label_bucket(self, preps: "list[Prepared]") -> "list[dict]":
        if not preps:
            return []
        images = [p.model_image for p in preps]
        prompts = [class_prompt(p.class_index, self.max_lemmas) for p in preps]
        dets = self.detector.detect(images, prompts, self.policy.floor)
        kept, thresholds = [], []
        for p, d in zip(preps, dets):
            check_finite("the detector", d.boxes, d.scores)
            vh, vw = p.valid_hw or (p.height, p.width)
            d.boxes = np.clip(d.boxes, 0, [vw, vh, vw, vh]).astype(np.float32)  # not in padding
            idx, t = select(d.boxes, d.scores, d.groups, self.policy)
            kept.append(idx)
            thresholds.append(t)
        if hasattr(self.segmenter, "segment_detections"):   # SAM 3: masks came with the boxes
            masks = self.segmenter.segment_detections(images, dets, kept)
        else:
            masks = self.segmenter.segment(images, [d.boxes[k] for d, k in zip(dets, kept)])
        sems = self.semantic.predict(images)
        return [self._record(p, d, k, t, m, s)
                for p, d, k, t, m, s in zip(preps, dets, kept, thresholds, masks, sems)]

    def _record(self, p: Prepared, d, k, t, masks, sem) -> dict:
        painted = _to_source(C.paint(masks, d.scores[k]), p)
        boxes = np.clip(d.boxes[k] * p.model_scale, 0, [p.width, p.height, p.width, p.height])
        ids, inst = C.finalize(painted, boxes, d.scores[k], [d.phrase(i) for i in k])
        sem = _to_source(np.asarray(sem, np.uint8), p)
        C.assign_categories(ids, sem, inst)
        return {"key": p.key, "wnid": p.wnid, "class_index": p.class_index,
                "width": p.width, "height": p.height, "source_size": p.source_size,
                "source_sha256": p.source_sha256, "instance_png": encode_instance_png(ids),
                "semantic_png": encode_semantic_png(sem), "num_instances": len(inst),
                "instances": inst, "threshold": float(t), "status": STATUS_OK, "reason": None,
                "image_bytes": None}
