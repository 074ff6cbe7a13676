"""``c2fmae-data demo``: the whole path on an embedded default, offline, on a CPU.

1. images: ``../shared/data/imagenet-sample`` when it is beside the checkout, else a few photos that
   scikit-image ships, laid out as ``train/<wnid>/*.JPEG`` under OUT/images;
2. labels: the Ray labeling pipeline with the ``tiny-random`` models (random weights: the labels are
   PLACEHOLDERS that exercise the machinery, not pseudo-labels to train on);
3. real ground truth too, when ``../shared/data/coco-tiny`` is there: ``convert-coco``;
4. ``verify --full`` and ``inspect --grid`` on each dataset; one batch through ``ImageNetMultiGranular``
   with a 2-worker DataLoader;
5. C2FMAE pretraining (test size, 64 px, ``model/configs/demo_pretrain.yaml``) on a fixed set of
   ``--train-images`` images (real COCO masks when present), long enough that the reconstruction
   panels of those images show learning, then the encoder exported to a timm-loadable file.

Never more processes or threads than cores: Ray gets ``min(2, cores)`` CPUs, the loader check and
pretraining use no DataLoader workers beyond that. ``C2FMAE_DEMO_NO_SHARED=1`` hides
``../shared`` (the fresh-clone path: scikit-image photos).

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


DEMO_CONFIG = Path(__file__).resolve().parents[1] / "model" / "configs" / "demo_pretrain.yaml"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def default_shared() -> Path:
    if os.environ.get("C2FMAE_DEMO_NO_SHARED"):
        return Path("/nonexistent/c2fmae-demo-no-shared")
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

    from c2fmae_data.format.categories import imagenet_lemmas, imagenet_wnids

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
    from c2fmae_data.tools.verify import verify

    rep = verify(root, imagenet_root=imagenet_root, full=True)
    print(rep.text(), flush=True)
    if not rep.ok:
        raise SystemExit(f"demo: verify failed on {root}")


def show(root: str, grid: Path, imagenet_root: "str | None") -> None:
    from c2fmae_data.tools.inspection import dataset_stats, draw_grid, format_stats

    print(format_stats(dataset_stats(root)), flush=True)
    draw_grid(root, str(grid), n=8, imagenet_root=imagenet_root)
    print(f"grid: {grid}", flush=True)


def load_one_batch(root: str, imagenet_root: "str | None") -> None:
    import torch
    from torch.utils.data import DataLoader

    from c2fmae_data import ImageNetMultiGranular

    ds = ImageNetMultiGranular(root, imagenet_root=imagenet_root, split="train")
    workers = min(2, cores() - 1)
    batch = next(iter(DataLoader(ds, batch_size=min(8, len(ds)), shuffle=True,
                                 num_workers=workers)))
    for k in ("rgb", "instance", "semantic"):
        v = batch[k]
        print(f"  {k:9s} {tuple(v.shape)} {v.dtype}  range {v.min().item():.3g}..{v.max().item():.3g}")
    print(f"  label     {batch['label'].tolist()}")
    assert batch["rgb"].shape[1:] == (3, 224, 224) and batch["instance"].dtype == torch.int64


def fixed_set(src: str, dst: str, n: int) -> int:
    """Copy the first ``n`` ok rows of ``src`` into a one-shard dataset ``dst`` (labels-only rows
    stay labels-only: the same --imagenet-root reads them); returns the row count."""
    from c2fmae_data.format.manifest import build_manifest
    from c2fmae_data.format.fs import join, open_fs
    from c2fmae_data.format.shards import iter_shard, list_shards, shard_meta, write_shard

    fs, base = open_fs(src)
    rows, meta = [], {}
    for rel in list_shards(src, "train"):
        meta = meta or shard_meta(fs, join(base, rel))
        rows += [r for r in iter_shard(fs, join(base, rel)) if r["status"] == "ok"]
        if len(rows) >= n:
            break
    if os.path.exists(dst):
        shutil.rmtree(dst)
    info = write_shard(dst, "train", 0, rows[:n], meta=meta)
    build_manifest(dst, known=[info])
    return info.rows


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
                              "--num-cpus", str(min(2, cores())), "--no-progress",
                              "--allow-failed"])
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
        from c2fmae_data.tools.coco import convert_coco

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

    run_dir = out / "pretrain"
    fixed = fixed_set(train_root, str(out / "train-fixed"), args.train_images)
    step(f"5/6 pretraining C2FMAE (test size, 64 px) for {args.steps} steps on {fixed} fixed "
         "images")
    batch = str(min(8, fixed))
    cmd = [sys.executable, "-m", "model.pretrain", "--config", str(DEMO_CONFIG),
           "--data", str(out / "train-fixed"), "--output-dir", str(run_dir),
           "--max-steps", str(args.steps), "--resume", "none", "--total-batch", batch,
           "--batch-per-gpu", batch,
           "--set", f"train.panels_every_steps={args.panels_every}",
           "--set", f"train.save_every_steps={args.panels_every}"]
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
    p.add_argument("--steps", type=int, default=900,
                   help="pretraining steps (default: 900; see the README for the time)")
    p.add_argument("--train-images", type=int, default=8,
                   help="size of the fixed pretraining set (default: 8)")
    p.add_argument("--panels-every", type=int, default=300,
                   help="panels and a checkpoint every N steps; the last 2 kept (default: 300)")
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
