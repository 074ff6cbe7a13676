"""Model presets: hub ids, revisions, backends, and how each model is loaded.

``revision`` None means the hub's default branch at download time; ``c2fmae-data weights
download`` resolves it to the exact commit and records it in ``weights.lock.json`` of the weights
dir, and loading from that dir (``weights_dir=``) is what pins a labeling run (docs/LABELING.md).
"""
from __future__ import annotations

import os

from dataclasses import asdict, dataclass, replace

from labeling.detection.thresholds import ThresholdPolicy


@dataclass(frozen=True)
class ModelSpec:
    role: str                   # detector | segmenter | semantic | instances (detector+segmenter)
    kind: str                   # grounding-dino | mm-grounding-dino | sam-hq | sam-hq-official |
                                # sam3 | mask2former | oneformer | eomt
    source: str                 # hub id, local directory, or .pth file (sam-hq-official)
    revision: "str | None" = None
    options: "tuple[tuple[str, str], ...]" = ()   # e.g. (("model_type", "vit_h"),)

    def to_json(self) -> dict:
        d = asdict(self)
        d["options"] = dict(self.options)
        return d


#: SAM 3 detects AND segments: one model fills both roles (loaded once, see Labeler.from_preset)
SAM3 = ModelSpec("instances", "sam3", "facebook/sam3")
MASK2FORMER_L = ModelSpec("semantic", "mask2former", "facebook/mask2former-swin-large-coco-panoptic")
SAM_HQ_H = ModelSpec("segmenter", "sam-hq", "syscv-community/sam-hq-vit-huge")

PRESETS: "dict[str, dict[str, ModelSpec]]" = {
    "default": {
        "detector": ModelSpec("detector", "grounding-dino", "IDEA-Research/grounding-dino-base"),
        "segmenter": SAM_HQ_H,
        "semantic": MASK2FORMER_L,
    },
    "sam3": {"detector": SAM3, "segmenter": SAM3, "semantic": MASK2FORMER_L},
    "mm-gdino": {
        "detector": ModelSpec("detector", "mm-grounding-dino",
                              "openmmlab-community/mm_grounding_dino_base_all"),
        "segmenter": SAM_HQ_H,
        "semantic": MASK2FORMER_L,
    },
    "tiny": {
        "detector": ModelSpec("detector", "grounding-dino", "IDEA-Research/grounding-dino-tiny"),
        "segmenter": ModelSpec("segmenter", "sam-hq", "syscv-community/sam-hq-vit-base"),
        "semantic": ModelSpec("semantic", "mask2former",
                              "facebook/mask2former-swin-tiny-coco-panoptic"),
    },
}
#: OneFormer, selectable with semantic="oneformer" (same 133-class COCO-panoptic space)
ONEFORMER = ModelSpec("semantic", "oneformer", "shi-labs/oneformer_coco_swin_large")
#: EoMT, selectable with semantic="eomt" (COCO panoptic, contiguous 133-class order)
EOMT = ModelSpec("semantic", "eomt", "tue-mps/coco_panoptic_eomt_large_640")
SEMANTIC_CHOICES = {"mask2former": MASK2FORMER_L, "oneformer": ONEFORMER, "eomt": EOMT}
#: licences of the preset models as their model cards state them (docs/LABELING.md); SAM 3's
#: weights are gated: accept the licence on the hub and log in before `weights download`
LICENSES = {
    "IDEA-Research/grounding-dino-base": "Apache-2.0",
    "openmmlab-community/mm_grounding_dino_base_all": "Apache-2.0 (MMDetection)",
    "syscv-community/sam-hq-vit-huge": "Apache-2.0",
    "facebook/sam3": "SAM License (Meta, custom; gated: accept it on huggingface.co/facebook/sam3)",
    "facebook/mask2former-swin-large-coco-panoptic": "see model card (Mask2Former code: MIT)",
    "shi-labs/oneformer_coco_swin_large": "MIT",
    "tue-mps/coco_panoptic_eomt_large_640": "MIT",
}
TINY_RANDOM_POLICY = ThresholdPolicy(start=0.35, floor=0.0, step=0.05)
#: SAM 3's scores are sigmoid(query) * sigmoid(presence): its own predictor keeps >= 0.5 and
#: transformers' post-processing defaults to 0.3, so the walk goes 0.5 -> 0.3 (docs/LABELING.md)
PRESET_POLICIES = {"sam3": ThresholdPolicy(start=0.5, floor=0.3, step=0.05)}
#: offline presets: real transformers classes from tiny configs (labeling/presets/tiny_random.py);
#: value = the (detector, segmenter) kinds they build
TINY_RANDOM = {"tiny-random": ("grounding-dino", "sam-hq"),
               "sam3-tiny-random": ("sam3", "sam3"),
               "mm-gdino-tiny-random": ("mm-grounding-dino", "sam-hq")}
#: presets whose hub models `c2fmae-data weights download --models` can fetch
DOWNLOADABLE = ("default", "tiny", "sam3", "mm-gdino")
PRESET_NAMES = ("default", "sam3", "mm-gdino", "tiny", *TINY_RANDOM, "fake", "fake:<latency_ms>")


def parse_preset(name: str) -> "tuple[str, float]":
    """('fake', latency_ms) for 'fake:<ms>', else (name, 0)."""
    if name.startswith("fake:"):
        try:
            ms = float(name.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"bad preset {name!r}: expected fake:<latency_ms>") from None
        if ms < 0:
            raise ValueError(f"bad preset {name!r}: latency must be >= 0")
        return "fake", ms
    if name == "fake" or name in TINY_RANDOM or name in PRESETS:
        return name, 0.0
    raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")


def resolve_specs(preset: str, overrides: "dict[str, str]") -> "dict[str, ModelSpec]":
    """The preset's specs with per-role overrides: a hub id (``org/name`` or ``org/name@<commit>``
    to pin a revision) / local dir, 'mask2former' / 'oneformer' / 'eomt' (semantic), or
    'sam-hq-official:<checkpoint.pth>[:<type>]'. A model that fills both instance roles (SAM 3)
    follows a detector override unless the segmenter is overridden too."""
    specs = dict(PRESETS[preset])
    shared = specs["detector"] is specs["segmenter"]
    for role, value in overrides.items():
        if value is None:
            continue
        if role not in specs:
            raise ValueError(f"unknown model role {role!r}")
        if role == "semantic" and value in SEMANTIC_CHOICES:
            specs[role] = SEMANTIC_CHOICES[value]
        elif role == "segmenter" and value.startswith("sam-hq-official:"):
            parts = value.split(":")
            mt = parts[2] if len(parts) > 2 else "vit_h"
            specs[role] = ModelSpec(role, "sam-hq-official", parts[1],
                                    options=(("model_type", mt),))
        else:
            # a segmenter override of SAM 3 is a box-prompted SAM-HQ fed SAM 3's boxes
            base = SAM_HQ_H if role == "segmenter" and specs[role].kind == "sam3" else specs[role]
            specs[role] = _hub_override(role, base, value)
    if shared and overrides.get("detector") is not None and overrides.get("segmenter") is None:
        specs["segmenter"] = specs["detector"]
    return specs


def _hub_override(role: str, base: ModelSpec, value: str) -> ModelSpec:
    if "@" in value and not os.path.exists(value):   # hub id pinned to a commit
        source, rev = value.rsplit("@", 1)
        if not source or not rev:
            raise ValueError(f"{role} override {value!r}: expected org/name@<revision>")
        return replace(base, source=source, revision=rev)
    return replace(base, source=value, revision=None)
