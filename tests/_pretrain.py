"""Helpers for the pretraining tests: a tiny run config over a small dataset root, a finished
1-step run (the fine-tuning tests start from its checkpoint), and a run killed by SIGKILL
mid-training."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from model.pretraining.config import load_config

# the test-size C2FMAE at 64 px: 4x4 patches per granularity, 16x16 label maps
TINY_MODEL = ["model.name=c2fmae_vit_test", "model.overrides.img_size=64",
              "model.overrides.num_visible=12", "data.img_size=64"]


def tiny_config(root, *extra: str, steps: int = 4, batch: int = 2, total: int = 4):
    """pretrain_demo with the 64-px test model, no workers, a log line and last.pt every step."""
    return load_config("pretrain_demo", TINY_MODEL + [
        f"data.root={root}", "data.num_workers=0", f"optim.batch_per_gpu={batch}",
        f"optim.total_batch={total}", "optim.epochs=4", "optim.warmup_epochs=1",
        f"train.max_steps={steps}", "train.log_every_steps=1", "train.save_last_every_steps=1",
        "train.panels_every_epochs=0", "train.progress_bar=false", *extra])


def pretrained_checkpoint(tmp_path_factory) -> "tuple[str, str]":
    """(dataset root, last.pt) of a 1-step pretraining run of the 64-px test C2FMAE over 8
    synthetic images."""
    from model.pretrain import train
    from model.pretraining import checkpoint as ckpt
    from tests._datasets import synthetic_dataset

    root = tmp_path_factory.mktemp("mg-data")
    synthetic_dataset(root, n=8, size=(80, 64))
    out = tmp_path_factory.mktemp("pre")
    train(tiny_config(str(root), steps=1, batch=2, total=2), str(out), resume=None)
    return str(root), str(out / ckpt.LAST)


def config_file(cfg: dict, tmp_path) -> str:
    """``cfg`` written as tmp_path/run.yaml, for a run in a subprocess; returns its path."""
    from model.pretraining.config import dump_yaml

    path = str(tmp_path / "run.yaml")
    with open(path, "w") as f:
        f.write(dump_yaml(cfg))
    return path


def read_probes(out_dir) -> "list[dict]":
    with open(f"{out_dir}/log.jsonl") as f:
        return [r for r in map(json.loads, f) if "probe" in r]


def read_log(out_dir) -> "dict[int, dict]":
    """step -> record of log.jsonl; a step logged twice (before a kill, after the resume) keeps
    the later record."""
    recs = {}
    with open(f"{out_dir}/log.jsonl") as f:
        for line in f:
            r = json.loads(line)
            if "probe" not in r:   # probe results are lines of their own
                recs[r["step"]] = r
    return recs


# the command: train from a config; dies by SIGKILL after step KILL_AT once (a marker file
# makes the rerun of the same command go through)
_CMD = r"""
import os, signal, sys
from model.pretraining.config import load_config
from model.pretrain import train
cfg = load_config(sys.argv[1])
kill_at, marker = int(sys.argv[3]), sys.argv[2] + ".killed"
def hook(rec):
    if rec["step"] == kill_at and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
train(cfg, sys.argv[2], resume="auto", on_step=hook)
"""


def run_until_killed(cfg_path, out, kill_at):
    """Train from ``cfg_path`` into ``out`` in a child process that SIGKILLs itself after step
    ``kill_at`` the first time (a marker file lets the rerun of the same command go through)."""
    env = dict(os.environ, PYTHONPATH=os.getcwd(), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", _CMD, cfg_path, out, str(kill_at)], env=env,
                          capture_output=True, text=True, timeout=120)
