"""C2FMAE model (model/network/c2fmae.py): shapes per configuration, cascade gradients, masked losses,
timm export, reconstruction, config round trip, and overfitting one real batch."""
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from model.network.c2fmae import C2FMAE, C2FMAEConfig, build_model
from model.network.config import model_config

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def random_batch(B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    sem = torch.randint(0, 133, (B, 56, 56), generator=g)
    sem[:, :8, :8] = 255
    inst = torch.randint(0, 33, (B, 56, 56), generator=g)
    inst[:, -4:, -4:] = 255
    return {"rgb": torch.randn(B, 3, 224, 224, generator=g), "semantic": sem, "instance": inst}


CONFIGS = [
    ("c2fmae_vit_test", {}),
    ("c2fmae_vit_test", {"decoder_mode": "parallel"}),
    ("c2fmae_vit_test", {"decoder_mode": "cascade_no_xattn"}),
    ("c2fmae_vit_test", {"task_order": ["rgb", "instance", "semantic"]}),
    ("c2fmae_vit_test", {"inputs": ["rgb"], "num_visible": 49}),
    ("c2fmae_vit_test", {"inputs": ["semantic", "rgb"]}),
    ("c2fmae_vit_test", {"inputs": ["instance", "rgb"], "masking_schedule": "rd-ig-sg"}),
    ("c2fmae_vit_test", {"num_visible": 147, "loss_weights": {"rgb": 2.0}, "masking_schedule": "ig"}),
    ("mae_vit_test", {}),
]


@pytest.mark.parametrize("name, ov", CONFIGS)
def test_forward_shapes_for_every_configuration(name, ov):
    torch.manual_seed(0)
    model = build_model(name, **ov)
    c = model.config
    out = model(random_batch(), progress=0.4)
    tasks = c.task_order
    assert set(out["losses"]) == set(out["pred"]) == set(tasks)
    shapes = {"semantic": (2, 133, 56, 56), "instance": (2, 33, 56, 56), "rgb": (2, 196, 768)}
    for t in tasks:
        assert tuple(out["pred"][t].shape) == shapes[t] and out["pred"][t].dtype == torch.float32
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    weighted = sum(c.loss_weights[t] * out["losses"][t] for t in tasks)
    assert torch.allclose(out["loss"], weighted)
    vis = sum((~out["mask"][g]).sum(1) for g in c.inputs)
    assert (vis == c.num_visible).all()  # Dirichlet split gives exactly the configured count
    for g, m in out["mask"].items():
        assert m.shape == (2, 196) and m.dtype == torch.bool
        if g not in c.inputs:
            assert m.all()
    out["loss"].backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def _grad_into_semantic_block(mode):
    torch.manual_seed(0)
    model = build_model("c2fmae_vit_test", decoder_mode=mode)
    batch = random_batch()
    out = model(batch, progress=0.0)
    rgb_loss = model.compute_losses(out["pred"], batch, out["mask"])["rgb"]
    params = list(model.decoder.blocks["semantic"].parameters())
    grads = torch.autograd.grad(rgb_loss, params, allow_unused=True)
    return sum(0.0 if g is None else float(g.abs().sum()) for g in grads)


def test_cascade_carries_previous_task_output():
    assert _grad_into_semantic_block("cascade") > 0
    assert _grad_into_semantic_block("cascade_no_xattn") > 0
    assert _grad_into_semantic_block("parallel") == 0


def test_losses_count_only_masked_positions():
    torch.manual_seed(0)
    model = build_model("c2fmae_vit_test")
    batch = random_batch()
    out = model(batch, progress=0.0)
    mask, pred = out["mask"], out["pred"]
    base = model.compute_losses(pred, batch, mask)
    for g in ("semantic", "instance", "rgb"):
        vis_patch = int((~mask[g][0]).nonzero()[0])
        hid_patch = int(mask[g][0].nonzero()[0])
        for patch, should_change in ((vis_patch, False), (hid_patch, True)):
            b = {k: v.clone() for k, v in batch.items()}
            r, c = divmod(patch, 14)
            if g == "rgb":
                b["rgb"][0, :, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] += torch.rand(3, 16, 16)
            else:
                b[g][0, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] = (b[g][0, r * 4, c * 4] + 1) % 30
            new = model.compute_losses(pred, b, mask)[g]
            assert (not torch.equal(new, base[g])) == should_change, (g, patch)


def test_export_loads_into_timm_with_matching_features():
    torch.manual_seed(0)
    model = build_model("c2fmae_vit_test").eval()
    assert model.gran_embed["rgb"].abs().sum() > 0  # folded into the exported pos_embed
    name, kwargs = model.timm_encoder_name()
    ref = timm.create_model(name, pretrained=False, **kwargs).eval()
    missing, unexpected = ref.load_state_dict(model.export_encoder_state_dict(), strict=True)
    assert not missing and not unexpected
    rgb = random_batch()["rgb"]
    with torch.no_grad():
        assert torch.allclose(ref(rgb), model.rgb_features(rgb), atol=1e-5)
    base = SimpleNamespace(config=model_config("c2fmae_vit_base"))
    assert C2FMAE.timm_encoder_name(base) == ("vit_base_patch16_224",
                                             {"num_classes": 0, "global_pool": "avg"})


def test_encoder_is_a_timm_vit_with_fixed_sincos_positions():
    model = build_model("c2fmae_vit_test")
    assert type(model.encoder).__name__ == "VisionTransformer"
    assert not model.encoder.pos_embed.requires_grad
    assert model.encoder.pos_embed[0, 0].abs().sum() == 0  # class token position is zero
    assert model.adapters["rgb"].proj is model.encoder.patch_embed.proj
    assert model.encode(random_batch()).shape == (2, 1 + 3 * 196, 64)


def test_reconstruct_from_any_subset():
    torch.manual_seed(0)
    model = build_model("c2fmae_vit_test").eval()
    batch = random_batch()
    for vis in ({"rgb": "all"}, {"semantic": "all"}, {"instance": "all"},
                {"rgb": 0.25, "semantic": "none", "instance": 0.5}, {}):
        out = model.reconstruct(batch, visible=vis)
        assert out["semantic"].shape == (2, 56, 56) and out["semantic"].dtype == torch.int64
        assert out["instance"].shape == (2, 56, 56) and out["instance"].max() <= 32
        assert out["rgb"].shape == (2, 3, 224, 224)
        for g in ("semantic", "instance", "rgb"):
            want = {"all": 0, "none": 196, 0.25: 147, 0.5: 98}[vis.get(g, "none")]
            assert (out["mask"][g].sum(1) == want).all()
    # unequal visible counts per sample fall back to one sample at a time
    m = torch.ones(2, 196, dtype=torch.bool)
    m[0, :10] = False
    m[1, :30] = False
    out = model.reconstruct(batch, visible={"rgb": m})
    assert torch.equal(out["mask"]["rgb"], m)
    # batch without maps: reconstruct everything from RGB alone
    assert model.reconstruct({"rgb": batch["rgb"]}, visible={"rgb": "all"})["semantic"].shape == (2, 56, 56)


def test_reconstruct_undoes_pixel_normalisation_with_visible_stats():
    from model.network.adapters import patchify, unpatchify
    from model.network.losses import rgb_target

    model = build_model("c2fmae_vit_test")
    rgb = random_batch()["rgb"]
    target = rgb_target(rgb, 16, norm_pix=True)
    mask = torch.zeros(2, 196, dtype=torch.bool)
    mask[:, 100:] = True
    px = model._pixels(target, rgb, mask)
    vis = ~mask
    assert torch.allclose(patchify(px, 16)[vis], patchify(rgb, 16)[vis], atol=1e-4)
    t = patchify(rgb, 16)
    mean_vis = t.mean(-1)[:, :100].mean(1)
    assert torch.allclose(patchify(px, 16)[:, 100:].mean(-1).mean(1), mean_vis, atol=1e-4)


def test_config_round_trip_and_errors():
    cfg = build_model("c2fmae_vit_test", decoder_mode="parallel").config
    d = cfg.to_dict()
    assert isinstance(d["inputs"], list)
    assert C2FMAEConfig.from_dict(d) == cfg
    C2FMAE(C2FMAEConfig.from_dict(build_model("mae_vit_test").config.to_dict()))
    with pytest.raises(ValueError, match="unknown C2FMAEConfig keys"):
        C2FMAEConfig.from_dict({**d, "decoder_dims": 3})
    with pytest.raises(ValueError, match="decoder_mode"):
        build_model("c2fmae_vit_test", decoder_mode="serial")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("c2fmae_vit_huge")
    model = build_model("c2fmae_vit_test")
    bad = random_batch()
    bad["semantic"][1, 3, 3] = 140
    with pytest.raises(ValueError, match="semantic map holds values \\[140\\]"):
        model(bad)
    with pytest.raises(ValueError, match="batch\\['instance'\\] has shape"):
        model({**random_batch(), "instance": torch.zeros(2, 28, 28, dtype=torch.long)})


def _real_batch(root, n=4, size=112):
    files = sorted((root / "train").glob("*/*.JPEG"))[:n]
    rgbs, sems, insts = [], [], []
    for f in files:
        im = Image.open(f).convert("RGB")
        s = size / min(im.size)
        im = im.resize((max(size, round(im.width * s)), max(size, round(im.height * s))), Image.BICUBIC)
        l, t = (im.width - size) // 2, (im.height - size) // 2
        x = torch.from_numpy(np.asarray(im.crop((l, t, l + size, t + size)), dtype=np.float32) / 255)
        x = x.permute(2, 0, 1)
        small = torch.nn.functional.avg_pool2d(x[None], 4)[0]  # 3 x size/4 x size/4
        bright = small.mean(0)
        # deterministic synthetic maps: semantic = dominant channel x 3 brightness levels,
        # instance = dominant-channel blobs among the brighter half, background elsewhere
        level = torch.bucketize(bright, torch.tensor([0.33, 0.66]))
        sems.append(small.argmax(0) * 3 + level)
        insts.append(torch.where(bright > bright.median(), small.argmax(0) + 1, 0))
        rgbs.append((x - MEAN) / STD)
    return {"rgb": torch.stack(rgbs), "semantic": torch.stack(sems), "instance": torch.stack(insts)}


def test_tiny_model_overfits_one_real_batch(imagenet_sample):
    torch.manual_seed(0)
    batch = _real_batch(imagenet_sample)
    model = build_model("c2fmae_vit_test", img_size=112, num_visible=25)  # 7x7 patches: fast
    mask = model.sample_masks(batch, 0.0, torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    first = None
    for _ in range(100):
        out = model(batch, mask=mask)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first or {k: float(v) for k, v in out["losses"].items()}
    last = {k: float(v) for k, v in out["losses"].items()}
    assert sum(last.values()) < 0.4 * sum(first.values()), (first, last)
    for k in first:
        assert last[k] < 0.65 * first[k], (k, first, last)
