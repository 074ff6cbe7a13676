"""Kill-and-resume gives the losses of an uninterrupted run; a NaN loss stops the run and keeps the
last good checkpoint."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from tests._datasets import synthetic_dataset
from tests._pretrain import read_log, tiny_config

from model.pretraining import checkpoint as ckpt
from model.pretrain import NonFiniteLossError, train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain-data")
    synthetic_dataset(root, n=12, size=(80, 64))
    return str(root)


class _Killed(Exception):
    pass


def test_kill_and_resume_equals_uninterrupted(data_root, tmp_path):
    # 12 images, 2 per pass, accumulation 2: 3 optimizer steps per epoch, 6 steps = 2 epochs
    cfg = tiny_config(data_root, steps=6, batch=2, total=4)
    train(cfg, str(tmp_path / "full"), resume=None)
    full = read_log(tmp_path / "full")
    assert sorted(full) == list(range(1, 7))

    def kill_at(step):
        def hook(rec):
            if rec["step"] == step:  # dies after step 5 ran, before its checkpoint was written
                raise _Killed
        return hook

    out = str(tmp_path / "killed")
    with pytest.raises(_Killed):
        train(cfg, out, resume=None, on_step=kill_at(5))
    assert ckpt.load(f"{out}/last.pt")["global_step"] == 4  # mid-epoch (epoch 1, step 1 of 3)
    assert ckpt.load(f"{out}/last.pt")["step_in_epoch"] == 2
    # what a SIGKILL inside save_atomic leaves (between open() and the rename), and a
    # record for step 5 that the resumed run redoes
    stale = tmp_path / "killed" / ".last.pt.tmp-0123456789ab"
    stale.write_bytes(b"half a checkpoint")
    assert [json.loads(x)["step"] for x in open(f"{out}/log.jsonl")] == [1, 2, 3, 4, 5]
    train(cfg, out, resume="auto")
    assert not stale.exists()
    # one record per step: step 5 of the killed run was dropped, the resumed run's kept
    assert [json.loads(x)["step"] for x in open(f"{out}/log.jsonl")] == [1, 2, 3, 4, 5, 6]
    resumed = read_log(out)
    assert sorted(resumed) == list(range(1, 7))
    for step in range(1, 7):
        a, b = full[step], resumed[step]
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6), step
        for task in a["losses"]:
            assert b["losses"][task] == pytest.approx(a["losses"][task], abs=1e-6), (step, task)
        assert b["lr"] == a["lr"] and b["progress"] == a["progress"]
    # and the final weights agree
    wa = ckpt.load(str(tmp_path / "full" / "last.pt"))["model"]
    wb = ckpt.load(f"{out}/last.pt")["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)


class _NaNAfter(torch.utils.data.Dataset):
    """The wrapped dataset, with NaN pixels everywhere."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        s = dict(self.ds[i])
        s["rgb"] = torch.full_like(s["rgb"], float("nan"))
        return s


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_root, tmp_path):
    from model.pretrain import build_dataset

    cfg = tiny_config(data_root, steps=4, batch=2, total=2)
    out = str(tmp_path / "run")
    good_cfg = tiny_config(data_root, steps=2, batch=2, total=2)
    train(good_cfg, out, resume=None)
    last = f"{out}/last.pt"
    digest = hashlib.sha256(open(last, "rb").read()).hexdigest()
    bad = _NaNAfter(build_dataset(cfg, train=True))
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at step 3 .*last\.pt"):
        train(cfg, out, resume="auto", dataset=bad)
    assert hashlib.sha256(open(last, "rb").read()).hexdigest() == digest
    assert ckpt.load(last)["global_step"] == 2
    assert sorted(read_log(out)) == [1, 2]  # the bad step was never logged as done


def test_resume_with_other_accumulation_keeps_the_epoch_position(data_root, tmp_path):
    """A checkpoint counts micro-batches of its own accumulation; resuming with another one (as
    with another number of processes) must continue after the same optimizer step of the epoch."""
    out = str(tmp_path / "run")
    with pytest.raises(_Killed):
        def hook(rec):
            if rec["step"] == 5:
                raise _Killed
        train(tiny_config(data_root, steps=6, batch=2, total=4), out, resume=None, on_step=hook)
    saved = ckpt.load(f"{out}/last.pt")
    assert (saved["global_step"], saved["epoch"], saved["step_in_epoch"]) == (4, 1, 2)  # accum 2
    train(tiny_config(data_root, steps=6, batch=4, total=4), out, resume="auto")      # accum 1
    end = ckpt.load(f"{out}/last.pt")
    # steps 5 and 6 are epoch 1's 2nd and 3rd optimizer steps: the epoch ends exactly at step 6
    assert (end["global_step"], end["epoch"], end["step_in_epoch"]) == (6, 2, 0)
    assert sorted(read_log(out)) == list(range(1, 7))
