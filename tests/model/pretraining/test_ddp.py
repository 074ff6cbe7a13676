"""Two-process DDP on CPU (gloo) through the real launcher: ``torchrun ... -m model.pretrain``."""
from __future__ import annotations

import os
from pathlib import Path
import re
import subprocess
import sys

from tests._datasets import synthetic_dataset
from tests._pretrain import TINY_MODEL, read_log

from model.pretraining import checkpoint as ckpt
from model.pretrain import param_digest


def test_two_process_gloo_run_keeps_replicas_identical(tmp_path):
    root = tmp_path / "data"
    synthetic_dataset(root, n=12, size=(80, 64))
    out = tmp_path / "run"
    # 2 processes x 2 images x accumulation 2 = total batch 8; 12 images -> 6 per rank, 1 step/epoch
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "model.pretrain", "--config", "pretrain_demo", "--data", str(root),
           "--output-dir", str(out), "--batch-per-gpu", "2", "--total-batch", "8",
           "--max-steps", "3", "--num-workers", "0", "--epochs", "4",
           "--set", "train.log_every_steps=1", "--set", "train.panels_every_epochs=0"]
    for o in TINY_MODEL:
        cmd += ["--set", o]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                         cwd=str(Path(__file__).resolve().parents[3]))
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    assert "2 process(es), batch 2 x 2 x accum 2 = 8" in log
    digests = dict(re.findall(r"rank (\d): parameter sha256 ([0-9a-f]{64})", log))
    assert set(digests) == {"0", "1"}, log[-2000:]
    assert digests["0"] == digests["1"]
    # the checkpoint holds the replicated weights and one RNG state per rank
    ck = ckpt.load(str(out / "last.pt"))
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["global_step"] == 3
    assert not (ck["rng"][0]["torch"] == ck["rng"][1]["torch"]).all()  # ranks draw differently
    model = ckpt.build_from_checkpoint(ck)
    assert param_digest(model) == digests["0"]
    steps = read_log(out)
    assert sorted(steps) == [1, 2, 3]
    assert steps[1]["lr"] < steps[3]["lr"]  # warmup ran per iteration
