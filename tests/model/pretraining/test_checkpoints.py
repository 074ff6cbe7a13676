"""Which checkpoints and panels a run leaves: the last K periodic checkpoints, and saving /
panels by optimizer steps for runs whose epochs are a few steps."""
from __future__ import annotations

import os

import pytest
from tests._datasets import synthetic_dataset
from tests._pretrain import tiny_config

from model.pretraining import checkpoint as ckpt
from model.pretraining import hooks as pretrain_hooks
from model.pretraining.config import ConfigError, load_config
from model.pretrain import train


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt-data")
    synthetic_dataset(root, n=12, size=(80, 64))
    return str(root)


def _checkpoints(out):
    return sorted(n for n in os.listdir(out) if n.startswith("checkpoint-"))


def _count_saves(monkeypatch):
    names = []
    real = pretrain_hooks.ckpt.save_atomic

    def counting(obj, path):
        names.append(os.path.basename(path))
        real(obj, path)
    monkeypatch.setattr(pretrain_hooks.ckpt, "save_atomic", counting)
    return names


def test_keeps_only_the_last_k_epoch_checkpoints(data_root, tmp_path, monkeypatch):
    # 12 images, batch 4 = 3 steps per epoch; 12 steps = 4 epochs, a checkpoint every epoch
    saves = _count_saves(monkeypatch)
    out = str(tmp_path / "run")
    cfg = tiny_config(data_root, "train.save_every_epochs=1", "train.keep_checkpoints=2",
                      "train.save_last_every_steps=0", steps=12, batch=4, total=4)
    train(cfg, out, resume=None)
    assert _checkpoints(out) == ["checkpoint-0003.pt", "checkpoint-0004.pt"]
    assert [ckpt.load(f"{out}/{n}")["epoch"] for n in _checkpoints(out)] == [3, 4]
    assert ckpt.load(f"{out}/checkpoint-0003.pt")["global_step"] == 9
    # a periodic checkpoint is a link to the last.pt of its step, not a second write
    assert saves == ["last.pt"] * 4


def test_keep_checkpoints_zero_keeps_all(data_root, tmp_path):
    out = str(tmp_path / "run")
    cfg = tiny_config(data_root, "train.save_every_epochs=1", "train.keep_checkpoints=0",
                      "train.save_last_every_steps=0", steps=9, batch=4, total=4)
    train(cfg, out, resume=None)
    assert _checkpoints(out) == [f"checkpoint-000{e}.pt" for e in (1, 2, 3)]


def test_step_based_saving_and_panels(data_root, tmp_path, monkeypatch):
    """save_every_steps / panels_every_steps replace the epoch rules: no save at each epoch end."""
    saves = _count_saves(monkeypatch)
    out = str(tmp_path / "run")
    # 3 steps per epoch, 7 steps; checkpoints at steps 2, 4, 6 and the end (7); panels 3, 6, 7
    cfg = tiny_config(data_root, "train.save_every_steps=2", "train.keep_checkpoints=2",
                      "train.save_last_every_steps=0", "train.save_every_epochs=1",
                      "train.panels_every_steps=3", "train.panels_every_epochs=1",
                      "train.panel_images=1", steps=7, batch=4, total=4)
    train(cfg, out, resume=None)
    assert saves == ["last.pt"] * 4      # steps 2, 4, 6, 7; not at the epoch ends 3 and 6
    assert _checkpoints(out) == ["checkpoint-step0000006.pt", "checkpoint-step0000007.pt"]
    six = ckpt.load(f"{out}/checkpoint-step0000006.pt")   # kept its content when last.pt moved on
    # step 6 ends epoch 1: saved as "epoch 2, nothing consumed yet", the exact resume point
    assert (six["global_step"], six["epoch"], six["step_in_epoch"]) == (6, 2, 0)
    assert ckpt.load(f"{out}/last.pt")["global_step"] == 7
    fig4 = sorted(n for n in os.listdir(f"{out}/panels") if n.startswith("fig4"))
    assert fig4 == ["fig4_epoch0001-step3.png", "fig4_epoch0002-step6.png",
                    "fig4_epoch0002-step7.png"]


def test_last_pt_between_step_checkpoints(data_root, tmp_path, monkeypatch):
    saves = _count_saves(monkeypatch)
    out = str(tmp_path / "run")
    cfg = tiny_config(data_root, "train.save_every_steps=4", "train.save_last_every_steps=1",
                      steps=5, batch=4, total=4)
    train(cfg, out, resume=None)
    assert saves == ["last.pt"] * 5      # every step, once each (step 4 also kept, linked)
    assert _checkpoints(out) == ["checkpoint-step0000004.pt", "checkpoint-step0000005.pt"]


@pytest.mark.parametrize("item", ["train.keep_checkpoints=-1", "train.save_every_steps=1.5",
                                  "train.panels_every_steps=x"])
def test_bad_step_settings_name_the_key(item):
    key = item.split("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("pretrain_tiny", [item])
