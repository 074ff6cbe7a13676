"""Cross-modal panels (Figs. 5-6): the given granularity is drawn as the input, only the others are
predicted (a tiny random model and a hand-built batch)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.network.c2fmae import build_model
from model.pretraining.panels import HEADER, MIN_TILE, PanelWriter, cross_modal, map_to_uint8


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    model = build_model("c2fmae_vit_test", img_size=64, num_visible=12).eval()
    g = torch.Generator().manual_seed(1)
    sem = torch.randint(0, 133, (2, 16, 16), generator=g)
    sem[:, :4] = 255                                            # some unlabeled rows
    batch = {"rgb": torch.randn(2, 3, 64, 64, generator=g),
             "instance": torch.randint(0, 4, (2, 16, 16), generator=g), "semantic": sem}
    return model, batch


@pytest.mark.parametrize("source", ["semantic", "instance", "rgb"])
def test_the_source_is_the_input_and_only_the_others_are_predicted(model_and_batch, source):
    model, batch = model_and_batch
    with torch.no_grad():
        img = np.asarray(cross_modal(model, batch, source))
    s = MIN_TILE
    assert img.shape == (HEADER + 2 * s, 5 * s, 3)     # input | 2 x (pred | target)
    if source != "rgb":                                 # the input column is the given map
        for i in range(2):
            want = map_to_uint8(batch[source][i], source, 64).repeat(2, 0).repeat(2, 1)
            assert (img[HEADER + i * s:HEADER + (i + 1) * s, :s] == want).all()


def test_panel_writer_writes_the_four_figures(model_and_batch, tmp_path):
    model, batch = model_and_batch
    ds = [{k: v[i] for k, v in batch.items()} for i in range(2)]
    paths = PanelWriter(ds, 2, str(tmp_path)).write(model, "t")
    assert [p.rsplit("/", 1)[-1] for p in paths] == [
        "fig4_t.png", "fig5_from_rgb_t.png", "fig6_from_instance_t.png", "fig6_from_semantic_t.png"]


def test_fig4_prediction_column_keeps_the_visible_patches():
    from model.pretraining.panels import with_visible

    pred, tgt = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)
    masked = torch.tensor([True, False, True, True])          # 2 x 2 patches of 4 px
    out = with_visible(pred, tgt, masked)
    assert (out[:4, 4:] == 200).all() and (out[:4, :4] == 0).all() and (out[4:] == 0).all()
