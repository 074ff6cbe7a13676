"""Curriculum blends (model/network/masking.py): the literal eq. 10-11 top-k is a hard switch, the count
blend (default) and the per-mask blend realise a gradual SG -> IG -> RD transition."""
import pytest
import torch

from model.network.config import C2FMAEConfig
from model.network.masking import (BLENDS, ProgressiveMasking, count_blend_mask,
                                   instance_guided_mask, random_mask, sample_blend_mask,
                                   schedule_weights)

GRID, N = 14, 196


def _maps(batch: int):
    """Semantic: class 0 on the top half, class 1 (weight 0) below; instance: objects on the bottom
    half. With one granularity and 98 visible, m = 98: M_SG = top half, M_IG = bottom half."""
    sem = torch.zeros(batch, GRID * 4, GRID * 4, dtype=torch.long)
    sem[:, GRID * 2:] = 1
    inst = torch.zeros_like(sem)
    inst[:, GRID * 2:] = 1
    return sem, inst


def _masker(blend):
    w = [1.0, 0.0] + [1.0] * 131
    return ProgressiveMasking(("rgb",), GRID, 98, instance_alpha=1.0, class_weights=w,
                              blend=blend)


def _top_share(blend, progress, batch=400, seed=0):
    sem, inst = _maps(batch)
    g = torch.Generator().manual_seed(seed)
    m = _masker(blend)(sem, inst, progress, generator=g)["rgb"]
    assert (m.sum(1) == 98).all()
    return m[:, :N // 2].sum(1)  # masked patches that agree with M_SG (top half), per mask


def test_progress_quarter_topk_is_pure_sg_and_count_is_a_mixture():
    assert schedule_weights("sg-ig-rd", 0.25) == pytest.approx((0.75, 0.25, 0.0))
    assert (_top_share("topk", 0.25) == 98).all()          # literal rule: SG wins outright
    top = _top_share("count", 0.25)
    assert (top == 74).all()                                 # round(0.75 * 98) from M_SG
    per_mask = _top_share("sample", 0.25)
    pure_sg = (per_mask == 98).float().mean()
    assert set(per_mask.tolist()) == {0, 98}                 # each mask is one strategy
    assert 0.68 < pure_sg < 0.82                             # ... SG with probability 0.75


@pytest.mark.parametrize("progress", [0.0, 0.1, 0.9, 1.0])
def test_every_blend_reduces_to_one_strategy_at_the_endpoints(progress):
    shares = {b: _top_share(b, progress) for b in BLENDS}
    for b in BLENDS:
        if progress < 1 / 6:
            assert (shares[b] == 98).all(), b
        else:  # pure random: about half of the 98 on the top half, never all of them
            assert 35 < shares[b].float().mean() < 63, b


def test_count_blend_draws_from_each_map_without_overlap():
    g = torch.Generator().manual_seed(1)
    counts = torch.tensor([98, 120, 60, 0])
    sg = torch.zeros(4, N, dtype=torch.bool)
    for r, k in enumerate(counts.tolist()):
        sg[r, :k] = True
    ig = instance_guided_mask(torch.arange(N).expand(4, N) >= 50, counts, 1.0, g)
    rd = random_mask(counts, N, g)
    a = (0.4, 0.35, 0.25)
    m = count_blend_mask(counts, a, sg, ig, rd, g)
    assert torch.equal(m.sum(1), counts)
    k_s = torch.floor(0.4 * counts.double() + 0.5).long()
    assert ((m & sg).sum(1) >= k_s).all()
    assert ((m & ~sg & ~ig & ~rd).sum(1) == 0).all()       # every masked patch comes from a map
    assert torch.equal(count_blend_mask(counts, (1.0, 0.0, 0.0), sg, ig, rd, g), sg)
    assert torch.equal(count_blend_mask(counts, (0.0, 0.0, 1.0), sg, ig, rd, g), rd)
    assert torch.equal(sample_blend_mask(counts, (0.0, 1.0, 0.0), sg, ig, rd, g), ig)


def test_blend_is_a_config_option():
    assert C2FMAEConfig().masking_blend == "count"
    with pytest.raises(ValueError, match="masking_blend"):
        C2FMAEConfig(masking_blend="soft")
    with pytest.raises(ValueError, match="blend"):
        ProgressiveMasking(("rgb",), blend="soft")
