"""The labeling plan: which images, cut into which shards, and its fingerprint.

The listing is ``labeling.listing.list_imagenet``, the rule ``c2fmae-data label`` uses too: every
image file ``<split>/<wnid>/<file>`` under the ImageNet root whose ``wnid`` is one of timm's 1000
ImageNet-1K classes (hidden and non-image files skipped and reported), as keys relative to the
root, sorted. ``--classes`` keeps only some wnids, then ``--limit`` keeps the first N keys of the
sorted listing (the walk stops there: no full listing of 1.28M files for a small subset).
Shard N holds keys ``[N * shard_size, (N + 1) * shard_size)`` of that list, so the same arguments
always give the same shards. Changing the folder contents, ``--classes``, ``--limit``,
``--shard-size``, ``--models`` or ``--precision`` changes the plan and its fingerprint; a resume
into an output written under another fingerprint is refused (see ``check_resumable``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from c2fmae_data.format.categories import imagenet_wnid_to_index, imagenet_wnids
from c2fmae_data.format.schema import FORMAT_VERSION
from c2fmae_data.format.manifest import write_json_atomic
from c2fmae_data.format.fs import join, open_fs
from c2fmae_data.format.shards import list_shards, parse_shard_name, shard_meta
from labeling.listing import Item, Listing, list_imagenet  # noqa: F401  (Item: re-export)

PLAN_VERSION = 1
STATE_DIR = "_pipeline"   # plan + per-shard ledger of a run, beside shards/ in the output root


class PlanError(ValueError):
    """Arguments that cannot make a plan, or a resume that would mix two plans."""


@dataclass
class Plan:
    split: str
    shard_size: int
    models: str
    precision: str
    items: "list[Item]"
    fingerprint: str = ""
    shards: "list[list[Item]]" = field(default_factory=list)
    notes: "list[str]" = field(default_factory=list)   # what the listing left out

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def describe(self) -> "dict[str, Any]":
        return {"plan_version": PLAN_VERSION, "fingerprint": self.fingerprint,
                "split": self.split, "images": len(self.items), "shard_size": self.shard_size,
                "num_shards": self.num_shards, "models": self.models,
                "precision": self.precision, "format_version": FORMAT_VERSION}


# ----------------------------------------------------------------------------- listing
def parse_classes(spec: "str | None") -> "list[str] | None":
    """``--classes``: comma-separated wnids and/or class indices (0..999); None keeps all."""
    if spec is None or not spec.strip():
        return None
    known = imagenet_wnid_to_index()
    wnids = imagenet_wnids()
    out = []
    for tok in (t.strip() for t in spec.split(",")):
        if not tok:
            continue
        if tok.isdigit():
            if int(tok) >= len(wnids):
                raise PlanError(f"--classes: class index {tok} is outside 0..{len(wnids) - 1}")
            out.append(wnids[int(tok)])
        elif tok in known:
            out.append(tok)
        else:
            raise PlanError(f"--classes: {tok!r} is neither an ImageNet-1K wnid nor an index")
    return sorted(set(out))


def _listing(root: str, split: str, classes: "Sequence[str] | None" = None,
             limit: "int | None" = None) -> Listing:
    """The shared listing of ``<root>/<split>/<wnid>/*``; a missing split folder is a PlanError."""
    try:
        return list_imagenet(root, split, classes, limit)
    except FileNotFoundError as e:
        raise PlanError(str(e)) from None


def list_images(root: str, split: str, classes: "Sequence[str] | None" = None,
                limit: "int | None" = None) -> "tuple[list[Item], list[str]]":
    """(sorted items, ignored folder names) of ``<root>/<split>/<wnid>/*`` (``_listing``)."""
    lst = _listing(root, split, classes, limit)
    return lst.items, [d.split("/", 1)[1] for d in lst.ignored_dirs]


def fingerprint(split: str, keys: Iterable[str], shard_size: int, models: str,
                precision: str) -> str:
    """sha256 over everything that decides what lands in which shard and how it is labeled."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": PLAN_VERSION, "split": split, "shard_size": shard_size,
                         "models": models, "precision": precision,
                         "format_version": FORMAT_VERSION}, sort_keys=True).encode())
    for k in keys:
        h.update(b"\n" + k.encode())
    return h.hexdigest()


def make_plan(root: str, split: str, *, shard_size: int, models: str, precision: str,
              classes: "Sequence[str] | None" = None, limit: "int | None" = None) -> Plan:
    if shard_size < 1:
        raise PlanError(f"--shard-size must be >= 1, got {shard_size}")
    if limit is not None and limit < 1:
        raise PlanError(f"--limit must be >= 1, got {limit}")
    listing = _listing(root, split, classes, limit)
    items = listing.items
    if not items:
        raise PlanError(f"{root}/{split}: no images of the selected ImageNet-1K classes found")
    plan = Plan(split, shard_size, models, precision, items, notes=listing.notes())
    plan.shards = [items[i:i + shard_size] for i in range(0, len(items), shard_size)]
    if plan.num_shards > 100000:
        raise PlanError(f"{plan.num_shards} shards exceed the 100000 a split can hold; "
                        f"raise --shard-size")
    plan.fingerprint = fingerprint(split, (it.key for it in items), shard_size, models, precision)
    return plan


def batches(shard: "Sequence[Item]", batch_size: int) -> "list[list[Item]]":
    """The fixed batches of one shard: the same cut on every run, so retries stay bit-identical."""
    return [list(shard[i:i + batch_size]) for i in range(0, len(shard), batch_size)]


# ----------------------------------------------------------------------------- resume
def plan_path(out: str, split: str) -> str:
    return join(open_fs(out)[1], STATE_DIR, f"plan-{split}.json")


def check_resumable(out: str, plan: Plan) -> "list[int]":
    """Indices of this plan's shards that are already finished under ``out``. Raises PlanError
    when ``out`` holds a plan or a shard of this split made with different arguments."""
    fs, _ = open_fs(out)
    ppath = plan_path(out, plan.split)
    hint = ("rerun with the original arguments to resume, or write to a new --out "
            "(or delete the old shards of this split) to start over")
    if fs.exists(ppath):
        with fs.open(ppath, "r") as f:
            old = json.load(f)
        if old.get("fingerprint") != plan.fingerprint:
            diff = {k: (old.get(k), v) for k, v in plan.describe().items()
                    if k != "fingerprint" and old.get(k) != v}
            raise PlanError(
                f"{out} was started with a different plan for split {plan.split!r} "
                f"(fingerprint {str(old.get('fingerprint'))[:12]} != {plan.fingerprint[:12]}; "
                f"differences old->new: {diff or 'the image listing itself'}); {hint}")
    done = []
    for rel in list_shards(out, plan.split):
        _, idx = parse_shard_name(rel)
        meta = shard_meta(fs, join(open_fs(out)[1], rel)).get("plan", {})
        if meta.get("fingerprint") != plan.fingerprint or idx >= plan.num_shards:
            raise PlanError(f"{out}/{rel} was written by a different plan "
                            f"(fingerprint {str(meta.get('fingerprint'))[:12]}, this run "
                            f"{plan.fingerprint[:12]}); {hint}")
        done.append(idx)
    return sorted(done)


def save_plan(out: str, plan: Plan, args: "dict[str, Any]") -> None:
    fs, base = open_fs(out)
    fs.makedirs(join(base, STATE_DIR), exist_ok=True)
    write_json_atomic(fs, plan_path(out, plan.split), {**plan.describe(), "arguments": args})
