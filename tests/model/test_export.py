"""``python -m model.export``: the encoder round-trips through timm with equal features."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from model.pretraining import checkpoint as ckpt
from model.network.c2fmae import build_model
from model.export import create_timm_model, main


def _checkpoint(path, model):
    ckpt.save_atomic({"format": ckpt.CHECKPOINT_FORMAT, "version": ckpt.CHECKPOINT_VERSION,
                      "model": model.state_dict(), "model_name": "c2fmae_vit_test",
                      "model_config": model.config.to_dict(), "global_step": 7}, str(path))


@pytest.mark.parametrize("overrides", [{}, {"img_size": 64, "num_visible": 12}])
def test_export_round_trips_through_timm(tmp_path, overrides):
    torch.manual_seed(0)
    model = build_model("c2fmae_vit_test", **overrides).eval()
    with torch.no_grad():  # move every weight off its init so a missed copy would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    _checkpoint(tmp_path / "last.pt", model)
    out = tmp_path / "enc.safetensors"
    assert main([str(tmp_path / "last.pt"), str(out)]) == 0

    # by hand, as a downstream framework would: metadata -> timm.create_model -> strict load
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    kwargs = json.loads(meta["timm_kwargs"])
    assert kwargs["embed_dim"] == 64 and kwargs["depth"] == 2 and kwargs["num_heads"] == 2
    kwargs.update(num_classes=0, global_pool="avg")
    vit = timm.create_model(meta["timm_model"], **kwargs).eval()
    result = vit.load_state_dict(load_file(str(out)), strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    size = model.config.img_size
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ours = model.rgb_features(x)
        theirs = vit(x)
        assert theirs.shape == (2, 64)
        torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(create_timm_model(str(out)).eval()(x), ours,
                                   rtol=1e-5, atol=1e-5)
    assert meta["global_step"] == "7"


def test_export_refuses_what_is_not_a_checkpoint(tmp_path, capsys):
    torch.save({"model": {}}, tmp_path / "x.pt")
    assert main([str(tmp_path / "x.pt"), str(tmp_path / "o.safetensors")]) == 1
    assert "x.pt" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()
