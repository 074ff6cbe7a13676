"""The labeling benchmarks' own code: full-size builders, FLOP arithmetic, projection, and the
GPU script's loop run dry on CPU (so that it does not crash on first use on the device)."""
import json
import warnings

import pytest
import torch

from bench.labelers import flops as F
from bench.labelers import gpu as G
from bench.labelers import models as M
from bench.labelers import projection as P


def test_full_size_builders_match_the_checkpoints_on_meta():
    sam = M.build_model("sam-hq", "meta")
    vis = sum(p.numel() for p in sam.vision_encoder.parameters())
    assert 600e6 < vis < 680e6                    # SAM ViT-H image encoder: ~637M parameters
    eomt = M.build_model("eomt", "meta")
    assert eomt.config.hidden_size == 1024 and eomt.config.num_queries == 200
    assert M.configs()["oneformer"][1].num_queries == 150
    assert next(sam.parameters()).device.type == "meta"


@pytest.mark.parametrize("preset,semantic", G.SETTINGS)
def test_every_gpu_setting_builds_full_size_on_meta(preset, semantic):
    lab = M.full_labeler(preset, semantic, "meta", "bf16")
    det_dtype = next(lab.detector.model.parameters()).dtype
    sem_dtype = next(lab.semantic.model.parameters()).dtype
    # detectors stay fp32 (TF32 on CUDA); SAM 3 and the semantic models take bf16
    assert det_dtype == (torch.bfloat16 if preset == "sam3" else torch.float32)
    assert sem_dtype == torch.bfloat16
    assert (lab.detector is lab.segmenter) == (preset == "sam3")


def test_cpu_sdpa_has_a_flop_formula():
    q = torch.randn(1, 2, 16, 8)
    c = F.Counter()
    with c():
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert c.total == 4 * 2 * 16 * 16 * 8         # two (16x8)(8x16)-sized matmuls per head


def test_preset_totals_and_projection_arithmetic():
    stages = {"grounding-dino-B": 1.0, "mm-grounding-dino-B": 1.0, "sam-hq-H encoder": 6.0,
              "sam-hq-H decoder, 1 box": 0.02, "sam-hq-H decoder, 8 boxes": 0.09,
              "sam3 vision encoder": 5.0, "sam3 DETR + masks, per phrase row": 0.5,
              "mask2former-swin-L": 1.5, "oneformer-swin-L": 1.6, "eomt-L": 1.7}
    tot = F.preset_totals(stages, boxes=3, rows=2.0)
    assert tot["default+mask2former"]["total"] == pytest.approx(1 + 6 + 0.02 + 2 * 0.01 + 1.5)
    assert tot["sam3+eomt"]["total"] == pytest.approx(5 + 2 * 0.5 + 1.7)
    gpu_bound = P.project(10.0, host_ms=1.0, peak=100.0)        # G = 250 ms, C = 1 ms
    assert gpu_bound["images_per_s"] == pytest.approx(4.0) and gpu_bound["gpu_wait_share"] == 0
    cpu_bound = P.project(1.0, host_ms=75.0, peak=100.0)        # G = 25 ms, C = 75 ms
    assert cpu_bound["images_per_s"] == pytest.approx(2 / 0.1)  # 2 threads / (C + G)
    assert cpu_bound["gpu_wait_share"] == pytest.approx(0.5)
    assert P.project(1.0, 0.0, 100.0, det_tflop=1.0)["gpu_ms"] == pytest.approx(50.0)


def test_gpu_script_dry_run_runs_its_loop_on_cpu(tmp_path, monkeypatch):
    flops = tmp_path / "flops.json"
    flops.write_text(json.dumps({"stages": {k: 1.0 for g in F.GROUPS.values() for k in g[2]}}))
    monkeypatch.setattr(F, "RESULTS", flops)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = G.run(settings=[("sam3", "eomt"), ("nope", "eomt")], batches=(2,), n_batches=1,
                    dry_run=True, log=lambda *a: None)
    ok, bad = res["rows"]
    assert ok["images"] == 2 and ok["failed"] == 0 and ok["images_per_s"] > 0
    assert ok["achieved_tflops"] == pytest.approx(ok["tflop_per_image"]
                                                  * ok["model_images_per_s"])
    assert "error" in bad                        # one setting's crash does not end the run
    assert "DRY RUN" in G.table(res)
