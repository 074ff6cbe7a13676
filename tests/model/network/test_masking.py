"""Progressive masking (model/network/masking.py): counts, eq. 6 / eq. 8 allocations, blend, schedules."""
import pytest
import torch

from model.network.masking import (ProgressiveMasking, allocate, blend_mask,
                                   dirichlet_masked_counts, instance_guided_mask, object_patches,
                                   random_mask, rank_random, schedule_weights, semantic_guided_mask,
                                   semantic_patch_labels)

N, GRID = 196, 14


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("num_visible", [98, 0, 1, 300, 588])
def test_dirichlet_counts_give_exactly_the_visible_budget(num_visible):
    m = dirichlet_masked_counts(2000, 3, N, num_visible, generator=gen())
    assert m.dtype == torch.int64 and m.shape == (2000, 3)
    assert ((N - m).sum(1) == num_visible).all()
    assert (m >= 0).all() and (m <= N).all()


def test_dirichlet_counts_spread_over_granularities():
    v = N - dirichlet_masked_counts(4000, 3, N, 98, generator=gen())
    # Dirichlet(1) shares of 98: mean 98/3 each, and not degenerate (most samples mix)
    assert torch.allclose(v.float().mean(0), torch.full((3,), 98 / 3), atol=1.5)
    assert ((v > 0).sum(1) >= 2).float().mean() > 0.9


def test_dirichlet_rejects_impossible_budget():
    with pytest.raises(ValueError, match="num_visible"):
        dirichlet_masked_counts(2, 3, N, 589)


def test_allocate_largest_remainder_and_capacity():
    out = allocate(torch.tensor([8, 7, 10]), torch.tensor([[1., 1, 2], [1, 1, 1], [1, 1, 8]]),
                   torch.tensor([[9, 9, 9], [9, 9, 9], [9, 9, 3]]), gen())
    assert out[0].tolist() == [2, 2, 4]
    assert sorted(out[1].tolist()) == [2, 2, 3]  # the +1 goes to one of three equal remainders
    assert out[2].tolist() == [4, 3, 3] or out[2].tolist() == [3, 4, 3]  # 3rd capped at 3
    assert out.sum(1).tolist() == [8, 7, 10]


def _three_region_map():
    """56x56 semantic map: left half class 3 (98 patches), top-right class 7 (49), rest unlabeled."""
    s = torch.full((1, 56, 56), 255, dtype=torch.long)
    s[:, :, :28] = 3
    s[:, :28, 28:] = 7
    return s


def test_patch_label_majority_rule():
    s = torch.full((1, 56, 56), 255, dtype=torch.long)
    s[0, 0:4, 0:4] = 2
    s[0, 0:3, 0:3] = 5        # patch 0: 9 px of class 5, 7 of class 2 -> 5
    s[0, 0:2, 4:8] = 4
    s[0, 2:4, 4:8] = 1        # patch 1: tie 8/8 -> smaller index 1
    s[0, 0:2, 8:11] = 9       # patch 2: 10 px unlabeled, 6 px class 9 -> unlabeled (133)
    lab = semantic_patch_labels(s, GRID, 133)
    assert lab[0, :3].tolist() == [5, 1, 133]
    assert lab.shape == (1, N)


@pytest.mark.parametrize("m, want", [(100, {3: 50, 7: 25, 133: 25}), (101, {3: 51, 7: 25, 133: 25}),
                                     (196, {3: 98, 7: 49, 133: 49}), (0, {3: 0, 7: 0, 133: 0})])
def test_semantic_guided_exact_region_counts(m, want):
    lab = semantic_patch_labels(_three_region_map(), GRID, 133).repeat(8, 1)
    mask = semantic_guided_mask(lab, torch.full((8,), m), 134, generator=gen())
    for c, k in want.items():
        assert ((mask & (lab == c)).sum(1) == k).all(), c
    if 0 < m < N:
        assert not torch.equal(mask[0], mask[1])  # random inside the regions


def test_semantic_guided_class_weights():
    lab = semantic_patch_labels(_three_region_map(), GRID, 133)
    w = torch.ones(134)
    w[3] = 0.0  # class 3 is never masked while other regions have room
    mask = semantic_guided_mask(lab, torch.tensor([60]), 134, w, gen())
    assert (mask & (lab == 3)).sum() == 0 and mask.sum() == 60
    mask = semantic_guided_mask(lab, torch.tensor([120]), 134, w, gen())
    assert (mask & (lab == 3)).sum() == 22 and mask.sum() == 120  # the others are full


def test_object_patch_rule():
    inst = torch.zeros(1, 56, 56, dtype=torch.long)
    inst[0, 0:2, 0:4] = 1          # patch 0: exactly half object -> object
    inst[0, 0:2, 4:7] = 2          # patch 1: 6/16 -> background
    inst[0, 0:4, 8:12] = 255       # patch 2: overflow/ignored ids count as object
    assert object_patches(inst, GRID)[0, :4].tolist() == [True, False, True, False]


@pytest.mark.parametrize("n_obj, m, want_obj", [(150, 100, 75), (40, 100, 40), (190, 100, 94),
                                                (150, 99, 74), (0, 50, 0)])
def test_instance_guided_exact_counts(n_obj, m, want_obj):
    obj = torch.zeros(4, N, dtype=torch.bool)
    obj[:, torch.randperm(N, generator=gen())[:n_obj]] = True
    mask = instance_guided_mask(obj, torch.full((4,), m), 0.75, gen())
    assert ((mask & obj).sum(1) == want_obj).all()
    assert ((mask & ~obj).sum(1) == m - want_obj).all()


def test_blend_end_points_and_topk():
    g = gen()
    counts = torch.full((16,), 120)
    lab = semantic_patch_labels(_three_region_map(), GRID, 133).repeat(16, 1)
    sg = semantic_guided_mask(lab, counts, 134, generator=g)
    ig = instance_guided_mask(torch.rand(16, N, generator=g) < 0.3, counts, 0.75, g)
    rd = random_mask(counts, N, g)
    assert torch.equal(blend_mask(counts, (1.0, 0.0, 0.0), sg, ig, rd, g), sg)
    assert torch.equal(blend_mask(counts, (0.0, 1.0, 0.0), sg, ig, rd, g), ig)
    assert torch.equal(blend_mask(counts, (0.0, 0.0, 1.0), sg, ig, rd, g), rd)
    mix = blend_mask(counts, (0.4, 0.35, 0.25), sg, ig, rd, g)
    assert (mix.sum(1) == 120).all()
    assert (mix | ~(sg & ig & rd)).all()  # eq. 11: every top-scoring patch is kept


def test_topk_ties_are_random():
    r = rank_random(torch.zeros(4000, 4), gen())
    first = torch.bincount((r == 0).float().argmax(1), minlength=4)
    assert (first > 850).all() and (first < 1150).all()


def test_schedule_curves():
    assert schedule_weights("sg-ig-rd", 0.0) == (1.0, 0.0, 0.0)
    assert schedule_weights("sg-ig-rd", 1 / 3) == pytest.approx((0.5, 0.5, 0.0))
    assert schedule_weights("sg-ig-rd", 0.5) == pytest.approx((0.0, 1.0, 0.0))
    assert schedule_weights("sg-ig-rd", 2 / 3) == pytest.approx((0.0, 0.5, 0.5))
    assert schedule_weights("sg-ig-rd", 1.0) == (0.0, 0.0, 1.0)
    assert schedule_weights("ig-sg-rd", 0.0) == (0.0, 1.0, 0.0)
    assert schedule_weights("rd-ig-sg", 1.0) == (1.0, 0.0, 0.0)
    assert schedule_weights("ig", 0.7) == (0.0, 1.0, 0.0)
    for p in torch.linspace(0, 1, 31).tolist():
        assert sum(schedule_weights("sg-ig-rd", p)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown masking schedule"):
        schedule_weights("sg-rd", 0.1)


def test_generator_follows_the_curriculum():
    sem = _three_region_map().repeat(32, 1, 1)
    inst = torch.zeros(32, 56, 56, dtype=torch.long)
    inst[:, :16, :16] = 1  # 16 object patches
    pm = ProgressiveMasking(("semantic", "instance", "rgb"), GRID, num_visible=98)
    lab = semantic_patch_labels(sem, GRID, 133)
    obj = object_patches(inst, GRID)
    for p in (0.0, 0.3, 0.5, 0.9, 1.0):
        masks = pm(sem, inst, p, generator=gen(1))
        assert sum((~m).sum(1) for m in masks.values()).eq(98).all()
    # p=0 is pure semantic-guided: every granularity's masked count is split 2:1:1 by region area
    for m in pm(sem, inst, 0.0, generator=gen(2)).values():
        k = m.sum(1)
        a = (m & (lab == 3)).sum(1)
        assert ((a - k * 0.5).abs() <= 1).all()
    # p=0.5 is pure instance-guided: floor(0.75 m) on the 16 object patches, capped
    for m in pm(sem, inst, 0.5, generator=gen(3)).values():
        k = m.sum(1)
        assert torch.equal((m & obj).sum(1), torch.minimum((0.75 * k).floor().long(), obj.sum(1)))


def test_generator_without_guide_maps_is_random():
    pm = ProgressiveMasking(("rgb",), GRID, num_visible=49, schedule="sg")
    m = pm(None, None, 0.0, batch_size=3, device="cpu", generator=gen())["rgb"]
    assert m.shape == (3, N) and ((~m).sum(1) == 49).all()
