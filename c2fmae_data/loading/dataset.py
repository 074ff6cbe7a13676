"""``ImageNetMultiGranular``: the map-style PyTorch dataset over a multi-granular dataset root.

A sample is ``{"rgb": float32 3xSxS, "instance": int64 MxM, "semantic": int64 MxM, "label": int,
"key": str}`` with M = S / stride (56 at the defaults). See docs/LOADER.md.

Design: at construction the dataset reads the split's index file ``index/<split>.parquet`` (format
1.2; older datasets: the ``key`` and ``status`` columns of each shard) and keeps a small per-row
index (shard, row group, offset, key as fixed-width bytes).
Row groups are read lazily and one is cached per process; no file handle survives pickling and
a handle opened in another process (after a fork) is never reused, so ``DataLoader(num_workers>0)``
and ``DistributedSampler`` just work. The streaming variant is in ``stream.py``.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import random
from collections import OrderedDict
from typing import Any, Callable, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from c2fmae_data.format.schema import (STATUS_OK, FormatError, decode_instance_png,
                                       decode_semantic_png)
from c2fmae_data.format.index import SCAN_COLUMNS, load_index, split_by_shard
from c2fmae_data.format.manifest import load_manifest, safe_relpath
from c2fmae_data.format.fs import join, open_fs
from c2fmae_data.loading.source import ImageSource, SampleError, check_image_root
from c2fmae_data.format.png_rows import png_size
from c2fmae_data.loading.row_meta import META_COLUMNS, RowMeta, fixed_width_keys
from c2fmae_data.loading.transforms import EvalTransform, JointTransform, TrainTransform

log = logging.getLogger(__name__)
ROW_COLUMNS = ("key", "class_index", "width", "height", "source_size", "source_sha256",
               "instance_png", "semantic_png", "status", "reason")
ON_ERROR = ("raise", "skip")


def make_transform(transform: "Union[str, Callable, None]", size: int = 224, stride: int = 4,
                   max_instances: int = 32) -> "Optional[Callable]":
    """``"train"`` / ``"eval"`` -> the default joint transforms; a callable is used as is."""
    if transform == "train":
        return TrainTransform(size, stride, max_instances=max_instances)
    if transform == "eval":
        return EvalTransform(size, stride, max_instances=max_instances)
    if transform is None or callable(transform):
        return transform
    raise ValueError(f"transform must be 'train', 'eval', None or a callable, got {transform!r}")


class ErrorCounter:
    """Skipped-sample count shared by the DataLoader workers of one dataset (one shared-memory slot
    per worker, so no lock is needed). Pickled outside of process start-up it becomes a copy."""
    SLOTS = 256

    def __init__(self, start: int = 0):
        self._slots = mp.Array("q", self.SLOTS, lock=False)
        self._slots[0] = start

    def add(self, n: int = 1) -> None:
        info = torch.utils.data.get_worker_info()
        self._slots[0 if info is None else 1 + info.id % (self.SLOTS - 1)] += n

    @property
    def value(self) -> int:
        return int(sum(self._slots))

    def __getstate__(self):
        from multiprocessing.context import get_spawning_popen

        return {"slots": self._slots} if get_spawning_popen() is not None else {"n": self.value}

    def __setstate__(self, s):
        if "slots" in s:
            self._slots = s["slots"]
        else:
            self.__init__(s["n"])


class MultiGranularBase:
    """What the map-style and streaming datasets share: split resolution, lazy row-group reads,
    and turning one row into a sample."""

    def __init__(self, root, imagenet_root=None, split: str = "train",
                 transform: "Union[str, Callable, None]" = "train", *, size: int = 224,
                 stride: int = 4, max_instances: int = 32, include_failed: bool = False,
                 on_error: str = "raise", verify_hash: bool = True, footer_cache: int = 8,
                 use_index: bool = True):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.root, self.split = str(root), split
        self.transform = make_transform(transform, size, stride, max_instances)
        self.include_failed, self.on_error = include_failed, on_error
        check_image_root(imagenet_root)          # refuse a wrong folder now, not at sample 0
        self.source = ImageSource(imagenet_root, verify=verify_hash)
        self.manifest = load_manifest(self.root)
        splits = self.manifest["splits"]
        if split not in splits:
            raise FormatError(f"{self.root}: no split {split!r} (has {sorted(splits)})")
        self.shard_entries = splits[split]["shards"]
        self.shard_files = [safe_relpath(e["file"]) for e in self.shard_entries]
        self.columns = ROW_COLUMNS + (("image_bytes",) if self.source.uses_image_bytes else ())
        #: the manifest entry of the split's index (format 1.2) when it is used to open
        self.index_entry = splits[split].get("index") if use_index else None
        self._errors = ErrorCounter()
        self._fs = self._base = None
        self._pid = None
        self.footer_cache = max(1, int(footer_cache))
        self._open = OrderedDict()              # shard index -> (file object, ParquetFile), LRU
        self._cached = (None, None)             # ((shard, row group), pyarrow Table)

    # -------------------------------------------------------------- pickling / lazy handles
    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_fs=None, _base=None, _pid=None, _open=OrderedDict(), _cached=(None, None))
        return state

    @property
    def errors(self) -> int:
        """How many samples were skipped (``on_error="skip"``), summed over DataLoader workers."""
        return self._errors.value

    def _filesystem(self):
        if self._fs is None or self._pid != os.getpid():
            self._open, self._cached = OrderedDict(), (None, None)  # another process's
            self._fs, self._base = open_fs(self.root)
            self._pid = os.getpid()
        return self._fs

    def _close(self) -> None:
        if self._pid == os.getpid():
            for f, _ in self._open.values():
                f.close()
        self._open, self._cached = OrderedDict(), (None, None)

    def _parquet(self, shard: int) -> pq.ParquetFile:
        """The parsed footer of one shard; the last ``footer_cache`` shards stay open (LRU), so a
        shard-window sampler (``sampler.ShardWindowSampler``) parses each footer about once."""
        fs = self._filesystem()
        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard][1]
        while len(self._open) >= self.footer_cache:
            self._open.popitem(last=False)[1][0].close()
        path = join(self._base, self.shard_files[shard])
        local = _is_local(fs)
        # local: Arrow's own reader (no Python file object on the read path) and no pre-buffering,
        # which costs 0.1 ms a row-group read against 0.02 ms without on a memory map; remote:
        # pre-buffering coalesces a row group's column chunks into few range requests
        f = pa.memory_map(path, "r") if local else fs.open(path, "rb")
        pf = pq.ParquetFile(f, pre_buffer=not local)
        try:
            self._check_unchanged(shard, f.size() if callable(f.size) else f.size, pf)
        except FormatError:
            f.close()
            raise
        self._open[shard] = (f, pf)
        return pf

    def _check_unchanged(self, shard: int, nbytes: int, pf: pq.ParquetFile) -> None:
        """A shard rewritten after the manifest (a relabel in place, a copy still in progress)
        is refused at open, before any of its rows is read: size and rows must be the
        manifest's. (One check per file open; ``c2fmae-data verify`` checks the sha256.)"""
        e = self.shard_entries[shard]
        for what, have in (("bytes", nbytes), ("rows", pf.metadata.num_rows)):
            if e.get(what) is not None and have != e[what]:
                raise FormatError(f"{self.shard_files[shard]} changed since the manifest was "
                                  f"written: {have} {what}, the manifest says {e[what]} (rerun "
                                  "`c2fmae-data manifest` if the change is intended, then "
                                  "`c2fmae-data verify`)")

    def _row_group(self, shard: int, group: int):
        """The (cached) table of one row group, only the columns a sample needs."""
        self._filesystem()
        if self._cached[0] != (shard, group):
            try:
                table = self._parquet(shard).read_row_group(group, columns=list(self.columns),
                                                            use_threads=False)
            except (OSError, ValueError) as e:
                raise FormatError(f"{self.shard_files[shard]}: row group {group} unreadable: "
                                  f"{e}") from None
            self._cached = ((shard, group), table)
        return self._cached[1]

    def _shard_tables(self) -> "list[tuple[Any, list[int]]]":
        """Per shard: (key/status/class_index table, row-group sizes). From the split's index when
        the manifest lists one (one small read, no shard touched; its sha256 is checked by
        ``verify``, not here), else by scanning every shard."""
        if self.index_entry is None:
            return [self._scan_table(s) for s in range(len(self.shard_files))]
        fs = self._filesystem()
        rel = safe_relpath(self.index_entry["file"])
        table, groups = load_index(fs, join(self._base, rel), rel, self.shard_entries)
        return split_by_shard(table, self.shard_entries, groups, rel)

    def _scan(self, shard: int) -> "tuple[list[str], list[str], list[int], list[int]]":
        """keys, statuses, row-group sizes and class indices of one shard as lists."""
        t, sizes = self._scan_table(shard)
        return (t.column("key").to_pylist(), t.column("status").to_pylist(), sizes,
                t.column("class_index").to_pylist())

    def _scan_table(self, shard: int) -> "tuple[Any, list[int]]":
        """(the index columns ``index.SCAN_COLUMNS`` of one shard, row-group sizes): the only
        full-shard read, for a dataset without an index file."""
        pf = self._parquet(shard)
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        t = pf.read(columns=SCAN_COLUMNS)
        expected = self.shard_entries[shard].get("rows")
        if expected is not None and t.num_rows != expected:
            raise FormatError(f"{self.shard_files[shard]}: {t.num_rows} rows, the manifest "
                              f"says {expected} (run `c2fmae-data verify`)")
        return t, sizes

    # -------------------------------------------------------------- rows -> samples
    @staticmethod
    def row_at(table, offset: int) -> "dict[str, Any]":
        return {c: table.column(c)[offset].as_py() for c in table.column_names}

    #: (seed, epoch) of the per-sample augmentation RNG; None = the process's ``random`` module
    augment_seed: "tuple[int, int] | None" = None

    def set_augment_seed(self, seed: int, epoch: int) -> None:
        """Draw each sample's crop and flip from ``(seed, epoch, sample position)`` instead of
        the worker's RNG state, so that augmentation is a pure function of the schedule (exact
        resume with any number of DataLoader workers). Call before building the epoch's loader."""
        self.augment_seed = (int(seed), int(epoch))

    def sample_rng(self, *position) -> "random.Random | None":
        if self.augment_seed is None:
            return None
        return random.Random("aug-%d-%d-" % self.augment_seed + "-".join(map(str, position)))

    def make_sample(self, row: "dict[str, Any]", rng=None) -> "dict[str, Any]":
        """Read the image, decode and check the masks, apply the transform (``rng``: the
        per-sample augmentation RNG, else the global one)."""
        key = row["key"]
        try:
            img = self.source.load(key, row["source_sha256"], row["source_size"],
                                   row.get("image_bytes"))
        except SampleError as e:
            if row["status"] == STATUS_OK:
                raise
            # a failed row is kept (include_failed) only with pixels to show: often its image
            # is the reason it failed, so say both
            raise SampleError(key, f"labeling failed ({row.get('reason') or '?'}) and "
                                   f"{str(e)[len(key) + 2:]}") from None
        w, h = img.size
        inst = sem = None
        if row["status"] == STATUS_OK:
            if (row["width"], row["height"]) != (w, h):
                raise SampleError(key, f"image decodes to {w}x{h} (EXIF applied) but the labels "
                                       f"are {row['width']}x{row['height']}")
            inst, sem = row["instance_png"], row["semantic_png"]
            for name, data, depth in (("instance_png", inst, 16), ("semantic_png", sem, 8)):
                try:
                    mw, mh = png_size(data)
                except (FormatError, TypeError) as e:
                    raise SampleError(key, f"{name} not decodable: {e}") from None
                if (mw, mh) != (w, h):
                    raise SampleError(key, f"{name} is {mw}x{mh} but the image decodes to "
                                           f"{w}x{h} (EXIF applied)")
                if data[24] != depth:
                    raise SampleError(key, f"{name} has bit depth {data[24]}, expected {depth}")
            if not isinstance(self.transform, JointTransform):  # full arrays for other callers
                try:
                    inst, sem = decode_instance_png(inst), decode_semantic_png(sem)
                except FormatError as e:
                    raise SampleError(key, f"mask not decodable: {e}") from None
        if self.transform is None:
            sample = {"image": img, "instance": inst, "semantic": sem}
        else:
            try:
                sample = (self.transform(img, inst, sem, rng=rng) if rng is not None
                          else self.transform(img, inst, sem))
            except FormatError as e:  # a mask PNG whose pixel data is corrupt
                raise SampleError(key, f"mask not decodable: {e}") from None
        sample["label"] = int(row["class_index"])
        sample["key"] = key
        return sample

    def _skip(self, key: str, err: Exception) -> None:
        self._errors.add(1)
        log.warning("skipping %s: %s", key, err)


def _is_local(fs) -> bool:
    proto = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in proto or "local" in proto


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
        # per sample only the PNGs are read: key and the small fields come from the index
        # (row_meta.py); a shard changed since is refused when it is opened (_check_unchanged)
        self.columns = ("instance_png", "semantic_png") + self.columns[len(ROW_COLUMNS):] \
            + (("status", "reason") if self.include_failed else ())
        shard_ix, group_ix, offset_ix, keys, labels, meta = [], [], [], [], [], []
        self.num_failed = 0
        for s, (t, sizes) in enumerate(self._shard_tables()):   # Arrow/numpy only: no per-row
            ok = pc.equal(t.column("status"), STATUS_OK).to_numpy(zero_copy_only=False)
            keep = np.ones(len(ok), bool) if self.include_failed else ok
            self.num_failed += int((~ok).sum())
            groups = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
            offsets = np.arange(len(groups), dtype=np.int32) - \
                np.repeat(np.cumsum([0] + sizes[:-1]).astype(np.int32), sizes)
            shard_ix.append(np.full(int(keep.sum()), s, np.int32))
            group_ix.append(groups[keep])
            offset_ix.append(offsets[keep])
            keys.append(fixed_width_keys([t.column("key").combine_chunks().filter(pa.array(keep))]))
            labels.append(t.column("class_index").to_numpy()[keep].astype(np.int16))
            meta.append(t.select(list(META_COLUMNS)).filter(pa.array(keep)))
        cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
        self._shard, self._group = cat(shard_ix, np.int32), cat(group_ix, np.int32)
        self._offset = cat(offset_ix, np.int32)
        width = max((k.dtype.itemsize for k in keys), default=1)
        self._keys = np.concatenate([k.astype(f"S{width}") for k in keys]) if keys else \
            np.zeros(0, "S1")
        #: class index of every sample (timm order; -1 outside ImageNet), without decoding any
        self.labels = cat(labels, np.int16)
        self._meta = RowMeta(meta)
        self._close()  # handles opened for indexing are not for the workers

    def __len__(self) -> int:
        return len(self._keys)

    def shard_of(self) -> np.ndarray:
        """Shard index of every sample (for ``sampler.ShardWindowSampler``)."""
        return self._shard

    def key(self, index: int) -> str:
        return self._keys[index].decode()

    def keys(self) -> "list[str]":
        return [k.decode() for k in self._keys]

    def _get(self, index: int) -> "dict[str, Any]":
        table = self._row_group(int(self._shard[index]), int(self._group[index]))
        row = self.row_at(table, int(self._offset[index]))
        row.update(self._meta.fields(index), key=self.key(index),
                   class_index=int(self.labels[index]))
        row.setdefault("status", STATUS_OK)  # without include_failed only ok rows are indexed
        return self.make_sample(row, self.sample_rng(index))

    def __getitem__(self, index: int) -> "dict[str, Any]":
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        if self.on_error == "raise":
            return self._get(index)
        for attempt in range(min(n, 100)):
            i = (index + attempt) % n
            try:
                return self._get(i)
            except (SampleError, FormatError) as e:
                self._skip(self.key(i), e)
        raise SampleError(self.key(index), "this and the next 99 samples all failed")

    def __repr__(self):
        return (f"ImageNetMultiGranular(root={self.root!r}, split={self.split!r}, n={len(self)}, "
                f"failed_excluded={0 if self.include_failed else self.num_failed}, "
                f"transform={self.transform!r})")
