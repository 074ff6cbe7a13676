"""The one listing rule of an ImageNet-layout folder, shared by ``c2fmae-data label`` and the Ray
pipeline (``pipelines/plan.py``).

An image is a file ``<root>/<split>/<wnid>/<file>`` where

- ``wnid`` is one of timm's 1000 ImageNet-1K classes (other folders are reported as ignored),
- ``file`` is not hidden (no leading ``.``) and ends in an image extension, case-insensitive
  (``IMAGE_EXTS``). Other files of a class folder (``notes.txt``, ``Thumbs.db``) are skipped and
  reported, never labeled: a failed row would only say "not an image".

Keys are paths relative to ``root``: ``<split>/<wnid>/<file>``, sorted. Because every wnid has the
same length, the sorted listing is the class folders in sorted order, each folder's files sorted;
``limit`` therefore stops the walk as soon as N keys are listed (ImageNet-1K has 1.28M files:
``--limit 1000`` lists one class folder, not all of them).
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from c2fmae_data.format.categories import imagenet_wnid_to_index
from c2fmae_data.format.fs import join, open_fs

IMAGE_EXTS = (".jpeg", ".jpg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Item:
    """One image of a listing (picklable, small: the bytes are read later)."""
    key: str          # <split>/<wnid>/<file>, relative to the ImageNet root
    wnid: str
    class_index: int


@dataclass
class Listing:
    items: "list[Item]"
    ignored_dirs: "list[str]" = field(default_factory=list)   # <split>/<name>: not a wnid
    skipped_files: "list[str]" = field(default_factory=list)  # <split>/<wnid>/<file>: not an image

    def notes(self, limit: int = 3) -> "list[str]":
        """One line per kind of thing left out, naming a few of them."""
        out = []
        for what, names in (("folder(s) that are not ImageNet-1K wnids", self.ignored_dirs),
                            ("non-image file(s)", self.skipped_files)):
            if names:
                more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
                out.append(f"skipped {len(names)} {what}: {', '.join(names[:limit])}{more}")
        return out


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTS)


def _entries(fs, path: str) -> "Iterator[tuple[str, bool]]":
    """(name, is_dir) of one folder; local folders through os.scandir (no stat per file)."""
    if "file" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)):
        with os.scandir(path) as it:
            for e in it:
                yield e.name, e.is_dir()
        return
    for e in fs.ls(path, detail=True):
        yield posixpath.basename(e["name"].rstrip("/")), e["type"] == "directory"


def list_imagenet(root: str, split: str, classes: "Sequence[str] | None" = None,
                  limit: "int | None" = None) -> Listing:
    """The sorted images of ``<root>/<split>/<wnid>/*`` (see the module docstring). ``classes``
    keeps only those wnids; ``limit`` keeps the first N keys and stops listing there.
    Raises FileNotFoundError when ``<root>/<split>`` is not a folder."""
    fs, base = open_fs(root)
    split_dir = join(base, split)
    if not fs.isdir(split_dir):
        raise FileNotFoundError(f"{root}: no folder {split!r} "
                                f"(expected <imagenet-root>/{split}/<wnid>/<file>)")
    index = imagenet_wnid_to_index()
    wanted = set(classes) if classes is not None else None
    out = Listing([])
    for name, is_dir in sorted(_entries(fs, split_dir)):
        if limit is not None and len(out.items) >= limit:
            break
        if not is_dir:
            continue
        if name not in index:
            out.ignored_dirs.append(f"{split}/{name}")
            continue
        if wanted is not None and name not in wanted:
            continue
        for fn, sub_is_dir in sorted(_entries(fs, join(split_dir, name))):
            key = f"{split}/{name}/{fn}"
            if sub_is_dir or fn.startswith("."):
                continue
            if not is_image_name(fn):
                out.skipped_files.append(key)
                continue
            out.items.append(Item(key, name, index[name]))
    if limit is not None:
        del out.items[limit:]
    return out


def find_root(images: str, split: str) -> "tuple[str, str]":
    """(ImageNet root, note) for a folder given as ``--images``: the root itself (holding
    ``<split>/``), or its split folder ``.../<split>`` (holding wnid folders), whose parent is then
    the root so that keys stay ``<split>/<wnid>/<file>``. Anything else raises ValueError."""
    fs, base = open_fs(images)
    if not fs.isdir(base):
        raise FileNotFoundError(f"--images {images}: no such folder")
    if fs.isdir(join(base, split)):
        return images, ""
    index = imagenet_wnid_to_index()
    has_classes = any(is_dir and n in index for n, is_dir in _entries(fs, base))
    name = posixpath.basename(base.rstrip("/"))
    if has_classes and name == split:
        trimmed = images.rstrip("/")
        parent = (trimmed.rsplit("/", 1)[0] or "/") if "/" in trimmed else "."
        return parent, (f"--images {images} is the {split!r} folder: keys are relative to the "
                        f"ImageNet root {parent} ({split}/<wnid>/<file>)")
    if has_classes:
        raise ValueError(f"--images {images} holds <wnid>/ folders but is not named {split!r}: "
                         f"keys are relative to the ImageNet root, so put the class folders in "
                         f"<root>/{split}/ and pass --images <root> (or --split {name} if "
                         f"{name!r} is the split)")
    raise FileNotFoundError(f"--images {images}: no folder {split!r} and no <wnid>/ class folders "
                            f"(expected <imagenet-root>/{split}/<wnid>/*.JPEG; see --split)")
