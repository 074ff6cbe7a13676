"""Plot the realised composition of the curriculum masks against training progress, per blend.

For each progress p and blend (model/network/masking.py ``BLENDS``), draws M_SG, M_IG, M_RD for a batch of
hand-built maps (random rectangles of semantic classes and objects on a 14x14 grid, m = 49 masked
of 196 so that chance agreement m/N = 0.25 sits low), blends them as ``ProgressiveMasking`` does, and plots the share of the masked patches that
lie in M_SG, M_IG and M_RD (the three maps overlap, so the shares need not sum to 1; a random
mask agrees with any map on about m/N = 0.25 of its patches). Writes docs/masking_blend.png
(PIL only, no matplotlib).

    PYTHONPATH=. python3 bench/training/masking_blend_plot.py [--out docs/masking_blend.png]
"""
from __future__ import annotations

import argparse

import torch
from PIL import Image, ImageDraw

from model.network.masking import (BLENDS, DEFAULT_KNOTS, _BLEND_FNS, instance_guided_mask,
                           object_patches, random_mask, schedule_weights,
                           semantic_guided_mask, semantic_patch_labels)

GRID, N, M = 14, 196, 49
COLORS = {"sg": (200, 40, 40), "ig": (40, 120, 200), "rd": (60, 160, 60)}


def hand_built_maps(batch: int, g: torch.Generator):
    """Semantic: 3-5 random rectangles of classes 0..9 on class 10; instance: 1-3 objects."""
    S = GRID * 4
    sem = torch.full((batch, S, S), 10, dtype=torch.long)
    inst = torch.zeros((batch, S, S), dtype=torch.long)
    for b in range(batch):
        for j in range(int(torch.randint(3, 6, (1,), generator=g))):
            x0, y0 = torch.randint(0, S - 8, (2,), generator=g).tolist()
            w, h = torch.randint(8, S // 2, (2,), generator=g).tolist()
            sem[b, y0:y0 + h, x0:x0 + w] = j
        for j in range(int(torch.randint(1, 4, (1,), generator=g))):
            x0, y0 = torch.randint(0, S - 8, (2,), generator=g).tolist()
            w, h = torch.randint(8, S // 2, (2,), generator=g).tolist()
            inst[b, y0:y0 + h, x0:x0 + w] = j + 1
    return sem, inst


def composition(batch: int = 256, steps: int = 61, seed: int = 0):
    """{blend: {strategy: [share at each progress]}}, progress list."""
    g = torch.Generator().manual_seed(seed)
    sem, inst = hand_built_maps(batch, g)
    counts = torch.full((batch,), M)
    sg = semantic_guided_mask(semantic_patch_labels(sem, GRID, 133), counts, 134, generator=g)
    ig = instance_guided_mask(object_patches(inst, GRID), counts, 0.75, g)
    rd = random_mask(counts, N, g)
    ps = [i / (steps - 1) for i in range(steps)]
    out = {b: {s: [] for s in COLORS} for b in BLENDS}
    for p in ps:
        a = schedule_weights("sg-ig-rd", p, DEFAULT_KNOTS)
        for b in BLENDS:
            maps = [m if w > 0 else None for m, w in zip((sg, ig, rd), a)]
            if sum(w > 0 for w in a) == 1:
                mask = next(m for m in maps if m is not None)
            else:
                mask = _BLEND_FNS[b](counts, a, *maps, generator=g)
            for s, ref in zip(COLORS, (sg, ig, rd)):
                out[b][s].append(float((mask & ref).sum()) / float(mask.sum()))
    return out, ps


def draw(out, ps, path: str) -> None:
    W, H, pad = 360, 260, 40
    img = Image.new("RGB", (W * len(out), H + 30), "white")
    d = ImageDraw.Draw(img)
    for i, (blend, curves) in enumerate(out.items()):
        ox = i * W
        x = lambda p: ox + pad + p * (W - 2 * pad)  # noqa: E731
        y = lambda v: H - pad + 10 - v * (H - 2 * pad)  # noqa: E731
        d.rectangle([x(0), y(1), x(1), y(0)], outline=(0, 0, 0))
        for v in (0.25, 0.5, 0.75):
            d.line([x(0), y(v), x(1), y(v)], fill=(225, 225, 225))
            d.text((ox + 8, y(v) - 6), f"{v:.2f}", fill=(0, 0, 0))
        for k in DEFAULT_KNOTS[1:-1]:
            d.line([x(k), y(0), x(k), y(1)], fill=(235, 235, 235))
        for s, col in COLORS.items():
            pts = [(x(p), y(v)) for p, v in zip(ps, curves[s])]
            d.line(pts, fill=col, width=2)
        d.text((ox + pad, 8), f"blend={blend}", fill=(0, 0, 0))
        d.text((ox + pad, H - pad + 16), "progress 0 .. 1 (knots 1/6, 1/2, 5/6)", fill=(0, 0, 0))
    for j, (s, col) in enumerate(COLORS.items()):
        d.text((10 + 220 * j, H + 12), f"share of masked patches in M_{s.upper()}", fill=col)
    img.save(path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/masking_blend.png")
    args = ap.parse_args(argv)
    out, ps = composition()
    draw(out, ps, args.out)
    for b in out:
        i = ps.index(0.25)
        print(f"{b:7s} at p=0.25: " + "  ".join(f"{s}={out[b][s][i]:.3f}" for s in COLORS))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
