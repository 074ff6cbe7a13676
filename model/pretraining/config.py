"""Pretraining configs: YAML files, dotted overrides, and the derived batch / lr numbers.

A config is a plain nested dict with the sections of ``DEFAULTS``. ``load_config`` reads a YAML
file (``model/configs/pretrain_*.yaml`` or any path), deep-merges it over ``DEFAULTS`` and applies
``--set a.b=value`` overrides (values parsed as YAML, so ``--set optim.lr=8e-4`` is a float and
``--set data.hflip=false`` a bool). Unknown keys are an error naming the key, so a typo never
silently trains with a default.

Derived numbers (``derive``):
- ``accum_steps = total_batch / (batch_per_gpu * world_size)``: the paper's batch of 2048 is reached
  by gradient accumulation when the GPUs cannot hold it; it must divide exactly.
- ``lr = base_lr * total_batch / 256`` (the linear scaling rule of MAE) unless ``optim.lr`` is set.
"""
from __future__ import annotations

import copy
import os
from typing import Any

DEFAULTS: "dict[str, Any]" = {
    "model": {
        "name": "c2fmae_vit_base",   # a name of model.network.c2fmae.build_model
        "overrides": {},             # C2FMAEConfig fields, e.g. {decoder_mode: parallel}
    },
    "data": {
        "root": None,                # dataset root (manifest.json + shards/)
        "imagenet_root": None,       # ImageNet folder for datasets that are not self-contained
        "split": "train",
        "val_split": None,           # split for the panels' fixed images (None: first train images)
        "img_size": 224,
        "mask_stride": 4,
        "max_instances": 32,
        "crop_scale": [0.2, 1.0],    # RandomResizedCrop scale, as MAE
        "hflip": True,
        "num_workers": 8,
        "pin_memory": True,
        "on_error": "raise",         # raise | skip (substitute the next sample, counted)
        "loader": "map",             # map (random access) | stream (row groups in order, for
                                     # object stores such as s3://; docs/PRETRAIN.md)
        "shard_window": 32,          # map: shuffle within windows of this many shards (needs
                                     # >= 2 x world shards); 0 = one global shuffle
    },
    "optim": {
        "epochs": 400,
        "warmup_epochs": 40,
        "total_batch": 2048,         # images per optimizer step over all GPUs and accumulation
        "batch_per_gpu": 256,        # images per forward pass on one GPU
        "base_lr": 1.0e-4,           # scaled by total_batch / 256
        "lr": None,                  # absolute lr; overrides the scaling rule when set
        "min_lr": 0.0,
        "weight_decay": 0.05,
        "betas": [0.9, 0.95],
        "clip_grad": None,           # max grad norm; None = off (as MAE)
    },
    "train": {
        "seed": 0,
        "amp": "auto",               # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | none
        "max_steps": None,           # stop after this many optimizer steps (schedule follows it)
        "save_every_epochs": 20,     # keep checkpoint-EEEE.pt every N epochs
        "save_every_steps": 0,       # > 0: checkpoint-stepSSSSSSS.pt every N steps instead (and
                                     # no epoch-end saves: for epochs of a few steps)
        "keep_checkpoints": 2,       # keep the last K periodic checkpoints (0 = all)
        "save_last_every_steps": 1000,  # refresh last.pt every N steps (and at each epoch end)
        "panels_every_epochs": 20,   # write reconstruction panels every N epochs (0 = never)
        "panels_every_steps": 0,     # > 0: panels every N steps instead of by epochs
        "panel_images": 6,
        "probe_every_epochs": 0,     # k-NN + linear probe on frozen RGB features (0 = never)
        "probe_per_class": 10,       # images per class for each probe set (val split when set,
                                     # else a disjoint holdout of the train split)
        "log_every_steps": 20,
        "progress_bar": True,
        "find_unused_parameters": False,
        "dist_backend": "auto",      # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    },
}


class ConfigError(ValueError):
    """A config value that cannot be used, named by its dotted key."""


def merge(base: dict, over: dict, prefix: str = "", opaque: "tuple[str, ...]" = ("overrides",)
          ) -> dict:
    """``over`` deep-merged into a copy of ``base``; unknown keys are errors naming the dotted
    key. Mappings under an ``opaque`` key (free-form kwargs) are replaced, not checked."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        key = f"{prefix}{k}"
        if k not in out:
            raise ConfigError(f"unknown config key {key!r}")
        if isinstance(out[k], dict) and k not in opaque:
            if not isinstance(v, dict):
                raise ConfigError(f"config key {key!r} must be a mapping, got {v!r}")
            out[k] = merge(out[k], v, key + ".", opaque)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_value(text: str) -> Any:
    """A command-line value parsed as YAML (numbers, bools, null, lists); plain text otherwise."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(cfg: dict, dotted: str, value: Any) -> None:
    """Set ``cfg[a][b] = value`` for ``dotted = "a.b"``; the key must exist (except below
    ``model.overrides``, which holds model-specific fields)."""
    parts = dotted.split(".")
    node = cfg
    for i, p in enumerate(parts[:-1]):
        if not isinstance(node, dict) or p not in node:
            raise ConfigError(f"unknown config key {'.'.join(parts[:i + 1])!r} in {dotted!r}")
        node = node[p]
        if parts[:i + 1] == ["model", "overrides"]:
            _set_free(node, parts[i + 1:], value)
            return
    if not isinstance(node, dict) or parts[-1] not in node:
        raise ConfigError(f"unknown config key {dotted!r}")
    node[parts[-1]] = value


def _set_free(node: dict, parts: "list[str]", value: Any) -> None:
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def apply_overrides(cfg: dict, overrides: "list[str] | None") -> dict:
    """Apply ``["optim.lr=1e-3", ...]`` to a copy of cfg."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        k, v = item.split("=", 1)
        set_dotted(cfg, k.strip(), parse_value(v))
    return cfg


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")


def shipped_configs(kind: str = "") -> "list[str]":
    """Names of the shipped configs (``model/configs/*.yaml``) whose name starts with ``kind``
    ("pretrain" / "finetune"; "" = all)."""
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR)
                  if f.endswith(".yaml") and f.startswith(kind))


def config_path(name_or_path: str, kind: str = "") -> str:
    """A config file: a path, or the name of a shipped config of this ``kind``
    (``pretrain_tiny``)."""
    if os.path.exists(name_or_path):
        return name_or_path
    shipped = shipped_configs(kind)
    name = name_or_path[:-5] if name_or_path.endswith(".yaml") else name_or_path
    if name in shipped:
        return os.path.join(CONFIG_DIR, name + ".yaml")
    what = f"a shipped {kind} config" if kind else "a shipped config"
    other = name in shipped_configs() and name not in shipped
    hint = f" ({name} is a config of model.{name.split('_')[0]})" if other else ""
    raise ConfigError(f"--config {name_or_path!r} is neither a file nor {what}{hint}; "
                      f"choices: {', '.join(shipped)}")


def merge_file(cfg: dict, name_or_path: str, opaque: "tuple[str, ...]" = ("overrides",),
               kind: str = "") -> dict:
    """``cfg`` with a YAML config (a path or a shipped name) merged in; errors name the file."""
    import yaml

    path = config_path(name_or_path, kind)
    with open(path) as f:
        try:
            loaded = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        return merge(cfg, loaded, opaque=opaque)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def load_config(name_or_path: "str | None" = None, overrides: "list[str] | None" = None,
                data: "dict | None" = None) -> dict:
    """DEFAULTS <- YAML file (or ``data``) <- dotted overrides, then checked."""
    cfg = copy.deepcopy(DEFAULTS)
    if name_or_path:
        cfg = merge_file(cfg, name_or_path, kind="pretrain")
    if data:
        cfg = merge(cfg, data)
    cfg = apply_overrides(cfg, overrides)
    check(cfg)
    return cfg


def check(cfg: dict) -> None:
    o, t, d = cfg["optim"], cfg["train"], cfg["data"]
    for key in ("epochs", "total_batch", "batch_per_gpu"):
        if not isinstance(o[key], int) or o[key] <= 0:
            raise ConfigError(f"optim.{key} must be a positive integer, got {o[key]!r}")
    if not 0 <= o["warmup_epochs"] <= o["epochs"]:
        raise ConfigError(f"optim.warmup_epochs {o['warmup_epochs']} outside 0..optim.epochs")
    for key in ("base_lr", "weight_decay", "min_lr"):
        if not isinstance(o[key], (int, float)) or o[key] < 0:
            raise ConfigError(f"optim.{key} must be a number >= 0, got {o[key]!r}")
    if len(o["betas"]) != 2 or not all(0 <= b < 1 for b in o["betas"]):
        raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {o['betas']!r}")
    if t["amp"] not in ("auto", "bf16", "fp16", "none"):
        raise ConfigError(f"train.amp {t['amp']!r} is not auto|bf16|fp16|none")
    if t["max_steps"] is not None and (not isinstance(t["max_steps"], int) or t["max_steps"] <= 0):
        raise ConfigError(f"train.max_steps must be a positive integer, got {t['max_steps']!r}")
    for key in ("save_every_epochs", "save_every_steps", "keep_checkpoints",
                "save_last_every_steps", "panels_every_epochs", "panels_every_steps",
                "probe_every_epochs"):
        v = t[key]
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise ConfigError(f"train.{key} must be an integer >= 0, got {v!r}")
    if not isinstance(t["log_every_steps"], int) or t["log_every_steps"] <= 0:
        raise ConfigError(f"train.log_every_steps must be a positive integer, got "
                          f"{t['log_every_steps']!r}")
    if d["loader"] not in ("map", "stream"):
        raise ConfigError(f"data.loader {d['loader']!r} is not map|stream")
    w = d["shard_window"]
    if not isinstance(w, int) or isinstance(w, bool) or w < 0:
        raise ConfigError(f"data.shard_window must be an integer >= 0, got {w!r}")
    if d["img_size"] % 16 or d["img_size"] % d["mask_stride"]:
        raise ConfigError(f"data.img_size {d['img_size']} must be a multiple of the patch size "
                          f"16 and of data.mask_stride {d['mask_stride']}")


def accum_steps(cfg: dict, world_size: int) -> int:
    """Micro-batches per optimizer step so that batch_per_gpu x world x accum = total_batch."""
    o = cfg["optim"]
    per_step = o["batch_per_gpu"] * world_size
    if o["total_batch"] % per_step:
        raise ConfigError(f"optim.total_batch {o['total_batch']} is not a multiple of "
                          f"optim.batch_per_gpu {o['batch_per_gpu']} x {world_size} process(es)"
                          f" = {per_step}")
    return o["total_batch"] // per_step


def scaled_lr(cfg: dict) -> float:
    """The peak lr: ``optim.lr`` if set, else base_lr x total_batch / 256 (linear scaling)."""
    o = cfg["optim"]
    if o["lr"] is not None:
        return float(o["lr"])
    return float(o["base_lr"]) * o["total_batch"] / 256


def derive(cfg: dict, world_size: int) -> dict:
    """The numbers a run actually uses, logged at start and stored in checkpoints."""
    return {"world_size": world_size, "accum_steps": accum_steps(cfg, world_size),
            "lr": scaled_lr(cfg), "total_batch": cfg["optim"]["total_batch"]}


def dump_yaml(cfg: dict) -> str:
    import yaml

    return yaml.safe_dump(cfg, sort_keys=False)
