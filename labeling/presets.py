"""Model presets: hub ids, revisions, backends, and how each model is loaded.

``revision`` None means the hub's default branch at download time; ``c2fmae-data weights
download`` resolves it to the exact commit and records it in ``weights.lock.json`` of the weights
dir, and loading from that dir (``weights_dir=``) is what pins a labeling run (docs/LABELING.md).
"""
from __future__ import annotations

import os

from dataclasses import asdict, dataclass, replace

from .thresholds import ThresholdPolicy


@dataclass(frozen=True)
class ModelSpec:
    role: str                   # detector | segmenter | semantic
    kind: str                   # grounding-dino | sam-hq | sam-hq-official | mask2former | oneformer
    source: str                 # hub id, local directory, or .pth file (sam-hq-official)
    revision: "str | None" = None
    options: "tuple[tuple[str, str], ...]" = ()   # e.g. (("model_type", "vit_h"),)

    def to_json(self) -> dict:
        d = asdict(self)
        d["options"] = dict(self.options)
        return d


PRESETS: "dict[str, dict[str, ModelSpec]]" = {
    "default": {
        "detector": ModelSpec("detector", "grounding-dino", "IDEA-Research/grounding-dino-base"),
        "segmenter": ModelSpec("segmenter", "sam-hq", "syscv-community/sam-hq-vit-huge"),
        "semantic": ModelSpec("semantic", "mask2former",
                              "facebook/mask2former-swin-large-coco-panoptic"),
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
TINY_RANDOM_POLICY = ThresholdPolicy(start=0.35, floor=0.0, step=0.05)
PRESET_NAMES = ("default", "tiny", "tiny-random", "fake", "fake:<latency_ms>")


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
    if name in ("fake", "tiny-random") or name in PRESETS:
        return name, 0.0
    raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")


def resolve_specs(preset: str, overrides: "dict[str, str]") -> "dict[str, ModelSpec]":
    """The preset's specs with per-role overrides: a hub id (``org/name`` or ``org/name@<commit>``
    to pin a revision) / local dir, 'oneformer', or 'sam-hq-official:<checkpoint.pth>[:<type>]'."""
    specs = dict(PRESETS[preset])
    for role, value in overrides.items():
        if value is None:
            continue
        if role not in specs:
            raise ValueError(f"unknown model role {role!r}")
        if role == "semantic" and value == "oneformer":
            specs[role] = ONEFORMER
        elif role == "segmenter" and value.startswith("sam-hq-official:"):
            parts = value.split(":")
            mt = parts[2] if len(parts) > 2 else "vit_h"
            specs[role] = ModelSpec(role, "sam-hq-official", parts[1],
                                    options=(("model_type", mt),))
        elif "@" in value and not os.path.exists(value):   # hub id pinned to a commit
            source, rev = value.rsplit("@", 1)
            if not source or not rev:
                raise ValueError(f"{role} override {value!r}: expected org/name@<revision>")
            specs[role] = replace(specs[role], source=source, revision=rev)
        else:
            specs[role] = replace(specs[role], source=value, revision=None)
    return specs
