"""Pretraining configs, the lr / accumulation rules, parameter groups, schedule, checkpoints."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from model.pretraining import checkpoint as ckpt
from model.pretraining.config import ConfigError, accum_steps, derive, load_config, scaled_lr
from model.pretraining.optim import build_optimizer, lr_at, param_groups
from model.pretrain import parse_args

SHIPPED = ("pretrain_vit_base_400ep", "pretrain_vit_base_1600ep", "pretrain_vit_small",
           "pretrain_tiny", "pretrain_demo")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_parse(name):
    cfg = load_config(name)
    assert cfg["model"]["name"].startswith("c2fmae_vit_")
    assert cfg["optim"]["betas"] == [0.9, 0.95]
    assert cfg["optim"]["weight_decay"] == 0.05
    assert derive(cfg, 1)["accum_steps"] >= 1


@pytest.mark.parametrize("name,epochs", [("pretrain_vit_base_400ep", 400),
                                         ("pretrain_vit_base_1600ep", 1600)])
def test_paper_recipe_and_lr_scaling_rule(name, epochs):
    cfg = load_config(name)
    o = cfg["optim"]
    assert (o["epochs"], o["warmup_epochs"], o["total_batch"]) == (epochs, 40, 2048)
    assert cfg["model"]["name"] == "c2fmae_vit_base"
    assert scaled_lr(cfg) == pytest.approx(1e-4 * 2048 / 256) == pytest.approx(8e-4)
    # 2048 = per-GPU batch x GPUs x accumulation, whatever the cluster
    assert accum_steps(cfg, 8) == 1
    assert accum_steps(load_config(name, ["optim.batch_per_gpu=64"]), 8) == 4
    assert accum_steps(load_config(name, ["optim.batch_per_gpu=128"]), 2) == 8
    with pytest.raises(ConfigError, match="total_batch 2048 is not a multiple"):
        accum_steps(cfg, 3)


def test_overrides_and_explicit_lr():
    cfg = load_config("pretrain_vit_base_400ep", ["optim.total_batch=4096", "data.hflip=false",
                                                  "model.overrides.decoder_mode=parallel"])
    assert scaled_lr(cfg) == pytest.approx(1.6e-3)
    assert cfg["data"]["hflip"] is False
    assert cfg["model"]["overrides"] == {"decoder_mode": "parallel"}
    assert scaled_lr(load_config("pretrain_vit_base_400ep", ["optim.lr=3e-4"])) == 3e-4
    with pytest.raises(ConfigError, match="optim.lrr"):
        load_config("pretrain_tiny", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="warmup_epochs"):
        load_config("pretrain_tiny", ["optim.warmup_epochs=99"])
    with pytest.raises(ConfigError, match="nope"):
        load_config("nope")


def test_cli_flags_become_config_values(tmp_path):
    args = parse_args(["--config", "pretrain_vit_small", "--data", str(tmp_path),
                       "--output-dir", str(tmp_path / "o"), "--max-steps", "7", "--lr", "2e-4",
                       "--batch-per-gpu", "32", "--set", "train.panels_every_epochs=0"])
    cfg = load_config(args.config, args.overrides)
    assert cfg["train"]["max_steps"] == 7 and cfg["optim"]["lr"] == 2e-4
    assert cfg["optim"]["batch_per_gpu"] == 32 and cfg["train"]["panels_every_epochs"] == 0
    assert cfg["data"]["root"] == str(tmp_path)


def test_warmup_then_cosine_per_iteration():
    lrs = [lr_at(s, 100, 10, 1.0, 0.1) for s in range(101)]
    assert lrs[0] == 0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11]))       # warmup rises
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))         # cosine falls
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5)                # half-way: midpoint
    assert lrs[100] == pytest.approx(0.1)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.granularity_embed = nn.Parameter(torch.zeros(3, 4))
        self.emb = nn.Embedding(5, 4)
        self.frozen = nn.Parameter(torch.zeros(2, 2), requires_grad=False)


def test_param_groups_exclude_norms_biases_embeddings_tokens():
    decay, no_decay = param_groups(_Toy(), 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert sorted(decay["names"]) == ["emb.weight", "fc.weight"]
    assert sorted(no_decay["names"]) == ["fc.bias", "granularity_embed", "mask_token",
                                         "norm.bias", "norm.weight", "pos_embed"]
    opt = build_optimizer(_Toy(), 1e-3, 0.05, (0.9, 0.95))
    assert opt.defaults["betas"] == (0.9, 0.95)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


def test_param_groups_of_the_real_model():
    from model.network.c2fmae import build_model

    m = build_model("c2fmae_vit_test")
    decay, no_decay = param_groups(m, 0.05)
    for n in no_decay["names"]:
        p = dict(m.named_parameters())[n]
        assert p.ndim <= 1 or any(t in n for t in ("token", "embed")), n
    assert "encoder.cls_token" in no_decay["names"]
    assert all(dict(m.named_parameters())[n].ndim >= 2 for n in decay["names"])
    assert any(n.startswith("encoder.blocks.0.attn.qkv.weight") for n in decay["names"])
    assert len(decay["params"]) + len(no_decay["params"]) == sum(
        p.requires_grad for p in m.parameters())


def test_checkpoint_atomic_weights_only_and_rng_roundtrip(tmp_path):
    path = str(tmp_path / "last.pt")
    ckpt.seed_everything(3)
    st = ckpt.rng_state()
    ckpt.save_atomic({"format": ckpt.CHECKPOINT_FORMAT, "version": 1, "rng": [st],
                      "model": {"w": torch.ones(2)}}, path)
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind
    want = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(ckpt.load(path)["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == want

    # a file that needs arbitrary unpickling is refused by the weights_only load
    torch.save({"format": ckpt.CHECKPOINT_FORMAT, "evil": _Toy}, tmp_path / "evil.pt")
    with pytest.raises(ckpt.CheckpointError, match="evil.pt"):
        ckpt.load(str(tmp_path / "evil.pt"))
    (tmp_path / "trunc.pt").write_bytes(open(path, "rb").read()[:100])
    with pytest.raises(ckpt.CheckpointError, match="trunc.pt"):
        ckpt.load(str(tmp_path / "trunc.pt"))
    torch.save({"other": 1}, tmp_path / "other.pt")
    with pytest.raises(ckpt.CheckpointError, match="not a c2fmae-pretrain-checkpoint"):
        ckpt.load(str(tmp_path / "other.pt"))
