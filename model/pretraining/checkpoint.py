"""Training checkpoints: atomic writes, ``weights_only=True`` reads, RNG state capture.

A checkpoint is one ``torch.save`` dict of tensors and plain Python values only (so it loads with
``torch.load(..., weights_only=True)``, which cannot run code from the file):

- ``model``: the C2FMAE state dict; ``model_name`` / ``model_config``: how to rebuild it;
- ``optimizer``, ``scaler``: their state dicts; ``lr``: the lr of the last step;
- ``epoch``, ``step_in_epoch`` (micro-batches consumed in that epoch), ``global_step``
  (optimizer steps; the masking schedule's position is ``global_step / total_steps``);
- ``rng``: one entry per rank (python, numpy, torch, cuda generator states);
- ``config`` / ``derived``: the run's full config and its derived batch / lr numbers.

Writes go to a temporary file beside the target, are fsynced, then renamed over it, so a crash
never leaves a truncated ``last.pt``; the previous file stays until the new one is complete.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import uuid
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = "c2fmae-pretrain-checkpoint"
CHECKPOINT_VERSION = 1
LAST = "last.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the run."""


def epoch_name(epoch: int) -> str:
    return f"checkpoint-{epoch:04d}.pt"


def step_name(step: int) -> str:
    return f"checkpoint-step{step:07d}.pt"


# periodic checkpoints of each kind, by the number in their name
_PERIODIC = {"epoch": re.compile(r"^checkpoint-(\d+)\.pt$"),
             "step": re.compile(r"^checkpoint-step(\d+)\.pt$")}


def periodic_checkpoints(output_dir: str, kind: str) -> "list[str]":
    """The ``kind`` ("epoch" / "step") checkpoints of an output dir, oldest (lowest number)
    first."""
    pat = _PERIODIC[kind]
    found = []
    for name in os.listdir(output_dir):
        m = pat.match(name)
        if m:
            found.append((int(m.group(1)), name))
    return [os.path.join(output_dir, n) for _, n in sorted(found)]


def prune_periodic(output_dir: str, kind: str, keep: int, protect: str) -> "list[str]":
    """Delete all but the ``keep`` highest-numbered ``kind`` checkpoints (never ``protect``, the
    one just written); ``keep`` <= 0 keeps all. Returns the removed paths."""
    if keep <= 0:
        return []
    old = [p for p in periodic_checkpoints(output_dir, kind)
           if os.path.abspath(p) != os.path.abspath(protect)]
    removed = old[:max(0, len(old) - (keep - 1))]
    for p in removed:
        os.remove(p)
    return removed


# what save_atomic / link_or_copy leave behind when killed between open() and the rename
_TEMP = re.compile(r"^\..+\.tmp-[0-9a-f]{12}$")


def clean_stale_temps(output_dir: str) -> "list[str]":
    """Remove the temporaries of writes that were killed (SIGKILL, power loss) before their
    rename; call at the start of a run, when no writer of this output dir is alive."""
    if not os.path.isdir(output_dir):
        return []
    removed = []
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if _TEMP.match(name) and os.path.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


def link_or_copy(src: str, dst: str) -> None:
    """``dst`` with the content of ``src``, atomically: a hard link (no second write) where the
    filesystem allows, else a copy. ``src`` may be replaced later (``os.replace`` gives it a new
    inode); ``dst`` keeps this content."""
    d = os.path.dirname(os.path.abspath(dst))
    tmp = os.path.join(d, f".{os.path.basename(dst)}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_atomic(obj: "dict[str, Any]", path: str) -> None:
    """``torch.save`` to ``path`` through a temporary file and a rename."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def load(path: str) -> "dict[str, Any]":
    """Read a checkpoint with ``weights_only=True`` and check its format."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, foreign pickle, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} file")
    if int(ck.get("version", 0)) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has version {ck.get('version')}, this code reads "
                              f"<= {CHECKPOINT_VERSION}")
    return ck


def find_resume(output_dir: str) -> "str | None":
    """``last.pt`` of an output dir when there is one (the automatic resume point)."""
    p = os.path.join(output_dir, LAST)
    return p if os.path.exists(p) else None


# ----------------------------------------------------------------------------- RNG states
def rng_state() -> "dict[str, Any]":
    """This process's generator states, as weights_only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    st = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state()  # the current device's generator
    return st


def set_rng_state(st: "dict[str, Any]") -> None:
    v, state, g = st["python"]
    random.setstate((v, tuple(state), g))
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    torch.set_rng_state(st["torch"])
    if st.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- model state
def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def model_config_dict(model: torch.nn.Module) -> "dict[str, Any] | None":
    cfg = getattr(unwrap(model), "config", None)
    return cfg.to_dict() if hasattr(cfg, "to_dict") else None


def build_from_checkpoint(ck: "dict[str, Any]") -> torch.nn.Module:
    """Rebuild the model a checkpoint was saved from and load its weights (strict)."""
    from model.network.c2fmae import C2FMAE, C2FMAEConfig, build_model

    if ck.get("model_config") is not None:
        model = C2FMAE(C2FMAEConfig.from_dict(ck["model_config"]))
    else:
        cfg = ck.get("config", {}).get("model", {})
        model = build_model(ck.get("model_name") or cfg["name"], **cfg.get("overrides", {}))
    model.load_state_dict(ck["model"], strict=True)
    return model
