"""Test-only fault hooks of the Ray stages, read from the DRIVER's environment and handed to the
workers explicitly (a worker's own environment is its raylet's, not the driver's). Nothing else
reads these variables; never set them in a real run.

* crash: ``C2FMAE_PIPELINE_CRASH_KEY=<key>`` + ``C2FMAE_PIPELINE_CRASH_FLAG=<path>``: a label
  worker that receives a batch holding ``<key>`` appends a line to ``<path>`` and kills its own
  process (``os._exit``) while ``<path>`` has fewer than ``C2FMAE_PIPELINE_CRASH_TIMES`` lines
  (default 1: once; a large value makes ``<key>`` a poison image).
* hold: ``C2FMAE_PIPELINE_HOLD_KEY=<key>`` + ``C2FMAE_PIPELINE_HOLD_FLAG=<path>``: the first
  label worker that receives ``<key>`` writes ``node <node id> pid <pid>`` to ``<path>`` and
  waits (at most 300 s) until ``<path>.release`` exists, so a test can remove that worker's node,
  or add a node, while the batch is known to be in flight there. Later receipts do not wait.
* slow writer: ``C2FMAE_PIPELINE_WRITE_DELAY_S=<seconds>``: each shard writer, before it fetches
  its records, holds a lock file under ``<out>/_pipeline/`` for that long, so writes queue up one
  after another like uploads to a store of fixed bandwidth (the bounded-memory check).
"""
from __future__ import annotations

import fcntl
import os
import time
from typing import Any, Iterable

CRASH_KEY_ENV = "C2FMAE_PIPELINE_CRASH_KEY"
CRASH_FLAG_ENV = "C2FMAE_PIPELINE_CRASH_FLAG"
CRASH_TIMES_ENV = "C2FMAE_PIPELINE_CRASH_TIMES"
HOLD_KEY_ENV = "C2FMAE_PIPELINE_HOLD_KEY"
HOLD_FLAG_ENV = "C2FMAE_PIPELINE_HOLD_FLAG"
WRITE_DELAY_ENV = "C2FMAE_PIPELINE_WRITE_DELAY_S"
HOLD_MAX_S = 300.0


def hooks_from_env() -> "dict[str, Any]":
    """The hooks set in this (the driver's) environment; empty in a real run."""
    env = os.environ
    hooks: "dict[str, Any]" = {}
    if env.get(CRASH_KEY_ENV) and env.get(CRASH_FLAG_ENV):
        hooks["crash"] = (env[CRASH_KEY_ENV], env[CRASH_FLAG_ENV],
                          int(env.get(CRASH_TIMES_ENV, "1")))
    if env.get(HOLD_KEY_ENV) and env.get(HOLD_FLAG_ENV):
        hooks["hold"] = (env[HOLD_KEY_ENV], env[HOLD_FLAG_ENV])
    if env.get(WRITE_DELAY_ENV):
        hooks["write_delay_s"] = float(env[WRITE_DELAY_ENV])
    return hooks


def _lines(path: str) -> int:
    return open(path).read().count("\n") if os.path.exists(path) else 0


def maybe_crash(hooks: "dict[str, Any]", keys: "set[str]") -> None:
    if "crash" not in hooks:
        return
    key, flag, times = hooks["crash"]
    if key in keys and _lines(flag) < times:
        with open(flag, "a") as f:
            f.write(f"worker pid {os.getpid()} crashed on {key} ({len(keys)} keys)\n")
        os._exit(17)


def maybe_hold(hooks: "dict[str, Any]", keys: "set[str]", node_id: str) -> None:
    if "hold" not in hooks:
        return
    key, flag = hooks["hold"]
    if key not in keys or _lines(flag):
        return
    with open(flag, "a") as f:
        f.write(f"node {node_id} pid {os.getpid()}\n")
    deadline = time.monotonic() + HOLD_MAX_S
    while not os.path.exists(flag + ".release") and time.monotonic() < deadline:
        time.sleep(0.05)


def keys_of(prepared: "Iterable[Any]") -> "set[str]":
    """Keys of a prepared batch (``Prepared`` objects and failed-record dicts)."""
    return {p["key"] if isinstance(p, dict) else p.key for p in prepared}


def slow_store(out: str, delay_s: float) -> None:
    """The slow-writer hook: one write at a time per output (a local --out), ``delay_s`` each."""
    lock_dir = os.path.join(out.split("file://", 1)[-1], "_pipeline")
    os.makedirs(lock_dir, exist_ok=True)
    with open(os.path.join(lock_dir, "slow-store.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        time.sleep(delay_s)
