"""Progressive coarse-to-fine masking (paper section III-D, eq. 5-11), batched in torch.

Everything here works on whole batches on the maps' device: rows are (sample, granularity) pairs,
patches are columns, and per-row variable counts are realised by ranking (sort) instead of loops.

Rules that the paper leaves open, fixed here (and in docs/MODEL.md):

* Patch labels (eq. 5, 7): a patch's semantic label is the majority class of its map pixels, with
  "unlabeled" (255) as a class of its own and ties going to the smallest class index (so any real
  class beats unlabeled). A patch is an *object* patch when at least half of its instance pixels are
  non-background (ids 1..K and 255, since 255 marks overflow objects and slivers).
* Per-granularity counts: shares r ~ Dirichlet(alpha=1) over the input granularities split the
  visible budget (as MultiMAE): float counts r_g * num_visible, capped at N (the excess re-spread
  over the uncapped granularities in proportion to their shares), floored, and the remainder given
  one by one to the largest fractional parts (ties broken at random); masked m_g = N - v_g. The
  visible counts therefore sum exactly to num_visible and the masked ones to G*N - num_visible.
* eq. 6: region c gets m * w_c n_c / sum_c' w_c' n_c' masked patches with the same rounding rule,
  capped at its size n_c; random inside the region.
* eq. 8: floor(alpha * m) masked patches on objects (alpha = 0.75 by default), the rest on the
  background; if objects have fewer patches than asked, all of them are masked and the rest goes to
  the background; if the background is too small, the overflow goes back to objects.
* eq. 10-11: scores alpha_S*M_SG + alpha_I*M_IG + (1-alpha_S-alpha_I)*M_RD, then the m highest
  scores are masked, ties broken uniformly at random (random permutation, then a stable sort).
  Read literally (``blend="topk"``) this is a hard switch: the three maps are binary with m ones
  each, so the strategy whose weight exceeds 1/2 wins outright. ``blend="count"`` (default) blends
  in count space: floor(a_S m + 1/2) patches drawn from M_SG, floor(a_I m + 1/2) from M_IG (not
  yet taken), the rest from M_RD (not yet taken); ``blend="sample"`` gives each mask one strategy
  drawn with probabilities (a_S, a_I, a_R). All three equal eq. 10-11 at the endpoints (one weight
  1). Reasoning and a plot of the realised composition: docs/MODEL.md.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

STRATEGIES = ("sg", "ig", "rd")
BLENDS = ("count", "topk", "sample")  # curriculum blend rules, default first (docs/MODEL.md)
SCHEDULES = ("sg-ig-rd", "ig-sg-rd", "rd-ig-sg", "rd", "ig", "sg")
# Knots of the piecewise-linear curriculum: the 1st strategy has weight 1 on [k0, k1], fades
# linearly into the 2nd until k2, which fades into the 3rd until k3, which holds to k4 (=1).
DEFAULT_KNOTS = (0.0, 1 / 6, 1 / 2, 5 / 6, 1.0)


# ---------------------------------------------------------------------------------------- schedule
def schedule_weights(schedule: str, progress: float,
                     knots: Sequence[float] = DEFAULT_KNOTS) -> Tuple[float, float, float]:
    """(alpha_S, alpha_I, alpha_R) at training progress p in [0, 1] (Fig. 3 curriculum).

    For "sg-ig-rd" with the default knots: SG alone until p=1/6, SG->IG linear crossfade until 1/2
    (equal at 1/3), IG->RD crossfade until 5/6 (equal at 2/3), RD alone after. Single strategies
    ("rd", "ig", "sg") are constant. The three weights always sum to 1.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown masking schedule {schedule!r}; choose one of {SCHEDULES}")
    p = min(max(float(progress), 0.0), 1.0)
    order = schedule.split("-")
    w = dict.fromkeys(STRATEGIES, 0.0)
    if len(order) == 1:
        w[order[0]] = 1.0
    else:
        k = list(knots)
        if len(k) != 5 or any(b < a for a, b in zip(k, k[1:])):
            raise ValueError(f"schedule knots must be 5 non-decreasing values, got {knots}")
        ys = ((1, 1, 0, 0, 0), (0, 0, 1, 0, 0), (0, 0, 0, 1, 1))
        for name, y in zip(order, ys):
            w[name] = _interp(p, k, y)
    return w["sg"], w["ig"], w["rd"]


def _interp(p: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    if p <= xs[0]:
        return float(ys[0])
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if p <= x1:
            return float(y1 if x1 == x0 else y0 + (y1 - y0) * (p - x0) / (x1 - x0))
    return float(ys[-1])


# ------------------------------------------------------------------------------------- primitives
def _rand(shape, device, generator):
    return torch.rand(shape, device=device, generator=generator)


_RAND_BITS = 31


def _rand_int(shape, device, generator):
    return torch.randint(0, 2 ** _RAND_BITS, shape, device=device, generator=generator)


def _order_by_key(key: torch.Tensor, generator=None, descending: bool = False) -> torch.Tensor:
    """Column order of each row by an integer key (int64 >= 0), ties in uniformly random order:
    one sort of ``key * 2^31 + random``."""
    rnd = _rand_int(key.shape, key.device, generator)
    full = key.long() * (2 ** _RAND_BITS) + rnd
    return full.argsort(dim=1, descending=descending)


def _first_k(order: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Mask of the columns at the first k[r] places of ``order``."""
    ar = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty(order.shape, dtype=torch.bool, device=order.device).scatter_(
        1, order, ar < k.unsqueeze(1))


def rank_random(scores: torch.Tensor, generator=None, descending: bool = True) -> torch.Tensor:
    """Rank of every column in its row by score (0 = highest), ties broken uniformly at random."""
    order = _order_by_key(_dense_levels(scores, descending), generator)
    ar = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, ar)


def _dense_levels(scores: torch.Tensor, descending: bool = True) -> torch.Tensor:
    """Integer level per entry, 0 for the best score of the row; equal scores share a level."""
    srt = scores.sort(dim=1, descending=descending).values
    new = torch.ones_like(srt, dtype=torch.long)
    new[:, 1:] = (srt[:, 1:] != srt[:, :-1]).long()
    lev_sorted = new.cumsum(1) - 1
    # level of each entry = level of its value in the sorted row (searchsorted on the sorted row)
    key = -srt if descending else srt
    q = -scores if descending else scores
    pos = torch.searchsorted(key.contiguous(), q.contiguous())
    return lev_sorted.gather(1, pos)


def topk_mask(scores: torch.Tensor, k: torch.Tensor, generator=None) -> torch.Tensor:
    """eq. (11): mask the k[r] highest-scoring columns of each row r (ties at random)."""
    return _first_k(_order_by_key(_dense_levels(scores), generator), k)


def allocate(total: torch.Tensor, weights: torch.Tensor, capacity: torch.Tensor,
             generator=None) -> torch.Tensor:
    """Split integer ``total[r]`` over K bins proportionally to ``weights[r]`` with ``capacity[r]``.

    Water-filling of the float shares at the capacities, then floor + largest remainder (random
    tie-break). Returns (R, K) int64 that sums exactly to ``total`` with 0 <= out <= capacity
    (requires total <= capacity.sum(1)).
    """
    cap = capacity.to(torch.float64)
    w = weights.to(torch.float64) * (cap > 0)
    tot = total.to(torch.float64).unsqueeze(1)
    x = torch.zeros_like(cap)
    for _ in range(weights.shape[1] + 1):  # each pass saturates at least one bin; usually 1-2
        need = tot - x.sum(1, keepdim=True)
        if not bool((need > 1e-6).any()):
            break
        room = x < cap
        wf = w * room
        # all weighted bins full: spread what is left over the bins with room (zero-weight classes)
        wf = torch.where(wf.sum(1, keepdim=True) > 0, wf, room.to(wf))
        x = torch.minimum(x + need.clamp_min(0) * wf / wf.sum(1, keepdim=True).clamp_min(1e-300), cap)
    base = x.floor().clamp(max=cap)
    rem = (total - base.sum(1).round().long()).clamp(min=0)
    # largest remainder first; remainders equal to 2^-20 are ties (broken at random); full bins last
    q = ((x - base) * 2 ** 20).floor().long().clamp(0, 2 ** 20 - 1) + 1
    q = torch.where(base < cap, q, 0)
    out = base.long() + _first_k(_order_by_key(q, generator, descending=True), rem).long()
    return torch.minimum(out, capacity.long())


def dirichlet_masked_counts(batch: int, granularities: int, num_patches: int, num_visible: int,
                            alpha: float = 1.0, device=None, generator=None) -> torch.Tensor:
    """Masked count per (sample, granularity), (B, G) int64, summing to G*N - num_visible.

    The Dirichlet shares split the *visible* budget (as MultiMAE): v_g = r_g * num_visible, capped
    at N, rounded by largest remainder, and m_g = N - v_g. (Splitting the masked budget 490 instead
    would cap at N and fully mask some granularity in ~96% of samples for the default 98/588.)
    """
    G, N = granularities, num_patches
    if not 0 <= num_visible <= G * N:
        raise ValueError(f"num_visible={num_visible} must be in [0, {G * N}] for {G} x {N} tokens")
    if alpha == 1.0:  # Dirichlet(1) = normalised Exp(1) draws; reproducible with a generator
        g = -torch.log(_rand((batch, G), device, generator).clamp_min(1e-12))
    else:
        conc = torch.full((batch, G), float(alpha), device=device)
        g = torch.distributions.Gamma(conc, torch.ones_like(conc)).sample()
    shares = g / g.sum(1, keepdim=True)
    total = torch.full((batch,), num_visible, device=device, dtype=torch.long)
    cap = torch.full((batch, G), N, device=device, dtype=torch.long)
    return N - allocate(total, shares, cap, generator)


def in_region_mask(region: torch.Tensor, counts: torch.Tensor, generator=None) -> torch.Tensor:
    """Mask ``counts[r, c]`` random patches among those of row r with ``region == c``."""
    R, N = region.shape
    K = counts.shape[1]
    order = _order_by_key(region, generator)  # grouped by region, random inside
    reg_sorted = region.gather(1, order)
    sizes = torch.zeros(R, K, dtype=torch.long, device=region.device)
    sizes.scatter_add_(1, region, torch.ones_like(region))
    start = sizes.cumsum(1) - sizes
    pos = torch.arange(N, device=region.device).expand(R, N)
    masked_sorted = (pos - start.gather(1, reg_sorted)) < counts.gather(1, reg_sorted)
    return torch.empty_like(masked_sorted).scatter_(1, order, masked_sorted)


# ---------------------------------------------------------------------------------- patch labels
def _patch_pixels(m: torch.Tensor, grid: int) -> torch.Tensor:
    """B x H x W -> B x N x (pixels per patch)."""
    B, H, W = m.shape
    if H != W or H % grid:
        raise ValueError(f"map of size {H}x{W} does not split into a {grid}x{grid} patch grid")
    s = H // grid
    return m.reshape(B, grid, s, grid, s).permute(0, 1, 3, 2, 4).reshape(B, grid * grid, s * s)


def semantic_patch_labels(semantic: torch.Tensor, grid: int, num_classes: int) -> torch.Tensor:
    """Majority class per patch (B x N, 0..num_classes; num_classes = unlabeled / 255)."""
    px = _patch_pixels(semantic, grid)
    px = torch.where((px >= 0) & (px < num_classes), px, num_classes)
    hist = torch.zeros(*px.shape[:2], num_classes + 1, device=px.device, dtype=torch.int32)
    hist.scatter_add_(2, px, torch.ones_like(px, dtype=torch.int32))
    return hist.argmax(2)  # argmax returns the first maximum: smallest index wins ties


def object_patches(instance: torch.Tensor, grid: int) -> torch.Tensor:
    """True where at least half of the patch's instance pixels are non-background (B x N)."""
    px = _patch_pixels(instance, grid)
    return (px != 0).sum(2) * 2 >= px.shape[2]


# ---------------------------------------------------------------------------------- strategies
def random_mask(counts: torch.Tensor, num_patches: int, generator=None) -> torch.Tensor:
    """eq. (9): counts[r] uniformly random masked patches per row."""
    order = _rand((counts.shape[0], num_patches), counts.device, generator).argsort(dim=1)
    return _first_k(order, counts)


def semantic_guided_mask(labels: torch.Tensor, counts: torch.Tensor, num_regions: int,
                         class_weights: Optional[torch.Tensor] = None, generator=None):
    """eq. (5)-(6): masked count per semantic region proportional to w_c * area, random inside."""
    R = labels.shape[0]
    sizes = torch.zeros(R, num_regions, dtype=torch.long, device=labels.device)
    sizes.scatter_add_(1, labels, torch.ones_like(labels))
    w = sizes.to(torch.float64)
    if class_weights is not None:
        w = w * class_weights.to(w)[:num_regions]
    per_region = allocate(counts, w, sizes, generator)
    return in_region_mask(labels, per_region, generator)


def instance_guided_mask(is_object: torch.Tensor, counts: torch.Tensor, alpha: float = 0.75,
                         generator=None) -> torch.Tensor:
    """eq. (7)-(8): floor(alpha * m) masked on object patches, the rest on the background."""
    n_obj = is_object.sum(1)
    n_bg = is_object.shape[1] - n_obj
    m_obj = torch.minimum(torch.floor(alpha * counts.double()).long(), n_obj)
    m_bg = torch.minimum(counts - m_obj, n_bg)
    m_obj = counts - m_bg  # background too small: the overflow goes back to objects
    return in_region_mask(is_object.long(), torch.stack([m_bg, m_obj], 1), generator)


def blend_mask(counts: torch.Tensor, alphas: Tuple[float, float, float],
               sg: Optional[torch.Tensor], ig: Optional[torch.Tensor], rd: Optional[torch.Tensor],
               generator=None) -> torch.Tensor:
    """eq. (10) scores, eq. (11) top-k. Strategies with zero weight may be passed as None."""
    present = [(a, m) for a, m in zip(alphas, (sg, ig, rd)) if a > 0]
    if len(present) == 1:
        return present[0][1].clone()
    # each patch's score is a sum of a subset of the weights: rank the 2^S subsets once, so that
    # the per-patch key is a small integer level (equal scores -> equal level -> random order)
    S = len(present)
    combo = sum(m.long() << i for i, (_, m) in enumerate(present))
    subset_scores = torch.tensor([sum(a for i, (a, _) in enumerate(present) if c >> i & 1)
                                  for c in range(2 ** S)], dtype=torch.float64)
    level = (subset_scores.unsqueeze(0) > subset_scores.unsqueeze(1)).sum(1)  # 0 = best
    return _first_k(_order_by_key(level.to(combo.device)[combo], generator), counts)


def _take_from(source: torch.Tensor, taken: torch.Tensor, k: torch.Tensor, generator=None):
    """k[r] random patches of row r that are in ``source`` and not yet ``taken``."""
    avail = source & ~taken
    return _first_k(_order_by_key((~avail).long(), generator), torch.minimum(k, avail.sum(1)))


def count_blend_mask(counts: torch.Tensor, alphas: Tuple[float, float, float],
                     sg: Optional[torch.Tensor], ig: Optional[torch.Tensor],
                     rd: Optional[torch.Tensor], generator=None) -> torch.Tensor:
    """Count-space curriculum blend: round(a_S m) masked patches from M_SG, round(a_I m) from M_IG,
    the remaining m - k_S - k_I from M_RD, without overlap (eq. 10's weights read as shares of the
    masked budget). With one weight 1 it returns that strategy's mask, as eq. (10)-(11)."""
    a_s, a_i, _ = alphas
    k_s = torch.floor(a_s * counts.double() + 0.5).long() if sg is not None else counts * 0
    k_i = torch.floor(a_i * counts.double() + 0.5).long() if ig is not None else counts * 0
    k_s = torch.minimum(k_s, counts)
    k_i = torch.minimum(k_i, counts - k_s)
    taken = torch.zeros(counts.shape[0], (sg if sg is not None else ig if ig is not None
                                          else rd).shape[1], dtype=torch.bool, device=counts.device)
    for src, k in ((sg, k_s), (ig, k_i)):
        if src is not None:
            taken |= _take_from(src, taken, k, generator)
    # the rest: M_RD's patches not yet taken (|M_RD \ taken| >= m - k_S - k_I), random if absent
    rest = counts - taken.sum(1)
    src = rd if rd is not None else torch.ones_like(taken)
    taken |= _take_from(src, taken, rest, generator)
    return taken


def sample_blend_mask(counts: torch.Tensor, alphas: Tuple[float, float, float],
                      sg: Optional[torch.Tensor], ig: Optional[torch.Tensor],
                      rd: Optional[torch.Tensor], generator=None) -> torch.Tensor:
    """Per-mask mixing: each row is M_SG, M_IG or M_RD with probabilities (a_S, a_I, a_R)."""
    present = [(a, m) for a, m in zip(alphas, (sg, ig, rd)) if a > 0]
    p = torch.tensor([a for a, _ in present], dtype=torch.float64, device=counts.device)
    u = _rand((counts.shape[0], 1), counts.device, generator).double()
    pick = (u > p.cumsum(0)[:-1].unsqueeze(0) / p.sum()).sum(1)  # index of the drawn strategy
    out = present[0][1].clone()
    for j, (_, m) in enumerate(present[1:], 1):
        out = torch.where((pick == j).unsqueeze(1), m, out)
    return out


_BLEND_FNS = {"count": count_blend_mask, "topk": blend_mask, "sample": sample_blend_mask}


# ---------------------------------------------------------------------------------- generator
class ProgressiveMasking:
    """Per-granularity masks for a batch, driven only by the training progress.

    ``__call__(semantic, instance, progress)`` -> {granularity: B x N bool, True = masked}. The
    maps guide the masks of every granularity (SG uses ``semantic``, IG uses ``instance``); a guide
    map that is missing from the batch turns its strategy into random masking.
    """

    def __init__(self, granularities: Sequence[str], grid: int = 14, num_visible: int = 98,
                 schedule: str = "sg-ig-rd", knots: Sequence[float] = DEFAULT_KNOTS,
                 instance_alpha: float = 0.75, num_semantic: int = 133,
                 class_weights: Optional[Sequence[float]] = None, dirichlet_alpha: float = 1.0,
                 blend: str = "count"):
        schedule_weights(schedule, 0.0, knots)  # validates name and knots
        if blend not in BLENDS:
            raise ValueError(f"unknown masking blend {blend!r}; choose one of {BLENDS}")
        self.blend = blend
        if not 0.5 < instance_alpha <= 1.0:
            raise ValueError(f"instance_alpha must be in (0.5, 1], got {instance_alpha}")
        self.granularities = tuple(granularities)
        self.grid, self.num_patches = grid, grid * grid
        self.num_visible, self.schedule, self.knots = num_visible, schedule, tuple(knots)
        self.instance_alpha, self.num_semantic = instance_alpha, num_semantic
        self.dirichlet_alpha = dirichlet_alpha
        self.class_weights = None
        if class_weights is not None:
            cw = torch.as_tensor(class_weights, dtype=torch.float64)
            if cw.numel() == num_semantic:  # unlabeled region keeps weight 1
                cw = torch.cat([cw, cw.new_ones(1)])
            if cw.numel() != num_semantic + 1 or (cw < 0).any():
                raise ValueError(f"class_weights needs {num_semantic} non-negative values")
            self.class_weights = cw

    def __call__(self, semantic: Optional[torch.Tensor], instance: Optional[torch.Tensor],
                 progress: float, batch_size: Optional[int] = None, device=None,
                 generator=None) -> Dict[str, torch.Tensor]:
        ref = semantic if semantic is not None else instance
        B = batch_size if ref is None else ref.shape[0]
        device = device if ref is None else ref.device
        G, N = len(self.granularities), self.num_patches
        counts = dirichlet_masked_counts(B, G, N, self.num_visible, self.dirichlet_alpha,
                                         device, generator).reshape(B * G)
        a_s, a_i, a_r = schedule_weights(self.schedule, progress, self.knots)
        if semantic is None:
            a_s, a_r = 0.0, a_r + a_s
        if instance is None:
            a_i, a_r = 0.0, a_r + a_i
        sg = ig = rd = None
        if a_s > 0:
            lab = semantic_patch_labels(semantic, self.grid, self.num_semantic)
            lab = lab.repeat_interleave(G, 0)
            sg = semantic_guided_mask(lab, counts, self.num_semantic + 1, self.class_weights, generator)
        if a_i > 0:
            obj = object_patches(instance, self.grid).repeat_interleave(G, 0)
            ig = instance_guided_mask(obj, counts, self.instance_alpha, generator)
        if a_r > 0:
            rd = random_mask(counts, N, generator)
        masks = [sg, ig, rd]
        if sum(a > 0 for a in (a_s, a_i, a_r)) == 1:  # a single strategy: it is the mask itself
            mask = next(m for m, a in zip(masks, (a_s, a_i, a_r)) if a > 0)
        else:
            mask = _BLEND_FNS[self.blend](counts, (a_s, a_i, a_r), sg, ig, rd, generator)
        mask = mask.reshape(B, G, N)
        return {g: mask[:, i] for i, g in enumerate(self.granularities)}
