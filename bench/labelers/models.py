"""Full-size labeling models with random weights, for the FLOP table and the GPU benchmark.

Each stage is the architecture of the pinned checkpoint (labeling/presets/catalog.py), built from its
config shapes (no download, same compute):

- Grounding DINO-B (`IDEA-Research/grounding-dino-base`): Swin-B 384 / window 12, BERT-base,
  900 queries, 6+6 layers. MM-Grounding-DINO-B (`openmmlab-community/mm_grounding_dino_base_all`):
  the same Swin-B/BERT-base shapes (MMDetection's swin-b Grounding DINO config).
- SAM-HQ ViT-H (`syscv-community/sam-hq-vit-huge`): 1280 wide, 32 layers, 16 heads, global
  attention at 7/15/23/31.
- SAM 3 (`facebook/sam3`): ``Sam3Config()`` defaults, which the transformers docs give as
  facebook/sam3's configuration (ViT 1024 x 32 layers at 1008 px, patch 14; 200 DETR queries).
- Mask2Former Swin-L (`facebook/mask2former-swin-large-coco-panoptic`): Swin-L 384 / window 12,
  200 queries. OneFormer Swin-L (`shi-labs/oneformer_coco_swin_large`): Swin-L, 150 queries
  (the official `150_16_swin_l_oneformer_coco_100ep` checkpoint). EoMT-L
  (`tue-mps/coco_panoptic_eomt_large_640`): ``EomtConfig()`` defaults = the hub config (ViT-L
  patch 16 at 640, 200 queries, 4 query blocks, 4 register tokens).

Processors are the hub's settings (Grounding DINO / Mask2Former / OneFormer short side 800, long
<= 1333; SAM-HQ 1024; SAM 3 1008; EoMT 640 padded square); tokenizers are the project's
character-level stand-ins (labeling/presets/tiny_random.py), so no vocabulary file is needed.
"""
from __future__ import annotations

SEMANTICS = ("mask2former", "oneformer", "eomt")
#: instance presets -> the (detector, segmenter) kinds they use
INSTANCE_PRESETS = {"default": ("grounding-dino", "sam-hq"), "sam3": ("sam3", "sam3"),
                    "mm-gdino": ("mm-grounding-dino", "sam-hq")}
#: the offline tiny preset with the same code path as each instance preset
TINY_OF = {"default": "tiny-random", "sam3": "sam3-tiny-random",
           "mm-gdino": "mm-gdino-tiny-random"}


def _swin(embed, heads, outs):
    from transformers import SwinConfig

    return SwinConfig(image_size=384, embed_dim=embed, depths=[2, 2, 18, 2], num_heads=heads,
                      window_size=12, out_features=outs)


def _labels() -> dict:
    from c2fmae_data.format.categories import COCO_PANOPTIC_NAMES

    id2label = dict(enumerate(COCO_PANOPTIC_NAMES))
    return {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def configs() -> dict:
    """kind -> (model class, config) of the full-size architecture."""
    import transformers as T

    swin_b = _swin(128, [4, 8, 16, 32], ["stage2", "stage3", "stage4"])
    swin_l = _swin(192, [6, 12, 24, 48], ["stage1", "stage2", "stage3", "stage4"])
    vis = T.SamHQVisionConfig(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
                              global_attn_indexes=[7, 15, 23, 31])
    return {
        "grounding-dino": (T.GroundingDinoForObjectDetection, T.GroundingDinoConfig(
            backbone_config=swin_b, text_config=T.BertConfig())),
        "mm-grounding-dino": (T.MMGroundingDinoForObjectDetection, T.MMGroundingDinoConfig(
            backbone_config=swin_b, text_config=T.BertConfig())),
        "sam-hq": (T.SamHQModel, T.SamHQConfig(
            vision_config=vis, mask_decoder_config=T.SamHQMaskDecoderConfig(vit_dim=1280))),
        "sam3": (T.Sam3Model, T.Sam3Config()),
        "mask2former": (T.Mask2FormerForUniversalSegmentation, T.Mask2FormerConfig(
            backbone_config=swin_l, num_queries=200, **_labels())),
        "oneformer": (T.OneFormerForUniversalSegmentation, T.OneFormerConfig(
            backbone_config=swin_l, num_queries=150, **_labels())),
        "eomt": (T.EomtForUniversalSegmentation, T.EomtConfig(num_labels=133, **_labels())),
    }


def build_model(kind: str, device="cpu", dtype=None):
    """The full-size model of ``kind`` with random weights, made directly on ``device``
    ("meta": no memory at all), in eval mode."""
    import torch

    cls, cfg = configs()[kind]
    torch.manual_seed(0)
    with torch.device(device):
        model = cls(cfg)
    return model.to(dtype=dtype or torch.float32).eval()


def processors() -> dict:
    """kind -> the image processor (and tokenizer) the hub checkpoint uses, built offline."""
    import transformers as T

    from labeling.presets.tiny_random import clip_tokenizer, grounding_dino

    bert = grounding_dino()[2]
    return {"grounding-dino": (T.GroundingDinoImageProcessor(), bert),
            "mm-grounding-dino": (T.GroundingDinoImageProcessor(), bert),
            "sam-hq": (T.SamImageProcessor(), None),
            "sam3": (T.Sam3ImageProcessor(), clip_tokenizer()),
            "mask2former": (T.Mask2FormerImageProcessor(), None),
            "oneformer": (T.OneFormerProcessor(image_processor=T.OneFormerImageProcessor(),
                                               tokenizer=clip_tokenizer()), None),
            "eomt": (T.EomtImageProcessor(size={"shortest_edge": 640, "longest_edge": 640},
                                          do_pad=True), None)}


def wrap(kind: str, model, device, dtype, procs=None):
    """The labeling/ wrapper of ``kind`` around ``model`` (the code real runs use)."""
    from labeling.detection.grounding_dino import GroundingDinoDetector
    from labeling.segmentation.sam3 import Sam3Instances
    from labeling.segmentation.sam_hq import SamHQSegmenter
    from labeling.semantic.mask2former import Mask2FormerSemantic
    from labeling.semantic.eomt import EomtSemantic

    proc, tok = (procs or processors())[kind]
    if kind in ("grounding-dino", "mm-grounding-dino"):
        return GroundingDinoDetector(model, proc, tok, device, dtype)
    if kind == "sam-hq":
        return SamHQSegmenter(model, proc, device, dtype)
    if kind == "sam3":
        return Sam3Instances(model, proc, tok, device, dtype)
    if kind == "eomt":
        return EomtSemantic(model, proc, device, dtype)
    return Mask2FormerSemantic(model, proc, device, dtype, oneformer=kind == "oneformer")


def full_labeler(preset: str, semantic: str, device: str, precision: str = "bf16"):
    """A ``Labeler`` of ``preset`` (+ ``semantic``) from full-size random-weight models, each in
    the dtype the real loader gives it (detectors fp32 / TF32, the rest ``precision``)."""
    from labeling.labeler import Labeler
    from labeling.presets.loading import accelerate, model_dtype
    from labeling.presets.catalog import TINY_RANDOM_POLICY

    procs = processors()
    parts = {}
    for kind in dict.fromkeys((*INSTANCE_PRESETS[preset], semantic)):
        dt = model_dtype(kind, precision)
        model = accelerate(build_model(kind, device, dt), kind, device)
        parts[kind] = wrap(kind, model, device, dt, procs)
    det_kind, seg_kind = INSTANCE_PRESETS[preset]
    # random weights score ~0.5 at best: the walk goes to 0 so that boxes reach the segmenter
    return Labeler(parts[det_kind], parts[seg_kind], parts[semantic], policy=TINY_RANDOM_POLICY,
                   preset=f"{preset}-full-random", device=device, precision=precision)


def tiny_labeler(preset: str, semantic: str, device: str = "cpu", precision: str = "fp32"):
    """The offline tiny preset with ``preset``'s code path; OneFormer has no tiny config, so its
    slot is filled by the tiny Mask2Former (same wrapper class)."""
    import warnings

    from labeling.labeler import Labeler

    sem = "eomt" if semantic == "eomt" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Labeler.from_preset(TINY_OF[preset], device=device, precision=precision,
                                   semantic=sem)
