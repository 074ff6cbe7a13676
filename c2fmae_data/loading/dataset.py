"""``ImageNetMultiGranular``: the map-style PyTorch dataset over a multi-granular dataset root.

A sample is ``{"rgb": float32 3xSxS, "instance": int64 MxM, "semantic": int64 MxM, "label": int,
"key": str}`` with M = S / stride (56 at the defaults). See docs/LOADER.md.

Design: at construction the dataset reads the split's index file ``index/<split>.parquet`` (format
1.2; older datasets: the ``key`` and ``status`` columns of each shard) and keeps a small per-row
index (shard, row group, offset, keys packed in one buffer; ``base._build_index``).
Row groups are read lazily and one is cached per process; no file handle survives pickling and
a handle opened in another process (after a fork) is never reused, so ``DataLoader(num_workers>0)``
and ``DistributedSampler`` just work. The streaming variant is in ``stream.py``; what both share
(and the checks of untrusted bytes) in ``base.py`` and ``sample.py``.
"""
from __future__ import annotations

from typing import Any, Callable, Union

import numpy as np
from torch.utils.data import Dataset

from c2fmae_data.format.schema import FormatError
from c2fmae_data.loading.base import (ON_ERROR, ROW_COLUMNS, ErrorCounter,  # noqa: F401
                                      MultiGranularBase, make_transform)
from c2fmae_data.loading.source import SampleError


class ImageNetMultiGranular(MultiGranularBase, Dataset):
    """Map-style dataset over ``root`` (local folder or fsspec URL) joined with ``imagenet_root``.

    Args:
        root: dataset root holding ``manifest.json`` and ``shards/``.
        imagenet_root: folder / URL whose ``<key>`` paths are the source images; ``None`` reads
            the rows' ``image_bytes`` (self-contained datasets).
        split: split name in the manifest.
        transform: ``"train"`` (RandomResizedCrop 0.2-1 + flip), ``"eval"`` (resize 256 +
            center crop 224), a callable ``(img, instance, semantic) -> dict``, or ``None`` for the
            raw PIL image and full-resolution numpy masks.
        size, stride, max_instances: output size S, mask stride (4 -> 56x56, 1 -> SxS) and K.
        include_failed: keep rows whose labeling failed, with all-255 masks and their RGB;
            excluded and counted in ``num_failed`` by default. A failed row whose image cannot
            be read or decoded raises SampleError naming the key and the failure reason (with
            ``on_error="skip"`` it is skipped and counted in ``errors``).
        on_error: ``"raise"`` a SampleError naming the key, or ``"skip"`` to substitute the next
            row and count it in ``errors``.
        verify_hash: check each source image's size and sha256 against the row.
        use_index: open from the split's index file when the manifest lists one (format 1.2:
            one small read, no shard touched); False scans every shard's key/status columns.
    """

    def __init__(self, root, imagenet_root=None, split: str = "train",
                 transform: "Union[str, Callable, None]" = "train", **kw):
        super().__init__(root, imagenet_root, split, transform, **kw)
        # per sample only the PNGs (and num_instances) are read: key and the small fields come
        # from the index (row_meta.py); a shard changed since is refused when it is opened
        self._build_index()
        self._close()  # handles opened for indexing are not for the workers

    def __len__(self) -> int:
        return len(self._keys)

    def shard_of(self) -> np.ndarray:
        """Shard index of every sample (for ``sampler.ShardWindowSampler``)."""
        return self._shard

    def _get(self, index: int) -> "dict[str, Any]":
        table = self._row_group(int(self._shard[index]), int(self._group[index]))
        return self.make_sample(self._row(index, table), self.sample_rng(index))

    def __getitem__(self, index: int) -> "dict[str, Any]":
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        if self.on_error == "raise":
            return self._get(index)
        last = None
        for attempt in range(min(n, 100)):
            i = (index + attempt) % n
            try:
                return self._get(i)
            except (SampleError, FormatError) as e:
                self._skip(self.key(i), e)
                last = e
        why = f"this and the next {min(n, 100) - 1} samples all failed; the last: {last}"
        if isinstance(last, FormatError):
            raise FormatError(f"{self.key(index)}: {why}")
        raise SampleError(self.key(index), why)

    def __repr__(self):
        return (f"ImageNetMultiGranular(root={self.root!r}, split={self.split!r}, n={len(self)}, "
                f"failed_excluded={0 if self.include_failed else self.num_failed}, "
                f"transform={self.transform!r})")
