"""The shipped ImageNet-1K prompt table (labeling/detection/imagenet_prompts.tsv) and its generator.

Rule (docs/LABELING.md, "Prompts"), applied to each synset's lemmas from timm's ImageNet
metadata, in their listed order:
  1. drop Latin binomials: a lemma after the first one that is a capitalised genus followed by
     one or two lower-case words whose last ends like a Latin epithet (``LATIN_SUFFIXES``), plus
     the binomials that suffix test misses (``LATIN_EXTRA``). BERT splits them into meaningless
     word pieces, and they take lemma slots from English synonyms;
  2. clean the rest (``clean_lemma``) and drop spelling variants: a lemma equal to an
     earlier one once hyphens and spaces are removed ("tree-frog" after "tree frog");
  3. drop a phrase that also names another class, when the class has another phrase left
     ("cardigan" is a dog and a sweater; "missile" two classes);
  4. keep the first ``MAX_LEMMAS``; then ``OVERRIDES`` replace whole prompts by hand.
The test suite checks the shipped table equals ``generate()`` and that no two classes share a
prompt. Regenerate with ``python -m labeling.detection.prompt_table``.
"""
from __future__ import annotations

import collections
import functools
import os
import re

from c2fmae_data.format.categories import imagenet_lemmas, imagenet_wnids

MAX_LEMMAS = 3
TABLE = os.path.join(os.path.dirname(__file__), "imagenet_prompts.tsv")
_BINOMIAL = re.compile(r"^[A-Z][a-z]+( [a-z]+){1,2}$")
LATIN_SUFFIXES = re.compile(r"(us|um|a|is|es|ae|ii|i|ensis|oides|ata|ica|ix|ops)$")
LATIN_EXTRA = frozenset({
    "Carcharodon carcharias", "Constrictor constrictor", "Phalangium opilio",
    "Latrodectus mactans", "Mergus serrator", "Cancer magister", "Porphyrio porphyrio",
    "Canis niger", "Canis latrans", "Canis dingo", "Felis concolor", "Panthera leo",
    "Sciurus niger", "Hylobates lar", "Erythrocebus patas", "Ailurus fulgens",
    "Oncorhynchus kisutch", "Holocanthus tricolor", "Chamaeleo chamaeleon", "Dugong dugon",
    "Ursus arctos", "Capra ibex"})
#: class index -> phrases, where the rule leaves two classes with one prompt
OVERRIDES = {
    134: ("crane bird",),                      # n02012849, the bird
    517: ("construction crane", "crane"),      # n03126707, the machine
}


_DROP = re.compile(r"[^0-9a-z'\- ]+")


def clean_lemma(lemma: str) -> str:
    """Lower-case; characters other than a-z 0-9 - ' become spaces ('.' and '?' are the
    detector's separators); spaces collapsed."""
    s = _DROP.sub(" ", lemma.lower())
    return " ".join(s.split())


def is_latin_binomial(lemma: str, position: int) -> bool:
    """Rule 1: ``lemma`` (as listed, capitalisation kept) at ``position`` in its synset."""
    if position == 0:
        return False
    if lemma in LATIN_EXTRA:
        return True
    return bool(_BINOMIAL.match(lemma)) and bool(LATIN_SUFFIXES.search(lemma.split()[-1]))


def _variant_key(phrase: str) -> str:
    return phrase.replace("-", "").replace(" ", "")


def _candidates(lemmas) -> "list[str]":
    out, seen = [], set()
    for pos, lem in enumerate(lemmas):
        if is_latin_binomial(lem, pos):
            continue
        c = clean_lemma(lem)
        if c and _variant_key(c) not in seen:
            out.append(c)
            seen.add(_variant_key(c))
    return out


def generate() -> "list[tuple[str, ...]]":
    """The 1000 prompts (tuples of phrases) by the rule above."""
    cands = [_candidates(ls) for ls in imagenet_lemmas()]
    owners = collections.Counter(p for c in cands for p in set(c))
    table = []
    for i, c in enumerate(cands):
        unique = [p for p in c if owners[p] == 1]
        table.append(OVERRIDES.get(i, tuple((unique or c)[:MAX_LEMMAS])))
    return table


def write(path: str = TABLE) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("class_index\twnid\tprompt\n")
        for i, (wnid, phrases) in enumerate(zip(imagenet_wnids(), generate())):
            f.write(f"{i}\t{wnid}\t{' . '.join(phrases)} .\n")


@functools.lru_cache(maxsize=1)
def load(path: str = TABLE) -> "tuple[tuple[str, ...], ...]":
    """The shipped table, checked against timm's synset order."""
    wnids = imagenet_wnids()
    rows = []
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            i, wnid, prompt = line.rstrip("\n").split("\t")
            if int(i) != len(rows) or wnid != wnids[len(rows)]:
                raise ValueError(f"{path}: row {len(rows)} is {i} {wnid}, expected {wnids[len(rows)]}")
            rows.append(tuple(p.strip() for p in prompt.rstrip(" .").split(" . ")))
    if len(rows) != len(wnids):
        raise ValueError(f"{path}: {len(rows)} rows, expected {len(wnids)}")
    return tuple(rows)


if __name__ == "__main__":
    write()
    print(f"wrote {TABLE}")
