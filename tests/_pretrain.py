"""Helpers for the pretraining tests: a tiny run config over a small dataset root."""
from __future__ import annotations

import json

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
