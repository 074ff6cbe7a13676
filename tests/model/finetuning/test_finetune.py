"""Fine-tuning: layer-decay groups, lr schedule, encoder loading, configs, tiny end-to-end run."""
from __future__ import annotations

import json
import math

import pytest
import timm
import torch
from safetensors.torch import save_file

from model.pretraining.config import ConfigError
from model.finetune import main as finetune_main
from model.finetuning.config import load_finetune_config, scaled_lr
from model.finetuning.classifier import (EncoderWeights, create_classifier, layer_decay_groups,
                                  load_finetuned, read_encoder)
from model.pretraining.optim import lr_at

TINY = {"embed_dim": 64, "depth": 2, "num_heads": 2}


def tiny_vit(img_size=64, num_classes=0, depth=2):
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=num_classes,
                             global_pool="avg", img_size=img_size, **{**TINY, "depth": depth})


def export_like(path, vit, img_size):
    """An encoder file in model.export's format (metadata timm_model + timm_kwargs)."""
    kw = {**TINY, "depth": len(vit.blocks), "img_size": img_size}
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path),
              metadata={"format": "c2fmae-encoder", "timm_model": "vit_base_patch16_224",
                        "timm_kwargs": json.dumps(kw)})


def test_layer_decay_groups_follow_formula_for_every_block():
    depth, decay = 4, 0.65
    model = create_classifier(None, 10, 32, 0.0, "vit_base_patch16_224", {**TINY, "depth": depth})
    groups = layer_decay_groups(model, weight_decay=0.05, layer_decay=decay)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for g in groups:
        for p in g["params"]:
            n = names[id(p)]
            seen.add(n)
            if n.startswith("blocks."):
                layer_id = int(n.split(".")[1]) + 1
            elif n.startswith(("cls_token", "pos_embed", "patch_embed")):
                layer_id = 0
            else:  # fc_norm, head
                layer_id = depth + 1
            # MAE / BEiT: lr_scale = decay ** (num_layers + 1 - layer_id)
            assert g["lr_scale"] == pytest.approx(decay ** (depth + 1 - layer_id)), n
            no_wd = p.ndim <= 1 or n in ("pos_embed", "cls_token")
            assert g["weight_decay"] == (0.0 if no_wd else 0.05), n
    assert seen == set(names.values())


def test_lr_schedule_warmup_then_cosine():
    """Fine-tuning uses the pretraining schedule (optim.lr_at) in fractional epochs."""
    cfg = load_finetune_config("finetune_vitb_400ep")
    o, peak = cfg["optim"], scaled_lr(cfg)
    assert peak == pytest.approx(1e-3 * 2048 / 256)

    def lr(e):
        return lr_at(e, o["epochs"], o["warmup_epochs"], peak, o["min_lr"])
    assert lr(0.0) == 0.0
    assert lr(2.5) == pytest.approx(peak / 2)
    assert lr(5.0) == pytest.approx(peak)
    mid = 5 + 95 / 2
    assert lr(mid) == pytest.approx(1e-6 + (peak - 1e-6) * 0.5)
    assert lr(100.0) == pytest.approx(1e-6)
    assert lr_at(3.0, 5, 5, 1.0, 0.1) == pytest.approx(0.6)  # warmup == total: no cosine part
    assert lr_at(5.0, 5, 5, 1.0, 0.1) == pytest.approx(0.1)


def test_shipped_configs_hold_the_paper_settings():
    a, b = load_finetune_config("finetune_vitb_400ep"), load_finetune_config("finetune_vitb_1600ep")
    assert (a["optim"]["base_lr"], a["optim"]["layer_decay"]) == (1e-3, 0.7)
    assert (b["optim"]["base_lr"], b["optim"]["layer_decay"]) == (5e-4, 0.65)
    for c in (a, b):
        o, g = c["optim"], c["aug"]
        assert (o["epochs"], o["warmup_epochs"], o["total_batch"]) == (100, 5, 2048)
        assert (c["model"]["drop_path"], g["smoothing"], g["mixup"], g["cutmix"]) == (0.1, 0.1, 0.8, 1.0)
        assert (g["auto_augment"], g["reprob"], o["weight_decay"]) == ("rand-m9-mstd0.5-inc1", 0.25, 0.05)
        assert o["betas"] == [0.9, 0.999]
    with pytest.raises(ConfigError, match="optim.lerning_rate"):
        load_finetune_config("finetune_tiny_cpu", ["optim.lerning_rate=1"])


def test_encoder_loads_with_pos_embed_resampled_and_small_head(tmp_path):
    src = tiny_vit(img_size=64).eval()
    path = tmp_path / "enc.safetensors"
    export_like(path, src, 64)
    w = read_encoder(str(path))
    same = create_classifier(w, 10, 64, 0.0).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # same resolution: identical pooled features
        torch.testing.assert_close(same.forward_head(same.forward_features(x), pre_logits=True),
                                   src.forward_head(src.forward_features(x), pre_logits=True))
    assert same.head.weight.abs().max() < 2e-4 and same.head.weight.std() < 5e-5
    big = create_classifier(w, 10, 96, 0.0)
    assert big.pos_embed.shape == (1, 1 + 36, 64)
    expect = timm.layers.resample_abs_pos_embed(src.pos_embed.detach(), [6, 6], old_size=[4, 4])
    torch.testing.assert_close(big.pos_embed.detach(), expect)
    torch.testing.assert_close(big.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)


def test_mismatched_encoder_is_refused_by_key():
    sd = tiny_vit().state_dict()
    sd["blocks.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="blocks.0.extra.weight"):
        create_classifier(EncoderWeights(sd, "vit_base_patch16_224", dict(TINY), "x"), 10, 64)


def test_tiny_finetune_then_eval_only_on_real_images(imagenet_sample, tmp_path):
    enc = tmp_path / "enc.safetensors"
    export_like(enc, tiny_vit(img_size=224), 224)  # pretrained at 224, fine-tuned at 64
    out = tmp_path / "ft"
    args = ["--config", "finetune_tiny_cpu", "--imagenet-root", str(imagenet_sample),
            "--output-dir", str(out), "--set", "data.val_split=train",
            "--set", "data.limit_train=16", "--set", "data.limit_val=12"]
    stats = finetune_main(args + ["--pretrained", str(enc)])
    assert stats["steps"] == 2 and stats["num_images"] == 12
    assert math.isfinite(stats["train_loss"]) and 0 <= stats["top1"] <= stats["top5"] <= 100
    saved = json.loads((out / "checkpoint_eval.json").read_text())
    assert saved["top1"] == stats["top1"] and saved["split"] == "train"
    assert len((out / "log.jsonl").read_text().splitlines()) == 1
    model, ck = load_finetuned(str(out / "checkpoint.pth"))
    assert model.pos_embed.shape[1] == 1 + 16 and ck["epoch"] == 0
    assert not torch.equal(model.head.weight, torch.zeros_like(model.head.weight))
    # same model + val images -> same numbers, even under the 224-px paper config
    again = finetune_main(["--config", "finetune_vitb_400ep", "--imagenet-root",
                           str(imagenet_sample), "--output-dir", str(out), "--eval-only",
                           "--set", "data.val_split=train", "--set", "data.limit_val=12",
                           "--set", "data.num_workers=0"])
    assert (again["top1"], again["top5"]) == (stats["top1"], stats["top5"])
