"""C2FMAE: multi-granular MAE over semantic, instance and RGB tokens (paper section III).

``build_model(name, **overrides)`` -> :class:`C2FMAE`. The encoder is a stock timm ViT
(``model.encoder``); ``model.adapters`` embed each granularity (eq. 1); ``model.masking`` draws the
progressive masks (eq. 5-11); ``model.decoder`` is the cascaded decoder (eq. 2-4) or, for the
``mae_*`` baseline, MAE's decoder; ``compute_losses`` is eq. (12).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
import torch.nn as nn

from model.network.adapters import (MapAdapter, MapHead, RGBAdapter, RGBHead, init_weights,
                                    unpatchify, patchify)
from model.network.config import GRANULARITIES, MODEL_CONFIGS, C2FMAEConfig, model_config
from model.network.decoder import CascadeDecoder
from model.network.encoder import EncoderAPI, build_encoder, run_blocks
from model.network.losses import masked_cross_entropy, masked_mse, rgb_target
from model.network.mae import MAEDecoder
from model.network.masking import ProgressiveMasking, random_mask

__all__ = ["C2FMAE", "C2FMAEConfig", "build_model", "MODEL_CONFIGS", "GRANULARITIES"]


def build_model(name: str, **overrides) -> "C2FMAE":
    """A model by name (``c2fmae_vit_{base,small,tiny,test}``, ``mae_vit_{base,small,tiny,test}``)
    with any :class:`C2FMAEConfig` field overridden."""
    return C2FMAE(model_config(name, **overrides))


class C2FMAE(EncoderAPI, nn.Module):
    def __init__(self, config: C2FMAEConfig):
        super().__init__()
        c = self.config = config
        self.N, D = c.num_patches, c.embed_dim
        self.inputs = tuple(g for g in GRANULARITIES if g in c.inputs)
        self.tasks = tuple(c.task_order)
        self.granularities = tuple(g for g in GRANULARITIES if g in c.inputs or g in c.task_order)
        self.encoder = build_encoder(c.img_size, c.patch_size, D, c.depth, c.num_heads, c.mlp_ratio,
                                     c.drop_path_rate)
        px = c.patch_size // c.mask_stride
        classes = {"semantic": c.num_semantic, "instance": c.max_instances + 1}
        self.adapters = nn.ModuleDict({
            g: RGBAdapter(self.encoder.patch_embed) if g == "rgb"
            else MapAdapter(g, classes[g], c.map_embed_dim, D, px) for g in self.inputs})
        # learned embedding per granularity (the MAE baseline has none)
        self.gran_embed = nn.ParameterDict({} if c.arch == "mae" else {
            g: nn.Parameter(torch.zeros(1, 1, D)) for g in self.inputs})
        self.masking = ProgressiveMasking(
            self.inputs, c.grid, c.num_visible, c.masking_schedule, c.schedule_knots,
            c.instance_alpha, c.num_semantic, c.semantic_class_weights, c.dirichlet_alpha,
            c.masking_blend)
        if c.arch == "mae":
            if self.inputs != ("rgb",) or self.tasks != ("rgb",):
                raise ValueError("arch='mae' is the RGB-only baseline: inputs and task_order must be ['rgb']")
            self.decoder = MAEDecoder(D, c.decoder_dim, c.decoder_heads, c.decoder_depth, c.grid,
                                      c.mlp_ratio)
        else:
            self.decoder = CascadeDecoder(D, c.decoder_dim, c.decoder_heads, c.decoder_depth,
                                          self.granularities, self.tasks, c.grid, c.decoder_mode,
                                          c.mlp_ratio)
        pp = c.patch_size // c.pred_stride
        self.heads = nn.ModuleDict({
            t: RGBHead(c.decoder_dim, c.patch_size) if t == "rgb"
            else MapHead(c.decoder_dim, classes[t], pp) for t in self.tasks})
        # input token index (granularity-major over self.inputs) -> decoder sequence index
        off = torch.tensor([self.granularities.index(g) for g in self.inputs]) * self.N
        self.register_buffer("_in2dec", (off[:, None] + torch.arange(self.N)).reshape(-1),
                             persistent=False)
        self.apply(init_weights)  # MAE init: xavier linears, flattened-xavier patch convs
        for p in self.gran_embed.values():
            nn.init.normal_(p, std=0.02)

    # ------------------------------------------------------------------ tokens and masks
    def rgb_position(self) -> torch.Tensor:
        pos = self.encoder.pos_embed[:, 1:]
        return pos + self.gran_embed["rgb"] if "rgb" in self.gran_embed else pos

    def _batch_size(self, batch: Mapping) -> tuple:
        for g in GRANULARITIES:
            if batch.get(g) is not None:
                return batch[g].shape[0], batch[g].device
        raise ValueError(f"batch holds none of {GRANULARITIES}")

    def sample_masks(self, batch: Mapping, progress: float = 0.0, generator=None):
        """Training masks of the input granularities ({g: B x N bool, True = masked})."""
        B, dev = self._batch_size(batch)
        return self.masking(batch.get("semantic"), batch.get("instance"), progress, B, dev, generator)

    def _complete(self, mask: Mapping, B: int, dev) -> Dict[str, torch.Tensor]:
        """Masks for every decoder granularity; those that are no input are fully masked."""
        out = {}
        for g in self.granularities:
            m = mask.get(g)
            if m is None:
                if g in self.inputs:
                    raise ValueError(f"mask for input granularity {g!r} is missing")
                m = torch.ones(B, self.N, dtype=torch.bool, device=dev)
            elif tuple(m.shape) != (B, self.N) or m.dtype != torch.bool:
                raise ValueError(f"mask[{g!r}] must be a {B}x{self.N} bool tensor, got "
                                 f"{tuple(m.shape)} {m.dtype}")
            elif g not in self.inputs and not bool(m.all()):
                raise ValueError(f"{g!r} is no input of this model; it can only be fully masked")
            out[g] = m
        return out

    def _visible_tokens(self, batch: Mapping, mask: Mapping):
        """Rectangular gather of the visible tokens: (B x V x D tokens, B x V input indices)."""
        B, dev = self._batch_size(batch)
        toks = []
        for g in self.inputs:
            x = batch.get(g)
            if x is None:
                if not bool(mask[g].all()):
                    raise ValueError(f"batch has no {g!r} but its mask leaves patches visible")
                toks.append(torch.zeros(B, self.N, self.config.embed_dim, device=dev))
                continue
            self._check_size(g, x)
            pos = self.rgb_position() if g == "rgb" else \
                self.encoder.pos_embed[:, 1:] + self.gran_embed[g]
            toks.append(self.adapters[g](x) + pos)
        tokens = torch.cat(toks, dim=1)
        m = torch.cat([mask[g] for g in self.inputs], dim=1)
        nvis = (~m).sum(1)
        if bool((nvis != nvis[0]).any()):
            raise ValueError(f"visible token counts differ across the batch: {nvis.tolist()}")
        ids = m.to(torch.int8).argsort(dim=1, stable=True)[:, :int(nvis[0])]  # visible, in order
        return tokens.gather(1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])), ids

    def _check_size(self, g: str, x: torch.Tensor) -> None:
        c = self.config
        want = (3, c.img_size, c.img_size) if g == "rgb" else (c.img_size // c.mask_stride,) * 2
        if tuple(x.shape[1:]) != want:
            raise ValueError(f"batch[{g!r}] has shape {tuple(x.shape)}; expected B x "
                             f"{' x '.join(map(str, want))}")

    # ------------------------------------------------------------------ forward
    def encode(self, batch: Mapping, visible: Optional[Mapping] = None) -> torch.Tensor:
        """Encoder tokens B x (1+V) x D (class token first, then the visible tokens granularity by
        granularity in semantic, instance, rgb order, raster order inside). ``visible`` as in
        :meth:`reconstruct`; None = every input granularity present in the batch fully visible."""
        if visible is None:
            visible = {g: "all" if batch.get(g) is not None else "none" for g in self.inputs}
        mask = self.masks_from_visible(batch, visible)
        tokens, _ = self._visible_tokens(batch, mask)
        return run_blocks(self.encoder, tokens)

    def _predict(self, batch: Mapping, mask: Mapping) -> Dict[str, torch.Tensor]:
        tokens, ids = self._visible_tokens(batch, mask)
        x = self.encoder.fc_norm(run_blocks(self.encoder, tokens))  # pretraining: token-wise LN
        pos = self._in2dec[ids]
        feats = self.decoder(x, pos) if self.config.arch == "mae" else self.decoder(x[:, 1:], pos)
        return {t: self.heads[t](feats[t]) for t in self.tasks}

    def forward(self, batch: Mapping, progress: float = 0.0, mask: Optional[Mapping] = None,
                generator: Optional[torch.Generator] = None) -> dict:
        """Masked pretraining step: masks from the curriculum at ``progress`` (or ``mask``)."""
        B, dev = self._batch_size(batch)
        if mask is None:
            mask = self.sample_masks(batch, progress, generator)
        mask = self._complete(mask, B, dev)
        pred = self._predict(batch, mask)
        losses = self.compute_losses(pred, batch, mask)
        w = self.config.loss_weights
        loss = sum(w[t] * losses[t] for t in self.tasks)
        return {"loss": loss, "losses": {t: v.detach() for t, v in losses.items()},
                "pred": pred, "mask": mask}

    def compute_losses(self, pred: Mapping, batch: Mapping, mask: Mapping) -> Dict[str, torch.Tensor]:
        """eq. (12) terms, each over masked positions only: CE (ignore 255) for the maps, MSE on
        per-patch normalised pixels for RGB (``norm_pix_loss``)."""
        out = {}
        for t in self.tasks:
            if batch.get(t) is None:
                raise ValueError(f"batch has no {t!r} target for the {t} task")
            if t == "rgb":
                tgt = rgb_target(batch["rgb"], self.config.patch_size, self.config.norm_pix_loss)
                out[t] = masked_mse(pred[t], tgt, mask[t])
            else:
                out[t] = masked_cross_entropy(pred[t], batch[t], mask[t], t)
        return out

    # ------------------------------------------------------------------ inference
    def masks_from_visible(self, batch: Mapping, visible: Mapping,
                           generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """{g: "all" | "none" | float visible ratio | B x N bool (True = masked)} -> masks.
        Granularities left out of ``visible`` are fully masked."""
        B, dev = self._batch_size(batch)
        unknown = set(visible) - set(GRANULARITIES)
        if unknown:
            raise ValueError(f"visible has unknown granularities {sorted(unknown)}")
        out = {}
        for g in self.granularities:
            spec = visible.get(g, "none")
            if isinstance(spec, torch.Tensor):
                m = spec.to(device=dev)
            elif isinstance(spec, str) and spec in ("all", "none"):
                m = torch.full((B, self.N), spec == "none", dtype=torch.bool, device=dev)
            elif isinstance(spec, (float, int)) and not isinstance(spec, bool) and 0 <= spec <= 1:
                k = torch.full((B,), self.N - round(spec * self.N), dtype=torch.long, device=dev)
                m = random_mask(k, self.N, generator)
            else:
                raise ValueError(f"visible[{g!r}]={spec!r}: use 'all', 'none', a ratio in [0, 1] "
                                 f"or a B x N bool mask (True = masked)")
            out[g] = m
        return self._complete(out, B, dev)

    @torch.no_grad()
    def reconstruct(self, batch: Mapping, visible: Optional[Mapping] = None,
                    generator: Optional[torch.Generator] = None) -> dict:
        """Predict every task from the given visible subsets (Figs. 4-6).

        Returns {"semantic"/"instance": B x H x W int64 argmax at the prediction stride,
        "rgb": B x 3 x S x S in the input's normalised space, "mask": the masks used}. With
        ``norm_pix_loss`` the per-patch normalisation is undone with each visible patch's own
        mean/std and, for masked patches, the average of the visible patches' mean/std (0 and 1
        when no RGB patch is visible)."""
        visible = {g: "all" for g in self.inputs} if visible is None else visible
        mask = self.masks_from_visible(batch, visible, generator)
        nvis = sum((~mask[g]).sum(1) for g in self.inputs)
        if bool((nvis == nvis[0]).all()):
            pred = self._predict(batch, mask)
        else:  # unequal visible counts: one sample at a time (inference only)
            parts = [self._predict({k: v[i:i + 1] for k, v in batch.items()
                                    if isinstance(v, torch.Tensor)},
                                   {g: m[i:i + 1] for g, m in mask.items()})
                     for i in range(nvis.shape[0])]
            pred = {t: torch.cat([p[t] for p in parts]) for t in self.tasks}
        out = {t: pred[t].argmax(1) for t in self.tasks if t != "rgb"}
        if "rgb" in pred:
            out["rgb"] = self._pixels(pred["rgb"], batch.get("rgb"), mask["rgb"])
        out["mask"] = mask
        return out

    def _pixels(self, pred: torch.Tensor, rgb: Optional[torch.Tensor], mask: torch.Tensor):
        p, c = pred.float(), self.config
        if c.norm_pix_loss:
            mean = torch.zeros(p.shape[:2], device=p.device)
            std = torch.ones_like(mean)
            if rgb is not None:
                t = patchify(rgb.float(), c.patch_size)
                pm, ps = t.mean(-1), (t.var(-1) + 1e-6).sqrt()
                vis = (~mask).float()
                n = vis.sum(1, keepdim=True)
                avg_m = torch.where(n > 0, (pm * vis).sum(1, keepdim=True) / n.clamp_min(1), 0.0)
                avg_s = torch.where(n > 0, (ps * vis).sum(1, keepdim=True) / n.clamp_min(1), 1.0)
                mean = torch.where(mask, avg_m, pm)
                std = torch.where(mask, avg_s, ps)
            p = p * std.unsqueeze(-1) + mean.unsqueeze(-1)
        return unpatchify(p, c.patch_size)
