"""HQ-SAM box-prompted segmentation behind one interface, two backends.

- ``SamHQSegmenter``: transformers ``SamHQModel`` (default). The vision encoder runs once per
  batch; the mask decoder is prompted with ALL kept boxes of an image in one call,
  ``multimask_output=False`` and ``hq_token_only=False`` (HQ-SAM's recommendation for images with
  several objects: the HQ mask is fused with SAM's, rather than the HQ token alone).
- ``OfficialSamHQSegmenter``: the official ``segment-anything-hq`` package with an official
  ``.pth`` checkpoint. Optional: imported lazily, NOT installed in this environment.

Both return, per image, a bool array (N, H, W) at the size of the image they were given.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class Segmenter(Protocol):
    def segment(self, images: "Sequence[np.ndarray]",
                boxes: "Sequence[np.ndarray]") -> "list[np.ndarray]": ...


def _empty(im: np.ndarray) -> np.ndarray:
    return np.zeros((0, *im.shape[:2]), dtype=bool)


class SamHQSegmenter:
    def __init__(self, model, image_processor, device: str = "cpu", dtype=None,
                 hq_token_only: bool = False):
        import torch

        self.model, self.image_processor = model.eval(), image_processor
        self.device, self.dtype = device, dtype or torch.float32
        self.hq_token_only = hq_token_only

    def segment(self, images, boxes):
        import torch

        out = [_empty(im) for im in images]
        todo = [i for i, b in enumerate(boxes) if len(b)]
        if not todo:
            return out
        inp = self.image_processor(
            images=[torch.from_numpy(np.ascontiguousarray(images[i])).permute(2, 0, 1)
                    for i in todo], return_tensors="pt")
        with torch.inference_mode():
            emb, inter = self.model.get_image_embeddings(
                inp["pixel_values"].to(self.device, self.dtype))
            for j, i in enumerate(todo):
                orig = inp["original_sizes"][j].tolist()
                resh = inp["reshaped_input_sizes"][j].tolist()
                sy, sx = resh[0] / orig[0], resh[1] / orig[1]
                b = torch.as_tensor(np.asarray(boxes[i], np.float32) * [sx, sy, sx, sy])
                res = self.model(image_embeddings=emb[j:j + 1],
                                 intermediate_embeddings=[e[j:j + 1] for e in inter],
                                 input_boxes=b[None].to(self.device, self.dtype),
                                 multimask_output=False, hq_token_only=self.hq_token_only)
                masks = self.image_processor.post_process_masks(
                    [res.pred_masks[0].float()], inp["original_sizes"][j:j + 1],
                    inp["reshaped_input_sizes"][j:j + 1], binarize=True)[0]
                out[i] = masks[:, 0].cpu().numpy().astype(bool)
        return out


class OfficialSamHQSegmenter:
    """The official ``segment_anything_hq`` predictor (pip install segment-anything-hq; not
    installed here). ``model_type`` is one of vit_h / vit_l / vit_b / vit_tiny."""

    def __init__(self, checkpoint: str, model_type: str = "vit_h", device: str = "cpu",
                 hq_token_only: bool = False):
        try:
            from segment_anything_hq import SamPredictor, sam_model_registry
        except ImportError as e:
            raise ImportError("the official HQ-SAM backend needs `pip install segment-anything-hq`"
                              " (optional; the default backend is transformers' SamHQModel)") from e
        sam = sam_model_registry[model_type](checkpoint=checkpoint).to(device).eval()
        self.predictor, self.device, self.hq_token_only = SamPredictor(sam), device, hq_token_only

    def segment(self, images, boxes):
        import torch

        out = []
        for im, b in zip(images, boxes):
            if not len(b):
                out.append(_empty(im))
                continue
            self.predictor.set_image(np.ascontiguousarray(im))
            tb = self.predictor.transform.apply_boxes_torch(
                torch.as_tensor(np.asarray(b, np.float32), device=self.device), im.shape[:2])
            with torch.inference_mode():
                masks, _, _ = self.predictor.predict_torch(
                    point_coords=None, point_labels=None, boxes=tb, multimask_output=False,
                    hq_token_only=self.hq_token_only)
            out.append(masks[:, 0].cpu().numpy().astype(bool))
        return out
