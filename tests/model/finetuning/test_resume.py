"""Fine-tuning resume, RGB (model.finetune) and multi-granular (model.multigranular_ft): a run
killed inside an epoch and rerun gives the epochs, losses, step counter and weights of the
uninterrupted run (RandAugment, Mixup/CutMix and the shuffle are seeded from (seed, epoch))."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests._pretrain import pretrained_checkpoint
from PIL import Image

from c2fmae_data.format.categories import imagenet_wnids
from model import finetune
from model.finetuning import engine
from model.multigranular_ft import main as mg_main


class _Killed(Exception):
    pass


class _DiesAfter:
    """A loader that dies after ``n`` batches, as a kill inside the epoch."""

    def __init__(self, loader, n):
        self.loader, self.n = loader, n

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for i, b in enumerate(self.loader):
            if i == self.n:
                raise _Killed
            yield b


def _kill_in_epoch(monkeypatch, epoch):
    real = engine.train_one_epoch

    def run(model, loader, optimizer, criterion, cfg, ep, *a, **k):
        if ep == epoch:
            loader = _DiesAfter(loader, 1)  # one optimizer step of the epoch runs, then death
        return real(model, loader, optimizer, criterion, cfg, ep, *a, **k)
    monkeypatch.setattr(engine, "train_one_epoch", run)


def _epochs(out):
    return [json.loads(x) for x in open(out / "log.jsonl")]


def _assert_same_run(full, out, final_steps):
    a, b = _epochs(full), _epochs(out)
    assert [r["epoch"] for r in b] == [r["epoch"] for r in a]   # one record per epoch
    for ra, rb in zip(a, b):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], abs=1e-6), rb["epoch"]
        assert rb["steps"] == ra["steps"] and rb["lr"] == ra["lr"]
    assert b[-1]["steps"] == final_steps
    wa = torch.load(full / "checkpoint.pth", weights_only=True)
    wb = torch.load(out / "checkpoint.pth", weights_only=True)
    assert wb["steps"] == final_steps
    for k in wa["model"]:
        torch.testing.assert_close(wb["model"][k], wa["model"][k], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """train/<wnid>/*.png: 16 random 72x64 images over 4 ImageNet classes."""
    root = tmp_path_factory.mktemp("inet")
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(imagenet_wnids()[:4]):
        (root / "train" / wnid).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (64, 72, 3), dtype=np.uint8)).save(
                root / "train" / wnid / f"{i}.png")
    return root


def test_rgb_finetune_resumes_mid_epoch_exactly(image_folder, tmp_path, monkeypatch):
    # 16 images, batch 8: 2 steps per epoch, 3 epochs; RandAugment, Mixup/CutMix, random erasing
    args = ["--config", "finetune_tiny_cpu", "--imagenet-root", str(image_folder),
            "--set", "data.val_split=train", "--set", "data.limit_val=8",
            "--set", "optim.epochs=3", "--set", "train.log_every_steps=0"]
    full = tmp_path / "full"
    finetune.main(args + ["--output-dir", str(full)])
    assert [r["steps"] for r in _epochs(full)] == [2, 4, 6]

    out = tmp_path / "killed"
    _kill_in_epoch(monkeypatch, 1)
    with pytest.raises(_Killed):
        finetune.main(args + ["--output-dir", str(out)])
    monkeypatch.undo()
    saved = torch.load(out / "checkpoint.pth", weights_only=True)
    assert (saved["epoch"], saved["steps"]) == (0, 2)
    stale = out / ".checkpoint.pth.tmp-0123456789ab"   # a kill inside save_atomic
    stale.write_bytes(b"partial")
    stats = finetune.main(args + ["--output-dir", str(out)])   # the same command again
    assert not stale.exists()
    assert stats["epoch"] == 2 and stats["steps"] == 6
    _assert_same_run(full, out, 6)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(dataset root, last.pt) of a 1-step pretraining run of the 64-px test C2FMAE."""
    return pretrained_checkpoint(tmp_path_factory)


def test_multigranular_finetune_resumes_mid_epoch_exactly(pretrained, tmp_path, monkeypatch):
    root, last = pretrained
    # 8 samples, batch 4: 2 steps per epoch, 3 epochs; consistent CutMix on every batch
    args = ["--config", "finetune_tiny_cpu", "--data", root, "--pretrained", last,
            "--set", "data.val_split=train", "--set", "optim.batch_per_gpu=4",
            "--set", "optim.total_batch=4", "--set", "data.limit_train=8",
            "--set", "data.limit_val=4", "--set", "optim.epochs=3",
            "--set", "train.log_every_steps=0"]
    full = tmp_path / "full"
    mg_main(args + ["--output-dir", str(full)])
    out = tmp_path / "killed"
    _kill_in_epoch(monkeypatch, 1)
    with pytest.raises(_Killed):
        mg_main(args + ["--output-dir", str(out)])
    monkeypatch.undo()
    assert torch.load(out / "checkpoint.pth", weights_only=True)["epoch"] == 0
    stats = mg_main(args + ["--output-dir", str(out)])
    assert stats["epoch"] == 2 and stats["steps"] == 6
    _assert_same_run(full, out, 6)


def test_finished_run_is_not_trained_again(image_folder, tmp_path):
    args = ["--config", "finetune_tiny_cpu", "--imagenet-root", str(image_folder),
            "--set", "data.val_split=train", "--set", "data.limit_val=8",
            "--output-dir", str(tmp_path / "run"), "--set", "train.log_every_steps=0"]
    finetune.main(args)
    before = (tmp_path / "run" / "checkpoint.pth").read_bytes()
    assert finetune.main(args) == {}          # epoch 0 of 1 is done: nothing to run
    assert (tmp_path / "run" / "checkpoint.pth").read_bytes() == before
    assert len(_epochs(tmp_path / "run")) == 1
