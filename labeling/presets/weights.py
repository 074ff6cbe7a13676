"""Prefetch model weights into one directory and verify them later (offline clusters).

Layout: ``DIR/<hub id with '/' -> '__'>/`` holds each model's snapshot; ``DIR/weights.lock.json``
records, per hub id, the exact commit downloaded and the sha256 + size of every file. Loading a
preset with ``weights_dir=DIR`` reads only from there, so every labeling run from that dir uses the
same bytes; ``verify`` re-hashes everything against the lock.
"""
from __future__ import annotations

import json
import os
from typing import Iterable

from c2fmae_data.format.fs import sha256_local

from labeling.presets.catalog import LICENSES, ModelSpec

LOCK = "weights.lock.json"
#: model files worth fetching; framework duplicates (.bin/.h5/.msgpack) only when no safetensors
WANTED = ("*.json", "*.safetensors", "*.txt", "*.model", "*.py")
FALLBACK = ("*.bin",)


def model_dirname(hub_id: str) -> str:
    return hub_id.replace("/", "__")


def hash_tree(root: str) -> "dict[str, dict]":
    out = {}
    for dp, dns, fns in os.walk(root):
        dns[:] = sorted(d for d in dns if not d.startswith("."))   # skip .cache of the hub
        for fn in sorted(fns):
            p = os.path.join(dp, fn)
            out[os.path.relpath(p, root).replace(os.sep, "/")] = {"sha256": sha256_local(p),
                                                                  "size": os.path.getsize(p)}
    return out


def read_lock(wdir: str) -> dict:
    p = os.path.join(wdir, LOCK)
    if not os.path.exists(p):
        return {}
    with open(p) as f:
        return json.load(f)


def write_lock(wdir: str, models: "dict[str, dict]") -> str:
    lock = read_lock(wdir)
    lock.setdefault("models", {}).update(models)
    p = os.path.join(wdir, LOCK)
    tmp = p + ".tmp"
    with open(tmp, "w") as f:
        json.dump(lock, f, indent=1, sort_keys=True)
    os.replace(tmp, p)
    return p


def record(wdir: str, hub_id: str, revision: "str | None") -> dict:
    """Hash an already-present model dir into a lock entry."""
    d = os.path.join(wdir, model_dirname(hub_id))
    return {"dir": model_dirname(hub_id), "revision": revision, "files": hash_tree(d)}


def class_info_file(model_dir: str) -> "tuple[str, str] | None":
    """(repo, file) of the class-info json a OneFormer image processor reads at build time, from
    the model dir's preprocessor_config.json (``repo_path``, ``class_info_file``), or None."""
    cfg = os.path.join(model_dir, "preprocessor_config.json")
    if not os.path.isfile(cfg):
        return None
    with open(cfg, encoding="utf-8") as f:
        d = json.load(f)
    name = d.get("class_info_file")
    return (d.get("repo_path") or "", name) if name else None


def fetch_class_info(model_dir: str, download=None) -> "str | None":
    """Put OneFormer's class-info json (e.g. shi-labs/oneformer_demo's coco_panoptic.json, a hub
    DATASET repo) into ``model_dir`` so that the processor builds offline; its path, or None."""
    info = class_info_file(model_dir)
    if info is None:
        return None
    repo, name = info
    dest = os.path.join(model_dir, name)
    if not os.path.isfile(dest):
        if download is None:
            from huggingface_hub import hf_hub_download as download
        download(repo, name, repo_type="dataset", local_dir=model_dir)
    return dest


def processor_kwargs(model_dir: str) -> dict:
    """``from_pretrained`` kwargs that make a OneFormer processor read its class info from
    ``model_dir`` instead of the hub (empty when the dir has no such file)."""
    info = class_info_file(model_dir)
    if info and os.path.isfile(os.path.join(model_dir, info[1])):
        return {"repo_path": model_dir}
    return {}


def download(wdir: str, specs: "Iterable[ModelSpec]", log=print) -> dict:
    """Fetch each hub model at its revision into ``wdir`` and write the lock (needs network)."""
    from huggingface_hub import HfApi, snapshot_download

    os.makedirs(wdir, exist_ok=True)
    api, entries, seen = HfApi(), {}, set()
    for spec in specs:
        if (spec.source, spec.revision) in seen:      # SAM 3 fills two roles: fetch it once
            continue
        seen.add((spec.source, spec.revision))
        if spec.kind == "sam-hq-official" or os.path.exists(spec.source):
            log(f"skip {spec.source}: a local file/dir, nothing to download")
            continue
        info = _model_info(api, spec)
        names = [s.rfilename for s in info.siblings or []]
        patterns = list(WANTED) + ([] if any(n.endswith(".safetensors") for n in names)
                                   else list(FALLBACK))
        log(f"download {spec.source}@{info.sha} -> {model_dirname(spec.source)}/")
        snapshot_download(spec.source, revision=info.sha, allow_patterns=patterns,
                          local_dir=os.path.join(wdir, model_dirname(spec.source)))
        if spec.kind == "oneformer":
            extra = fetch_class_info(os.path.join(wdir, model_dirname(spec.source)))
            log(f"  + class info {extra}" if extra else "  (no class-info file named)")
        entries[spec.source] = {**record(wdir, spec.source, info.sha),
                                "license": LICENSES.get(spec.source, "see the model card")}
    if entries:
        write_lock(wdir, entries)
    return entries


def _model_info(api, spec: ModelSpec):
    """The hub's info for ``spec``; a gated model (SAM 3) the token may not read names its licence."""
    from huggingface_hub.errors import GatedRepoError

    try:
        return api.model_info(spec.source, revision=spec.revision)
    except GatedRepoError as e:
        raise PermissionError(
            f"{spec.source} is gated ({LICENSES.get(spec.source, 'see its model card')}): accept "
            f"its licence on https://huggingface.co/{spec.source} and log in (`hf auth login`) "
            "before `c2fmae-data weights download`") from e


def verify(wdir: str) -> "list[str]":
    """Problems of a weights dir against its lock (empty list when everything matches)."""
    lock = read_lock(wdir)
    if not lock.get("models"):
        return [f"{wdir}: no {LOCK} with models (run `c2fmae-data weights download {wdir}`)"]
    problems = []
    for hub_id, entry in sorted(lock["models"].items()):
        d = os.path.join(wdir, entry["dir"])
        if not os.path.isdir(d):
            problems.append(f"{hub_id}: directory {entry['dir']}/ is missing")
            continue
        have = hash_tree(d)
        for rel, want in sorted(entry["files"].items()):
            got = have.get(rel)
            if got is None:
                problems.append(f"{hub_id}: file {rel} is missing")
            elif got != want:
                problems.append(f"{hub_id}: file {rel} differs from the lock "
                                f"(sha256 {got['sha256'][:12]} != {want['sha256'][:12]})")
    return problems
