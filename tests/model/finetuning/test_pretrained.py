"""Fine-tuning from the pretraining trainer's own checkpoint: RGB (timm ViT) and multi-granular."""
from __future__ import annotations

import json

import pytest
import torch
from tests._pretrain import pretrained_checkpoint

from model.pretraining import checkpoint as ckpt
from model.export import export_checkpoint
from model.finetuning.classifier import create_classifier, layer_decay_groups, read_encoder
from model.multigranular_ft import build_classifier, consistent_cutmix, load_classifier
from model.multigranular_ft import main as mg_main


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """(dataset root, last.pt) of a 1-step pretraining run of the 64-px test C2FMAE."""
    return pretrained_checkpoint(tmp_path_factory)


def test_trainer_checkpoint_loads_with_no_missing_or_unexpected_keys(pretrained, tmp_path):
    _, last = pretrained
    w = read_encoder(last)
    model = create_classifier(w, 1000, 64, 0.0).eval()  # raises on any missing/unexpected key
    c2f = ckpt.build_from_checkpoint(ckpt.load(last)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True),
                                   c2f.rgb_features(x))
    export_checkpoint(last, str(tmp_path / "enc.safetensors"))  # the model.export path
    e = read_encoder(str(tmp_path / "enc.safetensors"))
    assert (e.timm_name, e.timm_kwargs) == (w.timm_name, w.timm_kwargs)
    assert e.state_dict.keys() == w.state_dict.keys()
    assert all(torch.equal(e.state_dict[k], w.state_dict[k]) for k in w.state_dict)


def test_multigranular_layer_decay_puts_adapters_in_the_stem(pretrained):
    model = build_classifier(pretrained[1], 1000, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    scale = {names[id(p)]: g["lr_scale"] for g in layer_decay_groups(model, 0.05, 0.5)
             for p in g["params"]}
    depth = len(model.c2f.encoder.blocks)
    for n, s in scale.items():
        if ".blocks." in n:
            assert s == pytest.approx(0.5 ** (depth - int(n.split(".blocks.")[1].split(".")[0])))
        elif n.startswith(("c2f.adapters", "c2f.gran_embed", "c2f.encoder.cls_token",
                            "c2f.encoder.patch_embed")):
            assert s == pytest.approx(0.5 ** (depth + 1)), n
        else:
            assert n.startswith(("head", "c2f.encoder.fc_norm")) and s == 1.0, n
    assert any(n.startswith("c2f.adapters.semantic") for n in scale)
    assert model.c2f.encoder.blocks[1].drop_path1.drop_prob > 0


def test_consistent_cutmix_moves_the_same_box_in_all_granularities():
    rng = __import__("numpy").random.default_rng(0)
    b = {"rgb": torch.arange(2.0)[:, None, None, None].expand(2, 3, 64, 64).clone(),
         "instance": torch.tensor([0, 1])[:, None, None].expand(2, 16, 16).clone(),
         "semantic": torch.tensor([5, 9])[:, None, None].expand(2, 16, 16).clone(),
         "label": torch.tensor([3, 7])}
    out = consistent_cutmix(b, 1.0, 10, 0.0, 4, rng)
    pasted_map = out["instance"][0] == 1
    assert torch.equal(out["semantic"][0] == 9, pasted_map)
    rgb_box = out["rgb"][0, 0] == 1.0
    assert torch.equal(rgb_box, pasted_map.repeat_interleave(4, 0).repeat_interleave(4, 1))
    lam = 1 - pasted_map.float().mean().item()
    assert out["target"][0, 3] == pytest.approx(lam) and out["target"][0, 7] == pytest.approx(1 - lam)


def test_multigranular_finetune_and_eval_read_labels_from_the_dataset(pretrained, tmp_path):
    root, last = pretrained
    out = tmp_path / "mg"
    args = ["--config", "finetune_tiny_cpu", "--data", root, "--output-dir", str(out),
            "--set", "data.val_split=train", "--set", "optim.batch_per_gpu=4",
            "--set", "optim.total_batch=4", "--set", "data.limit_train=8"]
    stats = mg_main(args + ["--pretrained", last])
    assert stats["steps"] == 2 and stats["num_images"] == 8
    saved = json.loads((out / "checkpoint_eval.json").read_text())
    assert saved["top1"] == stats["top1"]
    model, _ = load_classifier(str(out / "checkpoint.pth"))
    assert set(model.c2f.inputs) == {"rgb", "instance", "semantic"}
    again = mg_main(args + ["--eval-only"])
    assert (again["top1"], again["top5"]) == (stats["top1"], stats["top5"])
