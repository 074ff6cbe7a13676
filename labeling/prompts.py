"""Text prompts for Grounding DINO built from an ImageNet synset's lemmas.

Rule (docs/LABELING.md): take the synset's lemmas from timm's ImageNet metadata in their listed
order, lower-case them, replace characters that the detector uses as separators ('.', '?') and
other punctuation except '-' and "'" by spaces, collapse whitespace, drop duplicates and keep the
first ``max_lemmas`` (default 3). Each lemma becomes one phrase ending with " ." so a multi-word
lemma ("tinca tinca") stays ONE phrase, and several lemmas are synonyms of one class:
``"tench . tinca tinca ."``. A detection is mapped back to the phrase whose tokens score highest.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from c2fmae_data.categories import NUM_IMAGENET_CLASSES, imagenet_lemmas

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


def phrases_for(lemmas, max_lemmas: int = DEFAULT_MAX_LEMMAS) -> "tuple[str, ...]":
    out: list[str] = []
    for lem in lemmas:
        c = clean_lemma(lem)
        if c and c not in out:
            out.append(c)
        if len(out) == max_lemmas:
            break
    return tuple(out)


def class_prompt(class_index: int, max_lemmas: int = DEFAULT_MAX_LEMMAS) -> Prompt:
    """The prompt of ImageNet class ``class_index`` (timm order)."""
    if not 0 <= int(class_index) < NUM_IMAGENET_CLASSES:
        raise ValueError(f"class_index {class_index} outside 0..{NUM_IMAGENET_CLASSES - 1}")
    phrases = phrases_for(imagenet_lemmas()[int(class_index)], max_lemmas)
    if not phrases:
        raise ValueError(f"class {class_index} has no usable lemma")
    return Prompt(phrases)
