"""Text prompts for Grounding DINO: one per ImageNet class, from the shipped prompt table.

The table (labeling/detection/imagenet_prompts.tsv, made by ``labeling.detection.prompt_table`` from timm's
lemmas: Latin binomials, spelling variants and phrases shared between classes dropped, a few
hand overrides; docs/LABELING.md) gives each class up to 3 phrases. Each phrase ends with " ."
so a multi-word phrase ("tree frog") stays ONE phrase, and the phrases are synonyms of one class:
``"great white shark . white shark . man-eater ."``; the table's phrases are already cleaned
(``prompt_table.clean_lemma``), so they never hold the detector's separators '.' and '?'.
"""
from __future__ import annotations

from dataclasses import dataclass

from c2fmae_data.format.categories import NUM_IMAGENET_CLASSES
from labeling.detection.prompt_table import load

DEFAULT_MAX_LEMMAS = 3


@dataclass(frozen=True)
class Prompt:
    """One image's detector prompt: the phrases, all naming the same class (group)."""
    phrases: "tuple[str, ...]"

    @property
    def text(self) -> str:
        return " ".join(f"{p} ." for p in self.phrases)


def class_prompt(class_index: int, max_lemmas: int = DEFAULT_MAX_LEMMAS) -> Prompt:
    """The prompt of ImageNet class ``class_index`` (timm order)."""
    if not 0 <= int(class_index) < NUM_IMAGENET_CLASSES:
        raise ValueError(f"class_index {class_index} outside 0..{NUM_IMAGENET_CLASSES - 1}")
    phrases = load()[int(class_index)][:max_lemmas]
    if not phrases:
        raise ValueError(f"class {class_index} has no usable lemma")
    return Prompt(phrases)
