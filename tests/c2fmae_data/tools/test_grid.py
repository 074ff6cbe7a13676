"""inspect --grid: panel headers, key + class captions, a legend of the semantic classes present;
labels-only datasets need a valid --imagenet-root (refused otherwise, red panels + a warning for
images that are missing)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from c2fmae_data.format.categories import COCO_PANOPTIC_NAMES, semantic_palette
from c2fmae_data.cli import main
from c2fmae_data.tools.coco import convert_coco
from c2fmae_data.format.schema import decode_semantic_png
from c2fmae_data.tools.grid import (CAPTION, HEADER, TILE, _collect, class_name, draw_grid,
                              panel_origin)
from c2fmae_data.format.manifest import load_manifest
from c2fmae_data.format.fs import open_fs
from c2fmae_data.format.shards import iter_shard


@pytest.fixture(scope="module")
def coco_root(coco_tiny, tmp_path_factory):
    """Labels only: six real COCO images, keys val2017/<file>, joined with the coco-tiny root."""
    import json

    ann = json.loads((coco_tiny / "annotations" / "instances_val2017.json").read_text())
    imgs = sorted(ann["images"], key=lambda i: i["file_name"])[:6]
    ids = {i["id"] for i in imgs}
    d = tmp_path_factory.mktemp("grid")
    small = d / "instances_val.json"
    small.write_text(json.dumps(dict(ann, images=imgs, annotations=[
        a for a in ann["annotations"] if a["image_id"] in ids])))
    convert_coco(str(d / "ds"), images_dir=str(coco_tiny / "val2017"), instances_json=str(small))
    return str(d / "ds")


def rows(root):
    fs, base = open_fs(root)
    return [r for e in load_manifest(root)["splits"]["val"]["shards"]
            for r in iter_shard(fs, f"{base}/{e['file']}")]


def test_captions_and_legend_name_what_is_drawn(coco_root, coco_tiny):
    strips, captions, counts = _collect(coco_root, 6, str(coco_tiny), None, warn=pytest.fail)
    recs = rows(coco_root)
    assert [k for k, _ in captions] == [r["key"] for r in recs]
    first = {COCO_PANOPTIC_NAMES[m["category"]] for m in recs[0]["instances"]}
    names = captions[0][1].removeprefix("objects: ").split(" +")[0].split(", ")
    assert captions[0][1].startswith("objects: ") and names[0] and set(names) <= first
    present = set()
    for r in recs:
        present |= set(np.unique(decode_semantic_png(r["semantic_png"])).tolist())
    assert set(counts) == present        # the legend lists exactly the classes in the panels


def test_grid_png_has_headers_rgb_and_legend_swatches(coco_root, coco_tiny, tmp_path):
    out = tmp_path / "g.png"
    w, h = draw_grid(coco_root, str(out), n=6, imagenet_root=str(coco_tiny), warn=pytest.fail)
    a = np.asarray(Image.open(out).convert("RGB"))
    assert a.shape == (h, w, 3)
    x, y = panel_origin(0, 0)
    assert a[y:y + TILE, x:x + TILE].std() > 20                  # the real photo
    for p in range(3):                                           # a light header over each panel
        hx = panel_origin(0, p)[0]
        assert (a[:HEADER, hx:hx + TILE] > 200).any()
    assert (a[y - CAPTION:y, x:x + 3 * TILE] > 200).any()        # the caption text
    bottom = a[panel_origin(4, 0)[1] + TILE:]                    # below the last row: legend
    person = np.array(semantic_palette()[0], np.uint8)
    assert (bottom == person).all(-1).sum() >= 100               # the 'person' swatch


def test_labels_only_refused_or_warned(coco_root, coco_tiny, tmp_path, capsys):
    out = tmp_path / "g.png"
    assert main(["inspect", coco_root, "--grid", str(out)]) == 2
    o, e = capsys.readouterr()
    assert o == "" and e.count("\n") == 1 and "--imagenet-root DIR, the folder holding val2017/" in e
    assert main(["inspect", coco_root, "--grid", str(out), "--imagenet-root",
                 str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err and not out.exists()
    partial = tmp_path / "partial" / "val2017"
    partial.mkdir(parents=True)
    first = rows(coco_root)[0]["key"]
    (partial.parent / first).write_bytes((coco_tiny / first).read_bytes())
    warnings = []
    draw_grid(coco_root, str(out), n=3, imagenet_root=str(partial.parent), warn=warnings.append)
    assert len(warnings) == 1 and warnings[0].startswith("warning: 2 of 3 grid samples have no RGB")
    a = np.asarray(Image.open(out).convert("RGB"))
    x, y = panel_origin(1, 0)
    assert (a[y + 2, x + 2] == (96, 0, 0)).all()                 # red 'no RGB' panel, not grey
    x, y = panel_origin(0, 0)
    assert a[y:y + TILE, x:x + TILE].std() > 20


def test_imagenet_class_caption():
    assert class_name({"class_index": 0, "wnid": "n01440764"}) == "tench (n01440764)"
    assert class_name({"class_index": -1, "instances": []}) == "no objects"
