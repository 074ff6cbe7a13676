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

from c2fmae_data.format.bounds import MAX_MANIFEST_BYTES, is_count, loads_bounded, read_capped
from c2fmae_data.format.categories import (COCO_PANOPTIC_IDS, COCO_PANOPTIC_NAMES, SEMANTIC_IGNORE,
                                           imagenet_wnids)
from c2fmae_data.format.parquet_guard import (cast_columns, check_columns, check_keys,
                                              open_parquet, read_columns, row_group_sizes)
from c2fmae_data.format.schema import (FORMAT_NAME, FORMAT_VERSION, SCHEMA, STATUS_OK, FormatError,
                                       safe_relpath)
from c2fmae_data.format.index import (INDEX_DIR, SCAN_COLUMNS, index_entry, index_name, load_index,
                                      read_shard_rows, shard_rows, split_by_shard)
from c2fmae_data.format.fs import inside_root, join, open_fs, sha256_file
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
    """A shard's manifest entry from the file itself (hash, counts, index rows); the file is
    untrusted (symlinks out of the root, footer, types, page CRCs, key lengths checked)."""
    path = inside_root(fs, base, rel)
    sha, size = sha256_file(fs, path)
    cols = list(dict.fromkeys(SCAN_COLUMNS + ["num_instances"]))
    with fs.open(path, "rb") as f:
        pf = open_parquet(f, rel, checksums=True)
        check_columns(pf, SCHEMA, cols, rel, types=False)   # verify names a retyped column
        t = cast_columns(read_columns(pf, cols, rel), SCHEMA, rel)
        sizes = row_group_sizes(pf)
    check_keys(t.column("key"), rel)
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
        m = read_manifest(fs, join(base, MANIFEST))
        if manifest_problems(m):
            return {}
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
    return read_shard_rows(fs, inside_root(fs, base, info.file), info.file)


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
            first_meta = shard_meta(fs, join(base, rel), rel)
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


_HEX = frozenset("0123456789abcdef")
SPLIT_COUNTS = ("rows", "ok", "failed", "instances", "bytes")


def _is_sha256(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and set(v) <= _HEX


def _entry_problems(what: str, e: "dict[str, Any]") -> "list[str]":
    """Types of one shard or index entry: rows/bytes counts, a sha256, optional counts/keys."""
    probs = [f"{what} lacks {k!r}" for k in ("rows", "bytes", "sha256") if k not in e]
    for k in ("rows", "bytes", "ok", "failed", "instances"):
        if k in e and not is_count(e[k]):
            probs.append(f"{what}: {k} {str(e[k])[:40]!r} is not a non-negative integer")
    if "sha256" in e and not _is_sha256(e["sha256"]):
        probs.append(f"{what}: sha256 {str(e['sha256'])[:80]!r} is not 64 lower-case hex digits")
    for k in ("first_key", "last_key"):
        if k in e and not isinstance(e[k], str):
            probs.append(f"{what}: {k} is not a string")
    return probs


def _shard_list_problems(split: str, shards: Any) -> "list[str]":
    if not isinstance(shards, list):
        return [f"split {split}: 'shards' is not a list"]
    probs = []
    for e in shards:
        try:
            safe_relpath(e["file"])
        except (FormatError, KeyError, TypeError) as err:
            probs.append(f"split {split}: bad shard entry {str(e)[:200]}: {err}")
            continue
        probs += _entry_problems(f"shard {e['file']}", e)
        parsed = parse_shard_name(e["file"])
        if not parsed or parsed[0] != split or not e["file"].startswith("shards/"):
            probs.append(f"shard {e['file']} is not named shards/{split}-NNNNN.parquet")
    return probs


def manifest_problems(m: Any) -> "list[str]":
    """Schema problems of a parsed manifest (empty when valid). The manifest is untrusted: every
    field a reader uses is checked for its type, so no reader meets a string where it counts."""
    if not isinstance(m, dict):
        return ["manifest is not a JSON object"]
    probs = [f"manifest lacks {k!r}" for k in REQUIRED_KEYS if k not in m]
    if m.get("format") != FORMAT_NAME:
        probs.append(f"format {str(m.get('format'))[:80]!r} is not {FORMAT_NAME!r}")
    ver = m.get("format_version", "")
    if not isinstance(ver, str) or ver.split(".")[0] != FORMAT_VERSION.split(".")[0]:
        probs.append(f"format_version {str(ver)[:40]!r} is not readable by this reader "
                     f"({FORMAT_VERSION})")
    if not isinstance(m.get("self_contained", False), bool):
        probs.append("self_contained is not true/false")
    splits = m.get("splits")
    if not isinstance(splits, dict):
        return probs + ["'splits' is not an object"]
    for split, s in splits.items():
        if not isinstance(s, dict):
            probs.append(f"split {split[:40]!r} is not an object")
            continue
        probs += _shard_list_problems(split, s.get("shards") or [])
        probs += [f"split {split}: {k} {str(s[k])[:40]!r} is not a non-negative integer"
                  for k in SPLIT_COUNTS if k in s and not is_count(s[k])]
        probs += _index_entry_problems(split, s.get("index"))
    return probs


def _index_entry_problems(split: str, ent: Any) -> "list[str]":
    """Problems of a split's ``index`` entry (format 1.2; absent in older datasets)."""
    if ent is None:
        return []
    if not isinstance(ent, dict) or ent.get("file") != index_name(split):
        return [f"split {split}: index entry {str(ent)[:200]} is not "
                f"{{'file': '{index_name(split)}', ...}}"]
    return _entry_problems(f"index {ent['file']}", ent)


def read_manifest(fs, path: str) -> Any:
    """The parsed JSON of a manifest file: at most ``MAX_MANIFEST_BYTES``, ``MAX_JSON_DEPTH``
    levels; FormatError naming ``path`` otherwise (FileNotFoundError passes through)."""
    with fs.open(path, "rb") as f:
        data = read_capped(f, MAX_MANIFEST_BYTES, path)
    return loads_bounded(data, path)


def load_manifest(root: str) -> "dict[str, Any]":
    """Read and check ``root``/manifest.json; a FormatError lists every problem."""
    fs, base = open_fs(root)
    path = join(base, MANIFEST)
    try:
        m = read_manifest(fs, path)
    except FileNotFoundError:
        raise FormatError(f"{root}: no {MANIFEST} (is this a C2FMAE dataset root?)") from None
    probs = manifest_problems(m)
    if probs:
        shown = probs[:50] + ([f"... and {len(probs) - 50} more"] if len(probs) > 50 else [])
        raise FormatError(f"{path}:\n  " + "\n  ".join(shown))
    return m
