"""``manifest.json``: what a dataset root holds, rebuilt from its finished shards.

The manifest is derived data: ``build_manifest`` scans ``shards/`` and can be rerun at any time
(after a crash, after more shards were written). Shard hashes already known from the writer are
reused; others are computed by streaming the file.
"""
from __future__ import annotations

import datetime as _dt
import json
import uuid
from typing import Any, Iterable

import pyarrow.parquet as pq

from c2fmae_data.format.categories import (COCO_PANOPTIC_IDS, COCO_PANOPTIC_NAMES, SEMANTIC_IGNORE,
                                           imagenet_wnids)
from c2fmae_data.format.schema import (FORMAT_NAME, FORMAT_VERSION, STATUS_OK, FormatError,
                                       safe_relpath)
from c2fmae_data.format.index import (INDEX_DIR, SCAN_COLUMNS, index_entry, index_name, load_index,
                                      read_shard_rows, shard_rows, split_by_shard)
from c2fmae_data.format.fs import join, open_fs, sha256_file
from c2fmae_data.format.shards import ShardInfo, list_shards, parse_shard_name, shard_meta

MANIFEST = "manifest.json"
REQUIRED_KEYS = ("format", "format_version", "splits", "classes", "provenance", "created")


def code_version() -> str:
    try:
        from importlib.metadata import version

        return version("c2fmae")
    except Exception:  # not installed (running from a checkout)
        return "unknown"


def _shard_info(fs, base: str, rel: str) -> ShardInfo:
    path = join(base, rel)
    sha, size = sha256_file(fs, path)
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        t = pf.read(columns=list(dict.fromkeys(SCAN_COLUMNS + ["num_instances"])))
    keys = t.column("key").to_pylist()
    status = t.column("status").to_pylist()
    ok = sum(s == STATUS_OK for s in status)
    return ShardInfo(file=rel, rows=t.num_rows, bytes=size, sha256=sha,
                     first_key=keys[0] if keys else "", last_key=keys[-1] if keys else "",
                     ok=ok, failed=len(status) - ok,
                     instances=int(sum(n or 0 for n in t.column("num_instances").to_pylist())),
                     index=shard_rows(rel, t.select(SCAN_COLUMNS), sizes))


def _previous_rows(fs, base: str) -> "dict[str, tuple[str, Any]]":
    """{shard file: (sha256, index rows)} from the index the current manifest lists, so that a
    rebuild reads no shard whose hash is unchanged; {} when there is none or it is unusable."""
    out: dict[str, tuple[str, Any]] = {}
    try:
        with fs.open(join(base, MANIFEST), "r") as f:
            m = json.load(f)
        for split, s in m["splits"].items():
            ent = s.get("index")
            if not ent:
                continue
            rel = safe_relpath(ent["file"])
            table, groups = load_index(fs, join(base, rel), rel, s["shards"])
            for e, (part, sizes) in zip(s["shards"], split_by_shard(table, s["shards"], groups,
                                                                     rel)):
                out[e["file"]] = (e["sha256"], shard_rows(e["file"], part, sizes))
    except Exception:  # noqa: BLE001 - derived data: anything odd means rebuild from the shards
        return {}
    return out


def _index_rows(fs, base: str, info: ShardInfo, previous: "dict[str, tuple[str, Any]]"):
    """The index rows of one shard: from the writer, else the previous index, else the file."""
    if info.index is not None and info.index.num_rows == info.rows:
        return info.index
    sha, rows = previous.get(info.file, (None, None))
    if sha == info.sha256 and rows.num_rows == info.rows:
        return rows
    return read_shard_rows(fs, join(base, info.file), info.file)


def write_bytes_atomic(fs, path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, path)


def build_manifest(root: str, *, provenance: "dict[str, Any] | None" = None,
                   known: "Iterable[ShardInfo] | None" = None, self_contained: "bool | None" = None,
                   write: bool = True) -> "dict[str, Any]":
    """Scan the finished shards of ``root`` and (re)write its manifest. ``provenance`` defaults to
    the one stored in the first shard's metadata."""
    fs, base = open_fs(root)
    known_by_file = {k.file: k for k in (known or [])}
    splits: dict[str, dict[str, Any]] = {}
    first_meta: dict[str, Any] = {}
    previous = _previous_rows(fs, base)
    parts: dict[str, list] = {}
    for rel in list_shards(root):
        split, _ = parse_shard_name(rel)
        info = known_by_file.get(rel)
        if info is None or fs.size(join(base, rel)) != info.bytes:
            info = _shard_info(fs, base, rel)
        if not first_meta:
            first_meta = shard_meta(fs, join(base, rel))
        s = splits.setdefault(split, {"rows": 0, "ok": 0, "failed": 0, "instances": 0,
                                      "bytes": 0, "shards": []})
        s["shards"].append(info.to_json())
        parts.setdefault(split, []).append(_index_rows(fs, base, info, previous))
        for k in ("rows", "ok", "failed", "instances", "bytes"):
            s[k] += getattr(info, k)
    index_data = {}
    for split, s in splits.items():   # format 1.2: the split's index, listed with its hash
        s["index"], index_data[split] = index_entry(split, parts[split],
                                                    [e["file"] for e in s["shards"]])
    if provenance is None:
        provenance = first_meta.get("provenance", {})
    if self_contained is None:
        self_contained = bool(first_meta.get("self_contained", False))
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "self_contained": self_contained,
        "splits": splits,
        "totals": {k: sum(s[k] for s in splits.values())
                   for k in ("rows", "ok", "failed", "instances", "bytes")},
        "classes": {
            "imagenet_wnids": list(imagenet_wnids()),
            "semantic": {"names": list(COCO_PANOPTIC_NAMES), "coco_ids": list(COCO_PANOPTIC_IDS),
                         "ignore": SEMANTIC_IGNORE},
        },
        "provenance": provenance,
    }
    if write:
        if index_data:
            fs.makedirs(join(base, INDEX_DIR), exist_ok=True)
        for split, data in index_data.items():   # before the manifest that lists them
            write_bytes_atomic(fs, join(base, splits[split]["index"]["file"]), data)
        write_json_atomic(fs, join(base, MANIFEST), manifest)
        from c2fmae_data.format.card import write_card

        write_card(fs, base, manifest)   # README.md: the Hugging Face dataset card
    return manifest


def write_json_atomic(fs, path: str, obj: Any) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    with fs.open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")
    fs.mv(tmp, path)


def manifest_problems(m: Any) -> "list[str]":
    """Schema problems of a parsed manifest (empty when valid)."""
    if not isinstance(m, dict):
        return ["manifest is not a JSON object"]
    probs = [f"manifest lacks {k!r}" for k in REQUIRED_KEYS if k not in m]
    if m.get("format") != FORMAT_NAME:
        probs.append(f"format {m.get('format')!r} is not {FORMAT_NAME!r}")
    ver = str(m.get("format_version", ""))
    if ver.split(".")[0] != FORMAT_VERSION.split(".")[0]:
        probs.append(f"format_version {ver!r} is not readable by this reader ({FORMAT_VERSION})")
    splits = m.get("splits")
    if not isinstance(splits, dict):
        return probs + ["'splits' is not an object"]
    for split, s in splits.items():
        for e in (s.get("shards") if isinstance(s, dict) else None) or []:
            try:
                safe_relpath(e["file"])
            except (FormatError, KeyError, TypeError) as err:
                probs.append(f"split {split}: bad shard entry {e!r}: {err}")
                continue
            for k in ("rows", "bytes", "sha256"):
                if k not in e:
                    probs.append(f"shard {e['file']} lacks {k!r}")
            parsed = parse_shard_name(e["file"])
            if not parsed or parsed[0] != split or not e["file"].startswith("shards/"):
                probs.append(f"shard {e['file']} is not named shards/{split}-NNNNN.parquet")
        probs += _index_entry_problems(split, s.get("index") if isinstance(s, dict) else None)
    return probs


def _index_entry_problems(split: str, ent: Any) -> "list[str]":
    """Problems of a split's ``index`` entry (format 1.2; absent in older datasets)."""
    if ent is None:
        return []
    if not isinstance(ent, dict) or ent.get("file") != index_name(split):
        return [f"split {split}: index entry {ent!r} is not {{'file': '{index_name(split)}', ...}}"]
    return [f"index {ent['file']} lacks {k!r}" for k in ("rows", "bytes", "sha256") if k not in ent]


def load_manifest(root: str) -> "dict[str, Any]":
    """Read and check ``root``/manifest.json; a FormatError lists every problem."""
    fs, base = open_fs(root)
    path = join(base, MANIFEST)
    try:
        with fs.open(path, "r") as f:
            m = json.load(f)
    except FileNotFoundError:
        raise FormatError(f"{root}: no {MANIFEST} (is this a C2FMAE dataset root?)") from None
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: not valid JSON: {e}") from None
    probs = manifest_problems(m)
    if probs:
        raise FormatError(f"{path}:\n  " + "\n  ".join(probs))
    return m
