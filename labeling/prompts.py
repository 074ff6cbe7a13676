"""Text prompts for Grounding DINO: one per ImageNet class, from the shipped prompt table.

The table (labeling/data/imagenet_prompts.tsv, made by ``labeling.prompt_table`` from timm's
lemmas: Latin binomials, spelling variants and phrases shared between classes dropped, a few
hand overrides; docs/LABELING.md) gives each class up to 3 phrases. Each phrase ends with " ."
so a multi-word phrase ("tree frog") stays ONE phrase, and the phrases are synonyms of one class:
``"great white shark . white shark . man-eater ."``. ``clean_lemma``: lower-case, characters other
than a-z 0-9 - ' become spaces ('.' and '?' are the detector's separators), spaces collapsed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from c2fmae_data.categories import NUM_IMAGENET_CLASSES

DEFAULT_MAX_LEMMAS = 3
_DROP = re.compile(r"[^0-9a-z'\- ]+")


@dataclass(frozen=True)
class Prompt:
    """One image's detector prompt: the phrases, all naming the same class (group)."""
    phrases: "tuple[str, ...]"

    @property
    def text(self) -> str:
        return " ".join(f"{p} ." for p in self.phrases)


def clean_lemma(lemma: str) -> str:
    s = _DROP.sub(" ", lemma.lower())
    return " ".join(s.split())


def class_prompt(class_index: int, max_lemmas: int = DEFAULT_MAX_LEMMAS) -> Prompt:
    """The prompt of ImageNet class ``class_index`` (timm order)."""
    if not 0 <= int(class_index) < NUM_IMAGENET_CLASSES:
        raise ValueError(f"class_index {class_index} outside 0..{NUM_IMAGENET_CLASSES - 1}")
    from .prompt_table import load

    phrases = load()[int(class_index)][:max_lemmas]
    if not phrases:
        raise ValueError(f"class {class_index} has no usable lemma")
    return Prompt(phrases)
