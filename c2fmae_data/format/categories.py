"""Class spaces of the format: the 133 COCO-panoptic categories and timm's ImageNet-1K order.

The COCO-panoptic table is the official category list of cocodataset/panopticapi
(``panoptic_coco_categories.json``, BSD-2 licence): 80 things then 53 stuff, official ids 1..200.
Its order defines the contiguous semantic index 0..132 written into ``semantic_png``; 255 is
unlabeled. ``tests/test_categories.py`` checks this table against the official file.
"""
from __future__ import annotations

import functools

SEMANTIC_IGNORE = 255
NUM_SEMANTIC_CLASSES = 133
NUM_IMAGENET_CLASSES = 1000

# (official id, name, isthing, colour RGB, supercategory), in the official order.
COCO_PANOPTIC_CATEGORIES = (
    (1, 'person', 1, (220, 20, 60), 'person'),
    (2, 'bicycle', 1, (119, 11, 32), 'vehicle'),
    (3, 'car', 1, (0, 0, 142), 'vehicle'),
    (4, 'motorcycle', 1, (0, 0, 230), 'vehicle'),
    (5, 'airplane', 1, (106, 0, 228), 'vehicle'),
    (6, 'bus', 1, (0, 60, 100), 'vehicle'),
    (7, 'train', 1, (0, 80, 100), 'vehicle'),
    (8, 'truck', 1, (0, 0, 70), 'vehicle'),
    (9, 'boat', 1, (0, 0, 192), 'vehicle'),
    (10, 'traffic light', 1, (250, 170, 30), 'outdoor'),
    (11, 'fire hydrant', 1, (100, 170, 30), 'outdoor'),
    (13, 'stop sign', 1, (220, 220, 0), 'outdoor'),
    (14, 'parking meter', 1, (175, 116, 175), 'outdoor'),
    (15, 'bench', 1, (250, 0, 30), 'outdoor'),
    (16, 'bird', 1, (165, 42, 42), 'animal'),
    (17, 'cat', 1, (255, 77, 255), 'animal'),
    (18, 'dog', 1, (0, 226, 252), 'animal'),
    (19, 'horse', 1, (182, 182, 255), 'animal'),
    (20, 'sheep', 1, (0, 82, 0), 'animal'),
    (21, 'cow', 1, (120, 166, 157), 'animal'),
    (22, 'elephant', 1, (110, 76, 0), 'animal'),
    (23, 'bear', 1, (174, 57, 255), 'animal'),
    (24, 'zebra', 1, (199, 100, 0), 'animal'),
    (25, 'giraffe', 1, (72, 0, 118), 'animal'),
    (27, 'backpack', 1, (255, 179, 240), 'accessory'),
    (28, 'umbrella', 1, (0, 125, 92), 'accessory'),
    (31, 'handbag', 1, (209, 0, 151), 'accessory'),
    (32, 'tie', 1, (188, 208, 182), 'accessory'),
    (33, 'suitcase', 1, (0, 220, 176), 'accessory'),
    (34, 'frisbee', 1, (255, 99, 164), 'sports'),
    (35, 'skis', 1, (92, 0, 73), 'sports'),
    (36, 'snowboard', 1, (133, 129, 255), 'sports'),
    (37, 'sports ball', 1, (78, 180, 255), 'sports'),
    (38, 'kite', 1, (0, 228, 0), 'sports'),
    (39, 'baseball bat', 1, (174, 255, 243), 'sports'),
    (40, 'baseball glove', 1, (45, 89, 255), 'sports'),
    (41, 'skateboard', 1, (134, 134, 103), 'sports'),
    (42, 'surfboard', 1, (145, 148, 174), 'sports'),
    (43, 'tennis racket', 1, (255, 208, 186), 'sports'),
    (44, 'bottle', 1, (197, 226, 255), 'kitchen'),
    (46, 'wine glass', 1, (171, 134, 1), 'kitchen'),
    (47, 'cup', 1, (109, 63, 54), 'kitchen'),
    (48, 'fork', 1, (207, 138, 255), 'kitchen'),
    (49, 'knife', 1, (151, 0, 95), 'kitchen'),
    (50, 'spoon', 1, (9, 80, 61), 'kitchen'),
    (51, 'bowl', 1, (84, 105, 51), 'kitchen'),
    (52, 'banana', 1, (74, 65, 105), 'food'),
    (53, 'apple', 1, (166, 196, 102), 'food'),
    (54, 'sandwich', 1, (208, 195, 210), 'food'),
    (55, 'orange', 1, (255, 109, 65), 'food'),
    (56, 'broccoli', 1, (0, 143, 149), 'food'),
    (57, 'carrot', 1, (179, 0, 194), 'food'),
    (58, 'hot dog', 1, (209, 99, 106), 'food'),
    (59, 'pizza', 1, (5, 121, 0), 'food'),
    (60, 'donut', 1, (227, 255, 205), 'food'),
    (61, 'cake', 1, (147, 186, 208), 'food'),
    (62, 'chair', 1, (153, 69, 1), 'furniture'),
    (63, 'couch', 1, (3, 95, 161), 'furniture'),
    (64, 'potted plant', 1, (163, 255, 0), 'furniture'),
    (65, 'bed', 1, (119, 0, 170), 'furniture'),
    (67, 'dining table', 1, (0, 182, 199), 'furniture'),
    (70, 'toilet', 1, (0, 165, 120), 'furniture'),
    (72, 'tv', 1, (183, 130, 88), 'electronic'),
    (73, 'laptop', 1, (95, 32, 0), 'electronic'),
    (74, 'mouse', 1, (130, 114, 135), 'electronic'),
    (75, 'remote', 1, (110, 129, 133), 'electronic'),
    (76, 'keyboard', 1, (166, 74, 118), 'electronic'),
    (77, 'cell phone', 1, (219, 142, 185), 'electronic'),
    (78, 'microwave', 1, (79, 210, 114), 'appliance'),
    (79, 'oven', 1, (178, 90, 62), 'appliance'),
    (80, 'toaster', 1, (65, 70, 15), 'appliance'),
    (81, 'sink', 1, (127, 167, 115), 'appliance'),
    (82, 'refrigerator', 1, (59, 105, 106), 'appliance'),
    (84, 'book', 1, (142, 108, 45), 'indoor'),
    (85, 'clock', 1, (196, 172, 0), 'indoor'),
    (86, 'vase', 1, (95, 54, 80), 'indoor'),
    (87, 'scissors', 1, (128, 76, 255), 'indoor'),
    (88, 'teddy bear', 1, (201, 57, 1), 'indoor'),
    (89, 'hair drier', 1, (246, 0, 122), 'indoor'),
    (90, 'toothbrush', 1, (191, 162, 208), 'indoor'),
    (92, 'banner', 0, (255, 255, 128), 'textile'),
    (93, 'blanket', 0, (147, 211, 203), 'textile'),
    (95, 'bridge', 0, (150, 100, 100), 'building'),
    (100, 'cardboard', 0, (168, 171, 172), 'raw-material'),
    (107, 'counter', 0, (146, 112, 198), 'furniture-stuff'),
    (109, 'curtain', 0, (210, 170, 100), 'textile'),
    (112, 'door-stuff', 0, (92, 136, 89), 'furniture-stuff'),
    (118, 'floor-wood', 0, (218, 88, 184), 'floor'),
    (119, 'flower', 0, (241, 129, 0), 'plant'),
    (122, 'fruit', 0, (217, 17, 255), 'food-stuff'),
    (125, 'gravel', 0, (124, 74, 181), 'ground'),
    (128, 'house', 0, (70, 70, 70), 'building'),
    (130, 'light', 0, (255, 228, 255), 'furniture-stuff'),
    (133, 'mirror-stuff', 0, (154, 208, 0), 'furniture-stuff'),
    (138, 'net', 0, (193, 0, 92), 'structural'),
    (141, 'pillow', 0, (76, 91, 113), 'textile'),
    (144, 'platform', 0, (255, 180, 195), 'ground'),
    (145, 'playingfield', 0, (106, 154, 176), 'ground'),
    (147, 'railroad', 0, (230, 150, 140), 'ground'),
    (148, 'river', 0, (60, 143, 255), 'water'),
    (149, 'road', 0, (128, 64, 128), 'ground'),
    (151, 'roof', 0, (92, 82, 55), 'building'),
    (154, 'sand', 0, (254, 212, 124), 'ground'),
    (155, 'sea', 0, (73, 77, 174), 'water'),
    (156, 'shelf', 0, (255, 160, 98), 'furniture-stuff'),
    (159, 'snow', 0, (255, 255, 255), 'ground'),
    (161, 'stairs', 0, (104, 84, 109), 'furniture-stuff'),
    (166, 'tent', 0, (169, 164, 131), 'building'),
    (168, 'towel', 0, (225, 199, 255), 'textile'),
    (171, 'wall-brick', 0, (137, 54, 74), 'wall'),
    (175, 'wall-stone', 0, (135, 158, 223), 'wall'),
    (176, 'wall-tile', 0, (7, 246, 231), 'wall'),
    (177, 'wall-wood', 0, (107, 255, 200), 'wall'),
    (178, 'water-other', 0, (58, 41, 149), 'water'),
    (180, 'window-blind', 0, (183, 121, 142), 'window'),
    (181, 'window-other', 0, (255, 73, 97), 'window'),
    (184, 'tree-merged', 0, (107, 142, 35), 'plant'),
    (185, 'fence-merged', 0, (190, 153, 153), 'structural'),
    (186, 'ceiling-merged', 0, (146, 139, 141), 'ceiling'),
    (187, 'sky-other-merged', 0, (70, 130, 180), 'sky'),
    (188, 'cabinet-merged', 0, (134, 199, 156), 'furniture-stuff'),
    (189, 'table-merged', 0, (209, 226, 140), 'furniture-stuff'),
    (190, 'floor-other-merged', 0, (96, 36, 108), 'floor'),
    (191, 'pavement-merged', 0, (96, 96, 96), 'ground'),
    (192, 'mountain-merged', 0, (64, 170, 64), 'solid'),
    (193, 'grass-merged', 0, (152, 251, 152), 'plant'),
    (194, 'dirt-merged', 0, (208, 229, 228), 'ground'),
    (195, 'paper-merged', 0, (206, 186, 171), 'raw-material'),
    (196, 'food-other-merged', 0, (152, 161, 64), 'food-stuff'),
    (197, 'building-other-merged', 0, (116, 112, 0), 'building'),
    (198, 'rock-merged', 0, (0, 114, 143), 'solid'),
    (199, 'wall-other-merged', 0, (102, 102, 156), 'wall'),
    (200, 'rug-merged', 0, (250, 141, 255), 'textile'),
)

COCO_PANOPTIC_IDS = tuple(c[0] for c in COCO_PANOPTIC_CATEGORIES)
COCO_PANOPTIC_NAMES = tuple(c[1] for c in COCO_PANOPTIC_CATEGORIES)
COCO_PANOPTIC_ISTHING = tuple(bool(c[2]) for c in COCO_PANOPTIC_CATEGORIES)
COCO_PANOPTIC_COLORS = tuple(c[3] for c in COCO_PANOPTIC_CATEGORIES)
#: official COCO-panoptic id (1..200) -> contiguous index (0..132)
COCO_ID_TO_INDEX = {cid: i for i, cid in enumerate(COCO_PANOPTIC_IDS)}


def semantic_palette() -> "list[tuple[int, int, int]]":
    """256 RGB colours: the official colour for 0..132, black for unused values and 255."""
    pal = [(0, 0, 0)] * 256
    for i, col in enumerate(COCO_PANOPTIC_COLORS):
        pal[i] = tuple(col)
    return pal


def _timm_info_file(name: str) -> str:
    """Text of a file of timm's shipped ImageNet metadata (``timm/data/_info``), read without
    importing timm (which would import torch: ~3 s for every CLI call)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("timm is required for the ImageNet class lists (pip install timm)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "_info", name)
    with open(path, encoding="utf-8") as f:
        return f.read()


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> "tuple[str, ...]":
    """The 1000 ImageNet-1K synset ids in timm's class-index order (``imagenet_synsets.txt``)."""
    wnids = tuple(_timm_info_file("imagenet_synsets.txt").split())
    if len(wnids) != NUM_IMAGENET_CLASSES:
        raise ImportError(f"timm's imagenet_synsets.txt lists {len(wnids)} classes, not 1000")
    return wnids


@functools.lru_cache(maxsize=1)
def imagenet_wnid_to_index() -> "dict[str, int]":
    return {w: i for i, w in enumerate(imagenet_wnids())}


@functools.lru_cache(maxsize=1)
def imagenet_lemmas() -> "tuple[tuple[str, ...], ...]":
    """For every class index, the synset's lemmas (e.g. ('tench', 'Tinca tinca'))."""
    table = dict(line.split("\t", 1) for line in _timm_info_file("imagenet_synset_to_lemma.txt")
                 .splitlines() if "\t" in line)
    return tuple(tuple(s.strip() for s in table[w].split(",") if s.strip()) for w in imagenet_wnids())
