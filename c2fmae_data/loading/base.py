"""What the map-style and streaming datasets share: split resolution, the per-row index arrays,
lazy and checked row-group reads, and turning one row into a sample.

The dataset's bytes are untrusted (docs/FORMAT.md section 12): a shard's path must stay inside
the root, its footer and row groups within bounds, its row-group layout the one the index
describes (no index row may point past a shard's row groups or rows), its columns of the format's
types; a row's masks are checked as PNGs of the row's size before a pixel is inflated
(``sample.checked_masks``). Every violation is a FormatError naming shard, row, key and column.
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

from c2fmae_data.format.fs import inside_root, is_local, open_fs
from c2fmae_data.format.index import SCAN_COLUMNS, load_index, split_by_shard
from c2fmae_data.format.manifest import load_manifest, safe_relpath
from c2fmae_data.format.parquet_guard import (check_columns, check_keys, open_parquet,
                                              read_columns, read_row_group, row_group_sizes)
from c2fmae_data.format.schema import SCHEMA, STATUS_FAILED, STATUS_OK, FormatError
from c2fmae_data.loading.row_meta import META_COLUMNS, PackedKeys, RowMeta
from c2fmae_data.loading.sample import build_sample
from c2fmae_data.loading.source import ImageSource, check_image_root
from c2fmae_data.loading.transforms import EvalTransform, TrainTransform

log = logging.getLogger("c2fmae_data.loading.dataset")
#: per sample only these are read from the shard: everything else comes from the index
ROW_COLUMNS = ("instance_png", "semantic_png", "num_instances")
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
    """Split resolution, the per-row index (``_build_index``), lazy checked row-group reads and
    ``make_sample``; subclasses decide the order of rows."""

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
        self.columns = ROW_COLUMNS + (("image_bytes",) if self.source.uses_image_bytes else ()) \
            + (("reason",) if include_failed else ())   # status: from the index
        #: the manifest entry of the split's index (format 1.2) when it is used to open
        self.index_entry = splits[split].get("index") if use_index else None
        self._errors = ErrorCounter()
        self._fs = self._base = None
        self._pid = None
        self.footer_cache = max(1, int(footer_cache))
        self._open = OrderedDict()   # shard index -> (file object, ParquetFile, columns read), LRU
        self._cached = (None, None)             # ((shard, row group), pyarrow Table)
        self._sizes: "list[list[int] | None]" = [None] * len(self.shard_files)

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
            for f, *_ in self._open.values():
                f.close()
        self._open, self._cached = OrderedDict(), (None, None)

    def _parquet(self, shard: int) -> pq.ParquetFile:
        """The parsed, checked footer of one shard; the last ``footer_cache`` shards stay open
        (LRU), so a shard-window sampler (``sampler.ShardWindowSampler``) parses each footer
        about once."""
        fs = self._filesystem()
        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard][1]
        while len(self._open) >= self.footer_cache:
            self._open.popitem(last=False)[1][0].close()
        rel = self.shard_files[shard]
        path = inside_root(fs, self._base, rel)
        local = is_local(fs)
        # local: Arrow's own reader (no Python file object on the read path) and no pre-buffering,
        # which costs 0.1 ms a row-group read against 0.02 ms without on a memory map; remote:
        # pre-buffering coalesces a row group's column chunks into few range requests
        try:
            f = pa.memory_map(path, "r") if local else fs.open(path, "rb")
        except (OSError, ValueError) as e:
            raise FormatError(f"{rel}: cannot open: {type(e).__name__}: {e}") from None
        try:
            pf = open_parquet(f, rel, pre_buffer=not local)
            self._check_unchanged(shard, f.size() if callable(f.size) else f.size, pf)
            check_columns(pf, SCHEMA, self.columns, rel, optional=("image_bytes",))
        except FormatError:
            f.close()
            raise
        have = set(pf.schema_arrow.names)   # once per open: 0.02 ms an access
        self._open[shard] = (f, pf, [c for c in self.columns if c in have])
        return pf

    def _check_unchanged(self, shard: int, nbytes: int, pf: pq.ParquetFile) -> None:
        """A shard rewritten after the manifest (a relabel in place, a copy still in progress)
        is refused at open, before any of its rows is read: size and rows must be the
        manifest's, and its row groups those the index was built from (so no index row points
        past a row group or a row). One check per file open; ``verify`` checks the sha256."""
        e, rel = self.shard_entries[shard], self.shard_files[shard]
        for what, have in (("bytes", nbytes), ("rows", pf.metadata.num_rows)):
            if e.get(what) is not None and have != e[what]:
                raise FormatError(f"{rel} changed since the manifest was "
                                  f"written: {have} {what}, the manifest says {e[what]} (rerun "
                                  "`c2fmae-data manifest` if the change is intended, then "
                                  "`c2fmae-data verify`)")
        want = self._sizes[shard]
        if want is not None and row_group_sizes(pf) != want:
            raise FormatError(f"{rel}: row groups hold {row_group_sizes(pf)[:8]}... rows, the "
                              f"index says {want[:8]}... (index and shard disagree: run "
                              "`c2fmae-data verify`)")

    def _row_group(self, shard: int, group: int):
        """The (cached) table of one row group, only the columns a sample needs."""
        self._filesystem()
        if self._cached[0] != (shard, group):
            pf = self._parquet(shard)
            table = read_row_group(pf, group, self._open[shard][2], self.shard_files[shard])
            self._cached = ((shard, group), table)
        return self._cached[1]

    # -------------------------------------------------------------- the per-row index
    def _shard_tables(self) -> "list[tuple[Any, list[int]]]":
        """Per shard: (its ``SCAN_COLUMNS`` rows, row-group sizes). From the split's index when
        the manifest lists one (one small read, no shard touched; its sha256 is checked by
        ``verify``, not here), else by scanning every shard. Keeps the sizes for the open check."""
        if self.index_entry is None:
            parts = [self._scan_table(s) for s in range(len(self.shard_files))]
        else:
            fs = self._filesystem()
            rel = safe_relpath(self.index_entry["file"])
            table, groups = load_index(fs, inside_root(fs, self._base, rel), rel,
                                       self.shard_entries)
            parts = split_by_shard(table, self.shard_entries, groups, rel)
        self._sizes = [list(sizes) for _, sizes in parts]
        return parts

    def _scan_table(self, shard: int) -> "tuple[Any, list[int]]":
        """(the index columns ``index.SCAN_COLUMNS`` of one shard, row-group sizes): the only
        full-shard read, for a dataset without an index file."""
        pf, rel = self._parquet(shard), self.shard_files[shard]
        check_columns(pf, SCHEMA, SCAN_COLUMNS, rel)
        t = read_columns(pf, SCAN_COLUMNS, rel)
        check_keys(t.column("key"), rel)
        expected = self.shard_entries[shard].get("rows")
        if expected is not None and t.num_rows != expected:
            raise FormatError(f"{rel}: {t.num_rows} rows, the manifest says {expected} (run "
                              "`c2fmae-data verify`)")
        return t, row_group_sizes(pf)

    def _build_index(self) -> "list[list[int]]":
        """Fill the per-row arrays of the rows this dataset yields (ok rows, or all with
        ``include_failed``), in shard, row-group, row order: ``_shard``, ``_group``, ``_offset``,
        ``_keys``, ``labels``, ``_meta``, ``_ok``; ``num_failed``. Returns the row-group sizes per
        shard."""
        shard_ix, group_ix, offset_ix, keys, labels, meta, oks = [], [], [], [], [], [], []
        self.num_failed = 0
        for s, (t, sizes) in enumerate(self._shard_tables()):   # Arrow/numpy only: no per-row
            ok = pc.fill_null(pc.equal(t.column("status"), STATUS_OK), False) \
                .to_numpy(zero_copy_only=False)
            keep = np.ones(len(ok), bool) if self.include_failed else ok
            self.num_failed += int((~ok).sum())
            groups = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
            offsets = np.arange(len(groups), dtype=np.int32) - \
                np.repeat(np.cumsum([0] + sizes[:-1]).astype(np.int32), sizes)
            oks.append(ok[keep])
            shard_ix.append(np.full(int(keep.sum()), s, np.int32))
            group_ix.append(groups[keep])
            offset_ix.append(offsets[keep])
            keys.append(t.column("key").combine_chunks().filter(pa.array(keep)))
            labels.append(pc.fill_null(t.column("class_index"), -1).to_numpy()[keep]
                          .astype(np.int16))
            meta.append(t.select(list(META_COLUMNS)).filter(pa.array(keep)))
        cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
        self._shard, self._group = cat(shard_ix, np.int32), cat(group_ix, np.int32)
        self._offset = cat(offset_ix, np.int32)
        self._keys = PackedKeys(keys)
        #: class index of every sample (timm order; -1 outside ImageNet), without decoding any
        self.labels = cat(labels, np.int16)
        self._meta = RowMeta(meta)
        self._ok = cat(oks, bool)   # status from the index, not from the shard's bytes
        return list(self._sizes)

    def key(self, index: int) -> str:
        return self._keys[index]

    def keys(self) -> "list[str]":
        return self._keys.tolist()

    def _row(self, index: int, table) -> "dict[str, Any]":
        """Row ``index`` of the per-row arrays: its PNG columns from ``table`` (its row group),
        everything else from the index."""
        offset = int(self._offset[index])
        row = {c: table.column(c)[offset].as_py() for c in table.column_names}
        row.update(self._meta.fields(index), key=self.key(index),
                   class_index=int(self.labels[index]))
        row["status"] = STATUS_OK if self._ok[index] else STATUS_FAILED
        row["_where"] = (f"{self.shard_files[int(self._shard[index])]}: row group "
                         f"{int(self._group[index])} row {offset}")
        return row

    # -------------------------------------------------------------- rows -> samples
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
        """Read the image, check the masks, apply the transform (``rng``: the per-sample
        augmentation RNG, else the global one); see ``sample.build_sample``."""
        return build_sample(row, self.source, self.transform, rng)

    def _skip(self, key: str, err: Exception) -> None:
        self._errors.add(1)
        log.warning("skipping %s: %s", key, err)
