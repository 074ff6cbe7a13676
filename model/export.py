"""Export a pretraining checkpoint's encoder as a timm ViT state dict in safetensors.

    python -m model.export OUTPUT_DIR/last.pt encoder.safetensors

The file loads into ``timm.create_model(name, num_classes=0, global_pool="avg", **kwargs)`` with
no missing or unexpected keys and gives the same features as ``C2FMAE.rgb_features`` (all RGB
patches visible; the RGB granularity embedding is folded into ``pos_embed``). ``name`` and
``kwargs`` are stored in the file's metadata (``timm_model``, ``timm_kwargs`` as JSON), so

    from model.export import create_timm_model
    vit = create_timm_model("encoder.safetensors")

or by hand, with only timm and safetensors:

    meta = safetensors.safe_open(path, "pt").metadata()
    vit = timm.create_model(meta["timm_model"], **json.loads(meta["timm_kwargs"]))
    vit.load_state_dict(safetensors.torch.load_file(path))
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import uuid

from model.pretraining import checkpoint as ckpt

META_FORMAT = "c2fmae-encoder"


def encoder_metadata(model) -> "dict[str, str]":
    name, kwargs = model.timm_encoder_name()
    return {"format": META_FORMAT, "timm_model": name, "timm_kwargs": json.dumps(kwargs),
            "num_classes": "0", "global_pool": "avg",
            "model_config": json.dumps(ckpt.model_config_dict(model) or {})}


def export_model(model, out_path: str, extra_meta: "dict[str, str] | None" = None) -> dict:
    """Write ``model``'s encoder to ``out_path`` (atomically); returns the metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.export_encoder_state_dict().items()}
    meta = {**encoder_metadata(model), **(extra_meta or {})}
    d = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(out_path)}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        save_file(state, tmp, metadata=meta)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return meta


def export_checkpoint(checkpoint_path: str, out_path: str) -> dict:
    """Rebuild the model of a pretraining checkpoint (``weights_only`` load) and export it."""
    ck = ckpt.load(checkpoint_path)
    model = ckpt.build_from_checkpoint(ck)
    return export_model(model, out_path, {"source_checkpoint": os.path.basename(checkpoint_path),
                                          "global_step": str(ck.get("global_step", ""))})


def create_timm_model(path: str, **overrides):
    """The timm ViT described by an exported file's metadata, with its weights loaded (strict).
    ``overrides`` go to ``timm.create_model`` (e.g. ``num_classes=1000`` adds a fresh head, then
    loading is non-strict for the head only)."""
    import timm
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != META_FORMAT:
        raise ValueError(f"{path} is not a C2FMAE encoder export (metadata format "
                         f"{meta.get('format')!r})")
    kwargs = {"num_classes": 0, "global_pool": "avg", **json.loads(meta["timm_kwargs"]),
              **overrides}
    model = timm.create_model(meta["timm_model"], **kwargs)
    state = load_file(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ValueError(f"{path} does not fit {meta['timm_model']}: missing {missing}, "
                         f"unexpected {unexpected}")
    return model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="pretraining checkpoint (last.pt / checkpoint-EEEE.pt)")
    p.add_argument("out", help="output .safetensors file")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        meta = export_checkpoint(args.checkpoint, args.out)
    except (ckpt.CheckpointError, KeyError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    extra = {k: v for k, v in json.loads(meta["timm_kwargs"]).items()
             if k not in ("num_classes", "global_pool")}
    print(f"wrote {args.out}: timm.create_model({meta['timm_model']!r}, num_classes=0, "
          f"global_pool='avg', **{extra})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
