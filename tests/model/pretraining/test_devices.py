"""What of the GPU path runs without a GPU: bf16 autocast on CPU for a few pretraining steps,
and the CUDA / NCCL branches of the setup (device, backend, TF32, fused AdamW) with CUDA faked."""
from __future__ import annotations

import math
import types

import pytest
import torch
from tests._datasets import synthetic_dataset
from tests._pretrain import tiny_config

from model.pretraining import distributed, optim
from model import pretrain
from model.pretraining.config import load_config


def test_bf16_autocast_pretraining_steps_on_cpu(tmp_path, monkeypatch):
    root = tmp_path / "data"
    synthetic_dataset(root, n=8, size=(80, 64))
    dtypes = []
    real = pretrain.build_run_model

    def build(cfg):
        m = real(cfg)
        lin = next(x for x in m.modules() if isinstance(x, torch.nn.Linear))
        lin.register_forward_hook(lambda mod, i, o: dtypes.append(o.dtype))
        return m
    monkeypatch.setattr(pretrain, "build_run_model", build)
    recs = []
    model = pretrain.train(tiny_config(str(root), "train.amp=bf16", steps=3, batch=2, total=2),
                           str(tmp_path / "out"), resume=None, device="cpu", on_step=recs.append)
    assert dtypes and set(dtypes) == {torch.bfloat16}          # the forward ran under autocast
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in recs)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    assert recs[0]["loss"] != recs[2]["loss"]


def test_cuda_nccl_branches_are_built_right(monkeypatch):
    calls = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("device", d))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda **kw: calls.setdefault("pg", kw))
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    for k, v in {"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "3"}.items():
        monkeypatch.setenv(k, v)
    cfg = load_config("pretrain_vit_base_400ep")
    rank, world, dev = distributed.init_distributed(cfg, "auto")
    assert (rank, world, dev) == (5, 8, torch.device("cuda", 3))
    assert calls["device"] == torch.device("cuda", 3)
    assert calls["pg"] == {"backend": "nccl", "rank": 5, "world_size": 8}
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    # autocast: bf16 by default on CUDA, no GradScaler; fp16 gets one
    assert distributed.amp_dtype(cfg, dev) == torch.bfloat16
    cfg["train"]["amp"] = "fp16"
    assert distributed.autocast_ctx(cfg, torch.device("cpu"))[1] is True


def test_fused_adamw_only_when_every_parameter_is_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda_like = [types.SimpleNamespace(is_cuda=True)] * 3
    assert optim.use_fused(cuda_like)
    assert not optim.use_fused(cuda_like + [types.SimpleNamespace(is_cuda=False)])
    assert not optim.use_fused([])
    opt = optim.build_optimizer(torch.nn.Linear(2, 2), 1e-3, 0.05)   # CPU parameters
    assert not opt.defaults.get("fused")


@pytest.mark.parametrize("amp", ["none", "auto"])
def test_cpu_defaults_to_fp32(amp):
    cfg = load_config("pretrain_tiny", [f"train.amp={amp}"])
    assert distributed.amp_dtype(cfg, torch.device("cpu")) is None
