"""``c2fmae-data demo``: the whole path on an embedded default, offline, on a CPU.

1. images: ``../shared/data/imagenet-sample`` when it is beside the checkout, else a few photos that
   scikit-image ships, laid out as ``train/<wnid>/*.JPEG`` under OUT/images;
2. labels: the Ray labeling pipeline with the ``tiny-random`` models (random weights: the labels are
   PLACEHOLDERS that exercise the machinery, not pseudo-labels to train on);
3. real ground truth too, when ``../shared/data/coco-tiny`` is there: ``convert-coco``;
4. ``verify --full`` and ``inspect --grid`` on each dataset; one batch through ``ImageNetMultiGranular``
   with a 2-worker DataLoader;
5. a few minutes of C2FMAE pretraining (test size) with its reconstruction panels, then the encoder
   exported to a timm-loadable safetensors file.

Pretraining runs as a ``python -m model.pretrain`` child process: pipelines never import model.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# scikit-image photo -> an ImageNet lemma naming what it shows
SKIMAGE_PHOTOS = {"chelsea": "tabby", "coffee": "espresso", "rocket": "missile",
                  "camera": "tripod", "clock": "wall clock", "stereo_motorcycle": "moped"}


def default_shared() -> Path:
    env = os.environ.get("C2FMAE_SHARED_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[1]
    for cand in (Path.cwd().parent / "shared" / "data", here.parent / "shared" / "data"):
        if cand.exists():
            return cand
    return here.parent / "shared" / "data"


def skimage_folder(dest: Path) -> Path:
    """Write scikit-image's shipped photos as an ImageNet-layout folder under ``dest``."""
    import numpy as np
    from PIL import Image
    from skimage import data

    from c2fmae_data.categories import imagenet_lemmas, imagenet_wnids

    by_lemma = {lem.lower(): i for i, lems in enumerate(imagenet_lemmas()) for lem in lems}
    for name, lemma in SKIMAGE_PHOTOS.items():
        img = getattr(data, name)()
        img = img[0] if isinstance(img, tuple) else img
        wnid = imagenet_wnids()[by_lemma[lemma]]
        d = dest / "train" / wnid
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(img)).save(d / f"skimage_{name}.JPEG", quality=92)
    return dest


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def check_verify(root: str, imagenet_root: "str | None") -> None:
    from c2fmae_data.verify import verify

    rep = verify(root, imagenet_root=imagenet_root, full=True)
    print(rep.text(), flush=True)
    if not rep.ok:
        raise SystemExit(f"demo: verify failed on {root}")


def show(root: str, grid: Path, imagenet_root: "str | None") -> None:
    from c2fmae_data.inspection import dataset_stats, draw_grid, format_stats

    print(format_stats(dataset_stats(root)), flush=True)
    draw_grid(root, str(grid), n=8, imagenet_root=imagenet_root)
    print(f"grid: {grid}", flush=True)


def load_one_batch(root: str, imagenet_root: "str | None") -> None:
    import torch
    from torch.utils.data import DataLoader

    from c2fmae_data import ImageNetMultiGranular

    ds = ImageNetMultiGranular(root, imagenet_root=imagenet_root, split="train")
    batch = next(iter(DataLoader(ds, batch_size=min(8, len(ds)), shuffle=True, num_workers=2)))
    for k in ("rgb", "instance", "semantic"):
        v = batch[k]
        print(f"  {k:9s} {tuple(v.shape)} {v.dtype}  range {v.min().item():.3g}..{v.max().item():.3g}")
    print(f"  label     {batch['label'].tolist()}")
    assert batch["rgb"].shape[1:] == (3, 224, 224) and batch["instance"].dtype == torch.int64


def run_demo(args) -> int:
    t0 = time.time()
    out = Path(args.out).resolve()
    if args.clean and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    shared = Path(args.shared) if args.shared else default_shared()

    step("1/6 images")
    if args.images:
        images = Path(args.images)
    elif (shared / "imagenet-sample").exists():
        images = shared / "imagenet-sample"
    else:
        images = skimage_folder(out / "images")
    print(f"ImageNet-layout folder: {images}")

    step("2/6 labels: Ray pipeline, tiny-random models (PLACEHOLDER labels)")
    from pipelines import label_imagenet

    labeled = out / "in1k-tiny-random"
    rc = label_imagenet.main(["--imagenet-root", str(images), "--out", str(labeled),
                              "--models", "tiny-random", "--device", "cpu", "--shard-size", "32",
                              "--num-cpus", "2", "--no-progress"])
    import ray

    ray.shutdown()
    if rc:
        return rc
    check_verify(str(labeled), str(images))
    show(str(labeled), out / "grid_in1k_tiny_random.png", str(images))

    train_root, train_images = str(labeled), str(images)
    coco = shared / "coco-tiny"
    if (coco / "annotations" / "instances_val2017.json").exists() and not args.images:
        step("3/6 real ground truth: convert-coco on coco-tiny")
        from c2fmae_data.coco import convert_coco

        coco_root = out / "coco-tiny"
        convert_coco(str(coco_root), images_dir=str(coco / "val2017"), split="train",
                     instances_json=str(coco / "annotations" / "instances_val2017.json"),
                     self_contained=True, overwrite=True)
        check_verify(str(coco_root), None)
        show(str(coco_root), out / "grid_coco_tiny.png", None)
        train_root, train_images = str(coco_root), None   # real masks make readable panels
    else:
        step("3/6 real ground truth: skipped (no ../shared/data/coco-tiny)")

    step(f"4/6 loader: one batch of {train_root}")
    load_one_batch(train_root, train_images)

    step(f"5/6 pretraining C2FMAE (test size) for {args.steps} steps on CPU")
    run_dir = out / "pretrain"
    from c2fmae_data.manifest import load_manifest

    batch = str(max(1, min(8, load_manifest(train_root)["totals"]["ok"])))
    cmd = [sys.executable, "-m", "model.pretrain", "--config", "pretrain_demo", "--data", train_root,
           "--output-dir", str(run_dir), "--max-steps", str(args.steps), "--resume", "none",
           "--total-batch", batch, "--batch-per-gpu", batch,
           "--set", f"train.panels_every_epochs={args.panels_every}"]
    if train_images:
        cmd += ["--imagenet-root", train_images]
    print(" ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode:
        print("demo: pretraining failed (see above)", file=sys.stderr)
        return 1

    step("6/6 export the encoder for timm")
    enc = out / "encoder.safetensors"
    if subprocess.run([sys.executable, "-m", "model.export", str(run_dir / "last.pt"),
                       str(enc)]).returncode:
        print("demo: export failed (see above)", file=sys.stderr)
        return 1
    pngs = sorted((run_dir / "panels").glob("*.png"), key=lambda p: p.stat().st_mtime)
    latest = pngs[-1].stem.split("_")[-1] if pngs else ""     # the epochEEEE-stepS tag
    panels = sorted(str(p) for p in pngs if p.stem.endswith(latest))
    print(f"\ndemo finished in {time.time() - t0:.0f} s. Look at:\n  " + "\n  ".join(
        [str(out / "grid_in1k_tiny_random.png")]
        + ([str(out / "grid_coco_tiny.png")] if train_images is None else [])
        + panels + [str(enc)]))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="offline end-to-end demo: label -> verify -> inspect "
                              "-> load -> pretrain -> panels -> export")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--images", default=None, help="an ImageNet-layout folder to label instead")
    p.add_argument("--shared", default=None, help="the shared sample data folder "
                   "(default: ../shared/data beside the checkout, when present)")
    p.add_argument("--steps", type=int, default=900, help="pretraining steps (default: 900, about 3 min on 2 cores)")
    p.add_argument("--panels-every", type=int, default=50, help="panels every N epochs")
    p.add_argument("--clean", action="store_true", help="delete --out first")
    p.set_defaults(func=run_demo)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.demo")
    sub = ap.add_subparsers(dest="cmd", required=True)
    register(sub)
    args = ap.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
