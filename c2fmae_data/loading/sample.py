"""One row -> one sample: the image joined and checked, the masks checked as untrusted PNGs, the
joint transform applied.

Before a mask pixel is inflated, both PNGs must be well-formed (chunks, CRCs), grey at the
column's bit depth and exactly the row's width x height (``format.png_check``); the transform
then inflates only the rows it samples, capped (``format.png_rows``), and refuses sampled ids
outside the row's instance table (above ``num_instances``) or outside 0..132/255 (semantic). A
violation is a ``RowFormatError``: one line naming shard, row group, row, key and column.
"""
from __future__ import annotations

from typing import Any, Callable

from c2fmae_data.format.bounds import MAX_INSTANCES, FormatError
from c2fmae_data.format.png_check import PngLayout, parse_png
from c2fmae_data.format.png_rows import check_ids, decode_layout
from c2fmae_data.format.schema import STATUS_OK
from c2fmae_data.loading.source import ImageSource, SampleError, decode_rgb
from c2fmae_data.loading.transforms import JointTransform


class RowFormatError(FormatError, SampleError):
    """A sample whose dataset bytes break the format, named by shard, row group, row, key and
    column. A FormatError, and a SampleError too, so that what catches failing samples
    (``on_error="skip"``, the trainer's one-line report) catches it."""

    def __init__(self, where: str, key: str, column: str, message: str):
        Exception.__init__(self, f"{where}: key {key!r}: {column}: {message}")
        self.key = key


def _instance_count(row: "dict[str, Any]", where: str) -> int:
    k = row.get("num_instances")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_INSTANCES:
        raise RowFormatError(where, row["key"], "num_instances",
                             f"{k!r} is not a count in 0..{MAX_INSTANCES}")
    return k


def checked_masks(row: "dict[str, Any]", where: str) -> "tuple[PngLayout, PngLayout]":
    """Both mask PNGs of an ok row, checked against the row's width/height and bit depths."""
    k = _instance_count(row, where)
    out = []
    for col, depth in (("instance_png", 16), ("semantic_png", 8)):
        data = row.get(col)
        if data is None:
            raise RowFormatError(where, row["key"], col, "null on an ok row")
        try:
            out.append(parse_png(data, width=row["width"], height=row["height"], depth=depth,
                                 max_id=k, semantic=col == "semantic_png", name=col))
        except FormatError as e:
            raise RowFormatError(where, row["key"], col, str(e)) from None
    return out[0], out[1]


def _full_maps(inst: PngLayout, sem: PngLayout, where: str, key: str):
    """Whole decoded maps (for callers that are not joint transforms), values checked."""
    maps = []
    for lay in (inst, sem):
        try:
            maps.append(check_ids(decode_layout(lay), lay))
        except FormatError as e:
            raise RowFormatError(where, key, lay.name, str(e)) from None
    return maps[0], maps[1]


def _image(row: "dict[str, Any]", source: ImageSource, where: str):
    """The row's RGB image. Bytes from the dataset (``image_bytes``) that are missing or do not
    match the row's size/sha256 are the dataset's fault (RowFormatError), as are undecodable
    bytes of an ok row; a failed row's undecodable image is often why it failed (SampleError
    saying both)."""
    key, failed = row["key"], row["status"] != STATUS_OK
    try:
        data = source.read(key, row["source_sha256"], row["source_size"], row.get("image_bytes"))
    except SampleError as e:
        if source.uses_image_bytes:
            raise RowFormatError(where, key, "image_bytes", str(e)[len(key) + 2:]) from None
        if failed:
            raise SampleError(key, f"labeling failed ({row.get('reason') or '?'}) and "
                                   f"{str(e)[len(key) + 2:]}") from None
        raise
    try:
        return decode_rgb(data, key)
    except SampleError as e:
        why = str(e)[len(key) + 2:]
        if failed:   # kept (include_failed) only with pixels to show: say both
            raise SampleError(key, f"labeling failed ({row.get('reason') or '?'}) and "
                                   f"{why}") from None
        if source.uses_image_bytes:
            raise RowFormatError(where, key, "image_bytes", why) from None
        raise


def build_sample(row: "dict[str, Any]", source: ImageSource, transform: "Callable | None",
                 rng=None) -> "dict[str, Any]":
    """The sample of ``row`` (index fields + the row group's PNG columns; ``_where`` names the
    shard, row group and row)."""
    key, where = row["key"], row.get("_where", "?")
    img = _image(row, source, where)
    w, h = img.size
    inst = sem = None
    if row["status"] == STATUS_OK:
        if (row["width"], row["height"]) != (w, h):
            raise SampleError(key, f"image decodes to {w}x{h} (EXIF applied) but the labels "
                                   f"are {row['width']}x{row['height']}")
        inst, sem = checked_masks(row, where)
        if not isinstance(transform, JointTransform):  # full arrays for other callers
            inst, sem = _full_maps(inst, sem, where, key)
    if transform is None:
        sample = {"image": img, "instance": inst, "semantic": sem}
    else:
        try:
            sample = (transform(img, inst, sem, rng=rng) if rng is not None
                      else transform(img, inst, sem))
        except FormatError as e:  # pixel data that inflates wrong or holds ids out of range
            text = str(e)
            column = next((c for c in ("instance_png", "semantic_png")
                           if text.startswith(c + ": ")), "masks")
            raise RowFormatError(where, key, column, text.removeprefix(column + ": ")) from None
    sample["label"] = int(row["class_index"])
    sample["key"] = key
    return sample
