"""``verify``: check a dataset root and report EVERY problem found.

Two depths (``docs/FORMAT.md`` section "Verification"):

* quick (default): manifest schema and version; per shard: present, byte size, sha256, column
  names and Arrow types against ``format.SCHEMA``, row count,
  first/last key and ok/failed counts against the manifest; extra shards; stray temporary files
  (warnings); keys sorted within a shard and across the shards of a split, unique across the whole
  dataset; every row's metadata (``check_record(decode=False)``: status, class index, sizes, hash
  field, instance metadata ids and categories); the split's index (format 1.2): present, size and
  sha256 as listed, consistent with the manifest, and per shard the same key/status/class_index
  and row groups as the columns just read (a split without one is a warning).
* ``full``: additionally decodes every mask (``check_record(decode=True)``): size equals
  width x height, semantic ids in 0..132 or 255, instance ids and areas agree with the metadata;
  and for self-contained sets the sha256 of ``image_bytes``.

``imagenet_root`` (either depth) checks that every key exists under that root with the recorded
size and sha256. Memory is bounded by one row group (shards are streamed) plus 8 bytes per row for
the duplicate-key check.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow.parquet as pq

from c2fmae_data.format.schema import (COLUMNS, FORMAT_VERSION, SCHEMA, STATUS_OK, FormatError,
                                       check_record)
from c2fmae_data.format.index import SCAN_COLUMNS, index_problems, rows_digest
from c2fmae_data.format.manifest import MANIFEST, load_manifest
from c2fmae_data.loading.source import check_image_root
from c2fmae_data.format.fs import inside_root, join, open_fs, sha256_file
from c2fmae_data.format.parquet_guard import (column_problems, open_parquet, read_columns,
                                              read_row_group)
from c2fmae_data.format.shards import SHARD_DIR, TMP_MARK, parse_shard_name, shard_meta

#: columns read in quick mode (no masks, no image bytes)
LIGHT_COLUMNS = [c for c in COLUMNS if c not in ("instance_png", "semantic_png", "image_bytes")]
MAX_PER_SHARD = 100  # row problems listed per shard before summarising the rest


@dataclass
class Report:
    root: str
    full: bool
    problems: "list[str]" = field(default_factory=list)
    warnings: "list[str]" = field(default_factory=list)
    shards: int = 0
    rows: int = 0
    checked_images: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> "dict[str, Any]":
        return {**asdict(self), "ok": self.ok}

    def text(self) -> str:
        mode = "full" if self.full else "quick"
        lines = [f"verify {self.root} ({mode}): {self.shards} shards, {self.rows} rows"
                 + (f", {self.checked_images} source images checked" if self.checked_images else "")]
        lines += [f"WARNING {w}" for w in self.warnings]
        lines += [f"PROBLEM {p}" for p in self.problems]
        lines.append("OK" if self.ok else f"FAILED: {len(self.problems)} problem(s)")
        return "\n".join(lines)


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little",
                          signed=True)


def _iter_rows(pf: pq.ParquetFile, columns: "list[str]", whole: bool = False, name: str = "?"
               ) -> Iterator["dict[str, Any]"]:
    """Rows as dicts: one row group at a time (both modes: also for quick mode's light columns,
    16-row reads measured 43-89 ms per 1000-row shard against 48-97 ms for one read,
    docs/benchmarks.md ``scale-*``), or with ``whole`` the shard in one read. Reads are guarded:
    a failure is a FormatError naming the shard and row group."""
    have = set(pf.schema_arrow.names)
    cols = [c for c in columns if c in have]
    if whole:
        yield from read_columns(pf, cols, name).to_pylist()
        return
    for g in range(pf.num_row_groups):
        yield from read_row_group(pf, g, cols, name).to_pylist()


class _Verifier:
    def __init__(self, root: str, imagenet_root: "str | None", full: bool, workers: int = 1):
        self.fs, self.base = open_fs(root)
        self.report = Report(root=str(root), full=full)
        self.imagenet_root = imagenet_root
        self._source_fs = None   # (fs, base) of imagenet_root, opened on first use
        self._top_dirs: dict[str, bool] = {}   # key's first folder -> present under the root
        self.full, self.workers = full, max(1, int(workers))
        self.self_contained = False   # the manifest's word: then every ok row has image_bytes
        self.first_key = None
        self.key_hashes: list[np.ndarray] = []
        self.key_shard: list[np.ndarray] = []
        self.shard_files: list[str] = []
        self.digest = None   # of the last shard's index rows (``index.rows_digest``)

    def problem(self, msg: str) -> None:
        self.report.problems.append(msg)

    # ------------------------------------------------------------------ layout
    def listed_files(self) -> "tuple[set[str], list[str]]":
        d = join(self.base, SHARD_DIR)
        present, other = set(), []
        try:
            names = ([os.path.basename(p.rstrip("/")) for p in self.fs.ls(d, detail=False)]
                     if self.fs.exists(d) else [])
        except (OSError, NotImplementedError, ValueError) as e:  # e.g. http without listings
            self.report.warnings.append(f"cannot list {SHARD_DIR}/ here ({type(e).__name__}); "
                                        f"extra and stray files not checked")
            names = []
        for name in names:
            (present.add(f"{SHARD_DIR}/{name}") if parse_shard_name(name) else other.append(name))
        for name in other:
            kind = ("temporary file left by an interrupted write or download"
                    if TMP_MARK in name or name.endswith(".part") else "unexpected file")
            self.report.warnings.append(f"{SHARD_DIR}/{name}: {kind}")
        return present, other

    def run(self) -> Report:
        try:
            manifest = load_manifest(self.report.root)
        except FormatError as e:
            self.problem(f"{MANIFEST}: {e}")
            return self.report
        self.self_contained = manifest.get("self_contained") is True
        present, _ = self.listed_files()
        listed = []
        for split, s in manifest["splits"].items():
            entries = s.get("shards") or []
            tot = {k: 0 for k in ("rows", "ok", "failed", "instances", "bytes")}
            prev_last = None
            digests: dict[str, "str | None"] = {}
            for e, res in zip(entries, self.shard_results(split, entries)):
                listed.append(e["file"])
                digests[e["file"]] = res["digest"]
                for k in tot:
                    tot[k] += int(e.get(k, 0) or 0)
                prev_last = self.merge(res, e["file"], prev_last)
            for k, v in tot.items():
                if k in s and int(s[k]) != v:
                    self.problem(f"manifest split {split}: {k} {s[k]} != {v} summed over shards")
            if s.get("index"):
                self.check_index(s["index"], entries, digests)
            else:
                self.report.warnings.append(
                    f"split {split}: no index (a dataset older than format 1.2): loaders scan "
                    f"every shard at open; `c2fmae-data manifest ROOT` writes one")
        for rel in sorted(present - set(listed)):
            self.problem(f"{rel}: shard not listed in the manifest (extra shard)")
        self.check_duplicates()
        return self.report

    def check_index(self, ent: "dict[str, Any]", entries: list,
                    digests: "dict[str, str | None]") -> None:
        for p in index_problems(self.fs, self.base, ent, entries, digests):
            self.problem(p)

    # ------------------------------------------------------------------ shards in parallel
    def shard_results(self, split: str, entries: list) -> Iterator["dict[str, Any]"]:
        """One ``_check_one`` result per entry, in entry order; ``workers`` processes."""
        args = [(self.report.root, self.imagenet_root, self.full, split, e, self.self_contained)
                for e in entries]
        if self.workers <= 1 or len(entries) <= 1:
            yield from (_check_one(*a) for a in args)
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(min(self.workers, len(entries)), mp_context=ctx) as pool:
            yield from pool.map(_check_one, *zip(*args))

    def merge(self, res: "dict[str, Any]", rel: str, prev_last: "str | None") -> "str | None":
        """Add one shard's result to the report, with the one cross-shard check (key order)."""
        r = self.report
        # a folder-level problem (e.g. an image root without train/) is found by every shard's
        # process: list each distinct line once
        seen = set(r.problems)
        r.problems += [p for p in res["problems"] if p not in seen]
        r.warnings += [w for w in res["warnings"] if w not in r.warnings]
        r.shards, r.rows = r.shards + res["shards"], r.rows + res["rows"]
        r.checked_images += res["checked_images"]
        if res["hashes"] is not None:
            self.key_hashes.append(res["hashes"])
            self.key_shard.append(np.full(len(res["hashes"]), len(self.shard_files), np.int32))
            self.shard_files.append(rel)
        first = res["first"]
        if first is not None and prev_last is not None and first <= prev_last:
            self.problem(f"{rel}: {first!r}: first key of the shard is not after the previous "
                         f"shard's last key {prev_last!r}")
        return res["last"] if res["last"] is not None else prev_last

    # ------------------------------------------------------------------ one shard
    def check_shard(self, split: str, e: "dict[str, Any]", prev_last: "str | None"
                    ) -> "str | None":
        rel = e["file"]
        self.report.shards += 1
        try:
            path = inside_root(self.fs, self.base, rel)
        except FormatError as err:
            self.problem(str(err))
            return prev_last
        if not self.fs.exists(path):
            self.problem(f"{rel}: missing (listed in the manifest with {e.get('rows')} rows)")
            return prev_last
        try:
            sha, size = sha256_file(self.fs, path)
        except OSError as err:   # e.g. a folder under a shard's name
            self.problem(f"{rel}: unreadable: {type(err).__name__}: {err}")
            return prev_last
        if size != int(e["bytes"]):
            self.problem(f"{rel}: {size} bytes, manifest says {e['bytes']} (truncated or replaced)")
        if sha != e["sha256"]:
            self.problem(f"{rel}: sha256 {sha[:16]}... != manifest {str(e['sha256'])[:16]}... "
                         f"(corrupted or modified)")
        try:   # the file is untrusted: every failure below is one FormatError naming it
            meta = shard_meta(self.fs, path, rel)
            ver = str(meta.get("format_version", ""))
            if ver.split(".")[0] != FORMAT_VERSION.split(".")[0]:
                self.problem(f"{rel}: format_version {ver[:40]!r} not readable by "
                             f"{FORMAT_VERSION}")
            with self.fs.open(path, "rb") as f:
                return self.check_rows(rel, e, open_parquet(f, rel, checksums=True), prev_last)
        except FormatError as err:
            self.problem(str(err) if str(err).startswith(rel) else f"{rel}: {err}")
            return prev_last

    def check_rows(self, rel: str, e: "dict[str, Any]", pf: pq.ParquetFile,
                   prev_last: "str | None") -> "str | None":
        missing = [c for c in COLUMNS if c not in pf.schema_arrow.names and c != "image_bytes"]
        if missing:
            self.problem(f"{rel}: lacks columns {missing}")
            return prev_last
        if self.self_contained and "image_bytes" not in pf.schema_arrow.names:
            self.problem(f"{rel}: lacks column image_bytes (the manifest says self_contained)")
        wrong = column_problems(pf.schema_arrow, SCHEMA)
        for p in wrong:
            self.problem(f"{rel}: {p} (readers refuse its rows; rewrite the shard)")
        if wrong:
            return prev_last
        if pf.metadata.num_rows != int(e["rows"]):
            self.problem(f"{rel}: {pf.metadata.num_rows} rows, manifest says {e['rows']}")
        columns = list(COLUMNS) if self.full else LIGHT_COLUMNS
        if self.imagenet_root is None and not self.full:
            columns = [c for c in columns if c != "image_bytes"]
        n_probs, n_ok, keys_h = 0, 0, []
        seen: "list[list]" = [[] for _ in SCAN_COLUMNS]   # what the index says of the rows
        first = last = None
        shard_no = len(self.shard_files)
        self.shard_files.append(rel)
        for rec in _iter_rows(pf, columns, name=rel):
            key = rec.get("key")
            rec.setdefault("image_bytes", None)
            for c in ("instance_png", "semantic_png"):
                rec.setdefault(c, None)
            probs = check_record(rec, decode=self.full)
            if self.full:
                probs += self.image_bytes_problems(rec)
            if (self.imagenet_root is not None and rec.get("status") == STATUS_OK
                    and not any(p.startswith("invalid key") for p in probs)):
                probs += self.check_source(rec)
            if isinstance(key, str):
                if last is not None and key <= last:
                    probs.append("duplicate key" if key == last else
                                 f"rows not sorted by key (follows {last!r})")
                first = key if first is None else first
                last = key
                keys_h.append(_key_hash(key))
            n_ok += rec.get("status") == STATUS_OK
            for lst, c in zip(seen, SCAN_COLUMNS):
                lst.append(rec.get(c))
            for p in probs:
                n_probs += 1
                if n_probs <= MAX_PER_SHARD:
                    self.problem(f"{rel}: {key!r}: {p}")
            self.report.rows += 1
        if n_probs > MAX_PER_SHARD:
            self.problem(f"{rel}: ... and {n_probs - MAX_PER_SHARD} more row problems")
        for k, got in (("first_key", first or ""), ("last_key", last or ""), ("ok", n_ok)):
            if k in e and e[k] != got:
                self.problem(f"{rel}: {k} {got!r} != manifest {e[k]!r}")
        self.key_hashes.append(np.asarray(keys_h, np.int64))
        self.key_shard.append(np.full(len(keys_h), shard_no, np.int32))
        self.first_key = first
        md = pf.metadata
        self.digest = rows_digest(seen, [md.row_group(g).num_rows
                                          for g in range(md.num_row_groups)])
        return last if last is not None else prev_last

    def image_bytes_problems(self, rec: "dict[str, Any]") -> "list[str]":
        """image_bytes against sha256 (failed rows too: include_failed shows them)."""
        data, sha = rec.get("image_bytes"), rec.get("source_sha256")
        if data is None:
            return (["image_bytes missing on an ok row of a self-contained dataset"]
                    if self.self_contained and rec.get("status") == STATUS_OK else [])
        if (sha is not None or rec.get("status") == STATUS_OK) \
                and hashlib.sha256(data).hexdigest() != sha:
            return ["image_bytes do not match source_sha256"]
        return []

    def check_source(self, rec: "dict[str, Any]") -> "list[str]":
        if self._source_fs is None:
            self._source_fs = open_fs(self.imagenet_root)
        fs, base = self._source_fs
        top = rec["key"].split("/")[0]
        if "/" in rec["key"] and not self._has_top(fs, base, top):
            return []    # said once for the whole folder, not once per row
        path = join(base, rec["key"])
        self.report.checked_images += 1
        try:
            sha, size = sha256_file(fs, path)
        except FileNotFoundError:
            return [f"source image {path} missing under --imagenet-root"]
        except OSError as e:
            return [f"source image {path} unreadable: {e}"]
        probs = []
        if rec.get("source_size") is not None and size != int(rec["source_size"]):
            probs.append(f"source image {path} is {size} bytes, dataset says {rec['source_size']}")
        if sha != rec.get("source_sha256"):
            probs.append(f"source image {path} sha256 does not match source_sha256 "
                         f"(a different file than the one labeled)")
        return probs

    def _has_top(self, fs, base: str, top: str) -> bool:
        """Whether ``imagenet_root/<top>/`` exists; a problem naming it the first time not."""
        if top not in self._top_dirs:
            try:
                ok = fs.isdir(join(base, top))
            except Exception:  # noqa: BLE001 - e.g. http without listings: check per row
                ok = True
            self._top_dirs[top] = ok
            if not ok:
                self.problem(f"--imagenet-root {self.imagenet_root} has no folder {top}/, which "
                             f"the keys start with ({top}/...): pass the folder that holds "
                             f"{top}/; those rows' images were not checked")
        return self._top_dirs[top]

    # ------------------------------------------------------------------ dataset-wide
    def check_duplicates(self) -> None:
        if not self.key_hashes:
            return
        h = np.concatenate(self.key_hashes)
        s = np.concatenate(self.key_shard)
        order = np.argsort(h, kind="stable")
        hs = h[order]
        dup = np.nonzero(hs[1:] == hs[:-1])[0]
        if not len(dup):
            return
        # name the keys: rescan only the shards involved (rare path)
        dup_hashes = set(hs[dup].tolist())
        shards = sorted(set(s[order][np.concatenate([dup, dup + 1])].tolist()))
        where: dict[str, list[str]] = {}
        for i in shards:
            rel = self.shard_files[i]
            try:
                with self.fs.open(join(self.base, rel), "rb") as f:
                    for rec in _iter_rows(open_parquet(f, rel), ["key"], name=rel):
                        if _key_hash(rec["key"]) in dup_hashes:
                            where.setdefault(rec["key"], []).append(rel)
            except (FormatError, OSError) as e:   # it was read once; reported then if bad
                self.problem(f"{rel}: re-reading keys for the duplicate check failed: {e}")
        for key, rels in sorted(where.items()):
            if len(rels) > 1 and len(set(rels)) > 1:  # within-shard repeats reported already
                self.problem(f"duplicate key {key!r} in {', '.join(sorted(set(rels)))}")


def _check_one(root: str, imagenet_root: "str | None", full: bool, split: str,
               e: "dict[str, Any]", self_contained: bool = False) -> "dict[str, Any]":
    """Everything verify learns from one shard alone (run in a worker process)."""
    v = _Verifier(root, imagenet_root, full)
    v.self_contained = self_contained
    last = v.check_shard(split, e, None)
    r = v.report
    return {"problems": r.problems, "warnings": r.warnings, "shards": r.shards, "rows": r.rows,
            "checked_images": r.checked_images, "first": v.first_key, "last": last,
            "hashes": v.key_hashes[0] if v.key_hashes else None, "digest": v.digest}


def verify(root: str, *, imagenet_root: "str | None" = None, full: bool = False,
           workers: "int | None" = None) -> Report:
    """Check the dataset at ``root``; ``Report.ok`` is True only when nothing is wrong.
    ``workers`` processes check shards in parallel (default: the cores); the report lists
    problems in shard order whatever the count. A missing ``imagenet_root`` raises
    FileNotFoundError (one line) instead of a problem per row."""
    check_image_root(imagenet_root, "--imagenet-root")
    if workers is None:
        workers = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count())
    return _Verifier(str(root), imagenet_root, full, workers or 1).run()
