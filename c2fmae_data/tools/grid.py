"""``inspect --grid``: a labeled PNG of the first N ok samples.

Layout (all sizes in pixels): a header naming the three panels of every sample column
(``RGB | instance | semantic``); per sample a caption (key, then the ImageNet class or the object
categories) over its three TILE x TILE panels; at the bottom a legend of the semantic classes
present in the drawn samples, most pixels first, with their palette colours. Semantic uses the
official COCO-panoptic palette (255 unlabeled = black); instance ids get distinct hues (0 black).

RGB is decoded as the loader does (EXIF upright, same pixel rule) from the rows' ``image_bytes`` or
``imagenet_root/<key>`` checked by size and sha256. A labels-only dataset without an image root
is refused (ValueError naming the flag) instead of drawing grey boxes; a sample whose image is
missing or different is drawn with a red "no RGB" panel and reported by ``warn``.
"""
from __future__ import annotations

import colorsys
import sys
from typing import Any, Callable

import numpy as np

from c2fmae_data.format.categories import (COCO_PANOPTIC_NAMES, NUM_SEMANTIC_CLASSES,
                                           SEMANTIC_IGNORE, imagenet_lemmas,
                                           semantic_palette)
from c2fmae_data.format.schema import (STATUS_OK, FormatError, decode_instance_png,
                                       decode_semantic_png)
from c2fmae_data.format.manifest import load_manifest
from c2fmae_data.format.fs import inside_root, open_fs
from c2fmae_data.format.shards import iter_shard
from c2fmae_data.loading.source import ImageSource, SampleError, check_image_root

TILE = 128          # each panel is TILE x TILE pixels
PER_ROW = 4         # samples per grid row
HEADER = 20         # the panel-name band at the top
CAPTION = 30        # key + class above each sample
LEGEND_ROW = 18     # one line of the legend
SEP = 8             # gap between the strips of neighbouring samples
PANELS = ("RGB", "instance", "semantic")
GAP = ((48, 48, 48), (80, 80, 80))  # letterbox checkerboard: no palette colour looks like it


def panel_origin(i: int, panel: int, per_row: int = PER_ROW) -> "tuple[int, int]":
    """(x, y) of the top-left pixel of panel ``panel`` (0 RGB, 1 instance, 2 semantic) of sample
    ``i`` in the grid."""
    r, c = divmod(i, per_row)
    return c * (3 * TILE + SEP) + panel * TILE, HEADER + r * (CAPTION + TILE + SEP) + CAPTION


def instance_colours(n: int) -> np.ndarray:
    """(n+1)x3 uint8: black for 0, then well-separated hues (golden-ratio steps)."""
    out = np.zeros((n + 1, 3), np.uint8)
    for i in range(1, n + 1):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 1.0 - 0.25 * (i % 2))
        out[i] = (int(r * 255), int(g * 255), int(b * 255))
    return out


def _fit(img: np.ndarray, nearest: bool) -> np.ndarray:
    """Resize into a TILE x TILE panel keeping the aspect ratio (letterboxed with a grey
    checkerboard, so the margin is never mistaken for a class colour or black background)."""
    import cv2

    h, w = img.shape[:2]
    s = TILE / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    r = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)
    yy, xx = np.mgrid[:TILE, :TILE]
    out = np.where((((yy // 8) + (xx // 8)) % 2)[..., None] == 0, np.uint8(GAP[0][0]),
                   np.uint8(GAP[1][0])).repeat(3, axis=2).astype(np.uint8)
    y, x = (TILE - nh) // 2, (TILE - nw) // 2
    out[y:y + nh, x:x + nw] = r
    return out


def row_rgb(rec: "dict[str, Any]", source: "ImageSource | None") -> "tuple[np.ndarray | None, str]":
    """The row's image as the loader decodes it, or (None, why not)."""
    if rec.get("image_bytes") is None and source is None:
        return None, "no image_bytes and no --imagenet-root"
    try:
        img = (source or ImageSource(None)).load(rec["key"], rec.get("source_sha256"),
                                                 rec.get("source_size"), rec.get("image_bytes"))
    except SampleError as e:
        return None, str(e)
    rgb = np.asarray(img)
    if rgb.shape[:2] != (rec["height"], rec["width"]):
        return None, f"{rec['key']}: image is {rgb.shape[1]}x{rgb.shape[0]}, labels are " \
                     f"{rec['width']}x{rec['height']}"
    return rgb, ""


def sample_panels(rec: "dict[str, Any]", rgb: "np.ndarray | None"
                  ) -> "tuple[np.ndarray, np.ndarray]":
    """One TILE x 3*TILE strip (RGB | instance | semantic; a red panel where RGB is None) and the
    row's semantic map (for the legend)."""
    inst = decode_instance_png(rec["instance_png"], rec["width"], rec["height"])
    sem = decode_semantic_png(rec["semantic_png"], rec["width"], rec["height"])
    bad = (sem >= NUM_SEMANTIC_CLASSES) & (sem != SEMANTIC_IGNORE)
    if bad.any():   # it would have no name in the legend
        raise FormatError(f"semantic_png: id {int(sem[bad].max())} outside 0..132 and not 255")
    pal = np.asarray(semantic_palette(), np.uint8)
    rgb_panel = _fit(rgb, False) if rgb is not None else np.full((TILE, TILE, 3), (96, 0, 0),
                                                                 np.uint8)
    inst_rgb = instance_colours(int(inst.max()))[inst]
    return np.concatenate([rgb_panel, _fit(inst_rgb, True), _fit(pal[sem], True)], axis=1), sem


def class_name(rec: "dict[str, Any]") -> str:
    """'tench (n01440764)' for ImageNet rows, else the object categories ('objects: person, dog')."""
    ci = rec.get("class_index")
    if ci is not None and ci >= 0:
        try:
            return f"{imagenet_lemmas()[ci][0]} ({rec.get('wnid') or f'class {ci}'})"
        except Exception:  # noqa: BLE001 - no timm class table: the index still says it
            return f"class {ci}"
    cats = list(dict.fromkeys(COCO_PANOPTIC_NAMES[m["category"]] for m in rec.get("instances") or []
                              if isinstance(m, dict) and m.get("category") is not None
                              and 0 <= m["category"] < len(COCO_PANOPTIC_NAMES)))
    if not cats:
        return "no objects"
    return "objects: " + ", ".join(cats[:4]) + (f" +{len(cats) - 4}" if len(cats) > 4 else "")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:   # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _clip(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("..." + text, font=font) > width:
        text = text[1:]          # keep the end of a key: the file name
    return "..." + text


def legend_items(sem_counts: "dict[int, int]") -> "list[tuple[tuple[int, int, int], str]]":
    pal = semantic_palette()
    items = []
    for v, _ in sorted(sem_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        name = "unlabeled (255)" if v == SEMANTIC_IGNORE else COCO_PANOPTIC_NAMES[v]
        items.append((pal[v], name))
    return items


def _legend_layout(draw, items, font, width: int) -> "list[tuple[int, int]]":
    """Top-left (x, y) of each legend entry, flowing in lines of ``width`` pixels."""
    pos, x, y = [], 8, 0
    for _, name in items:
        w = 18 + int(draw.textlength(name, font=font)) + 14
        if x + w > width and x > 8:
            x, y = 8, y + LEGEND_ROW
        pos.append((x, y))
        x += w
    return pos


def compose(strips: "list[np.ndarray]", captions: "list[tuple[str, str]]",
            sem_counts: "dict[int, int]"):
    """The whole grid as a PIL image: header, captioned strips, legend."""
    from PIL import Image, ImageDraw

    per_row = min(PER_ROW, len(strips))
    rows = -(-len(strips) // per_row)
    width = per_row * (3 * TILE + SEP) - SEP
    font, small = _font(13), _font(11)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    items = legend_items(sem_counts)
    layout = _legend_layout(probe, items, small, width)
    legend_h = (layout[-1][1] + LEGEND_ROW if layout else 0) + 2 * LEGEND_ROW + 8
    top = HEADER + rows * (CAPTION + TILE + SEP)
    img = Image.new("RGB", (width, top + legend_h), (0, 0, 0))
    d = ImageDraw.Draw(img)
    for c in range(per_row):
        for p, name in enumerate(PANELS):
            x = panel_origin(c, p, per_row)[0] + TILE // 2
            d.text((x, HEADER // 2), name, font=font, fill=(235, 235, 235), anchor="mm")
    for i, (strip, (key, cls)) in enumerate(zip(strips, captions)):
        x, y = panel_origin(i, 0, per_row)
        d.rectangle([x, y - CAPTION, x + 3 * TILE - 1, y - 1], fill=(40, 40, 48))
        img.paste(Image.fromarray(strip), (x, y))
        d.text((x + 4, y - CAPTION + 2), _clip(d, key, small, 3 * TILE - 8), font=small,
               fill=(255, 255, 255))
        d.text((x + 4, y - CAPTION + 15), _clip(d, cls, small, 3 * TILE - 8), font=small,
               fill=(190, 220, 255))
        if (strip[:, :TILE] == (96, 0, 0)).all():
            d.text((x + TILE // 2, y + TILE // 2), "no RGB", font=font, fill=(255, 200, 200),
                   anchor="mm")
    d.text((8, top + 4), "instance: ids 1..K by decreasing area in distinct colours, "
                         "0 background black", font=small, fill=(200, 200, 200))
    d.text((8, top + 4 + LEGEND_ROW), "semantic classes present (COCO-panoptic palette), "
                                      "most pixels first:", font=small, fill=(200, 200, 200))
    base = top + 4 + 2 * LEGEND_ROW
    for (colour, name), (x, y) in zip(items, layout):
        d.rectangle([x, base + y + 2, x + 12, base + y + 14], fill=tuple(colour),
                    outline=(200, 200, 200))
        d.text((x + 18, base + y + 1), name, font=small, fill=(230, 230, 230))
    return img


def _collect(root: str, n: int, imagenet_root: "str | None", split: "str | None",
             warn: Callable[[str], None]):
    m = load_manifest(root)
    fs, base = open_fs(root)
    check_image_root(imagenet_root, "--imagenet-root")
    source = ImageSource(imagenet_root) if imagenet_root else None
    strips, captions, sem_counts, missing = [], [], {}, []
    for sp in ([split] if split else list(m["splits"])):
        if sp not in m["splits"]:
            raise KeyError(f"split {sp!r} not in {root} (has {sorted(m['splits'])})")
        for e in m["splits"][sp]["shards"]:
            for rec in iter_shard(fs, inside_root(fs, base, e["file"]), name=e["file"]):
                if len(strips) >= n:
                    break
                if rec["status"] != STATUS_OK:
                    continue
                if source is None and rec.get("image_bytes") is None:
                    first = rec["key"].split("/")[0]
                    raise ValueError(f"{root} holds labels only (no image_bytes): pass "
                                     f"--imagenet-root DIR, the folder holding {first}/, to draw "
                                     f"the RGB panels")
                rgb, why = row_rgb(rec, source)
                if rgb is None:
                    missing.append(why)
                try:
                    strip, sem = sample_panels(rec, rgb)
                except FormatError as err:
                    raise FormatError(f"{e['file']}: key {rec['key']!r}: masks: {err}") from None
                for v, c in zip(*np.unique(sem, return_counts=True)):
                    sem_counts[int(v)] = sem_counts.get(int(v), 0) + int(c)
                strips.append(strip)
                captions.append((rec["key"], class_name(rec)))
    if missing:
        warn(f"warning: {len(missing)} of {len(strips)} grid samples have no RGB (red panels); "
             f"first: {missing[0]}")
    return strips, captions, sem_counts


def draw_grid(root: str, out: str, *, n: int = 16, imagenet_root: "str | None" = None,
              split: "str | None" = None,
              warn: "Callable[[str], None] | None" = None) -> "tuple[int, int]":
    """Write the labeled PNG grid of the first ``n`` ok samples; returns its (width, height)."""
    warn = warn or (lambda msg: print(msg, file=sys.stderr))
    strips, captions, sem_counts = _collect(str(root), n, imagenet_root, split, warn)
    if not strips:
        raise ValueError(f"{root}: no ok rows to draw")
    img = compose(strips, captions, sem_counts)
    ofs, opath = open_fs(out)
    with ofs.open(opath, "wb") as f:
        img.save(f, format="PNG")
    return img.size
