"""Pretraining data: the dataset from the config (map-style or stream), a resumable DDP sampler,
the per-epoch DataLoader and moving a batch to the device."""
from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, DistributedSampler

from model.pretraining.config import ConfigError


def check_data_paths(d: dict) -> None:
    """Refuse, before anything is written, a --data folder that is not a dataset root and a
    missing --imagenet-root (local paths; URLs are checked by the dataset)."""
    root, images = str(d["root"]), d["imagenet_root"]
    if "://" not in root:
        if not os.path.isdir(root):
            raise ConfigError(f"--data {root}: no such folder (data.root)")
        if not os.path.isfile(os.path.join(root, "manifest.json")):
            raise ConfigError(f"--data {root}: no manifest.json, not a C2FMAE dataset root "
                              "(made by c2fmae-data label / convert-coco / manifest)")
    if images and "://" not in str(images) and not os.path.isdir(images):
        raise ConfigError(f"--imagenet-root {images}: no such folder (data.imagenet_root)")


def build_dataset(cfg: dict, train: bool, split: "str | None" = None):
    """The multi-granular dataset with the run's crop/flip augmentation (or the eval resize +
    centre crop with ``train=False``, for the panels and probes). ``train`` with
    ``data.loader: stream`` gives the streaming variant (row groups in order); the panels and
    probes always use the map-style one. Errors that a user fixes with a flag are ConfigErrors
    naming it."""
    from c2fmae_data import ImageNetMultiGranular, ImageNetMultiGranularStream
    from c2fmae_data.format.schema import FormatError
    from c2fmae_data.loading.transforms import EvalTransform, TrainTransform

    d = cfg["data"]
    if not d["root"]:
        raise ConfigError("no dataset: pass --data ROOT (or set data.root)")
    check_data_paths(d)
    size, stride, k = d["img_size"], d["mask_stride"], d["max_instances"]
    if train:
        tf = TrainTransform(size, stride, scale=tuple(d["crop_scale"]),
                            flip_p=0.5 if d["hflip"] else 0.0, max_instances=k)
    else:
        tf = EvalTransform(size, stride, resize=round(size * 256 / 224), max_instances=k)
    cls, extra = ImageNetMultiGranular, {}
    if train and d["loader"] == "stream":
        cls, extra = ImageNetMultiGranularStream, {"seed": cfg["train"]["seed"]}
    try:
        ds = cls(d["root"], d["imagenet_root"], split=split or d["split"], transform=tf,
                 size=size, stride=stride, max_instances=k, on_error=d["on_error"], **extra)
    except (FormatError, ValueError) as e:
        raise ConfigError(f"--data {d['root']}: {e}") from None
    if not d["imagenet_root"] and not ds.manifest.get("self_contained", False):
        raise ConfigError(f"--data {d['root']} holds labels only (no image bytes): pass "
                          "--imagenet-root DIR, the folder its keys are relative to "
                          "(data.imagenet_root)")
    return ds


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled per epoch from ``seed + epoch``) that can start mid-epoch:
    ``set_start(n)`` skips this rank's first ``n`` indices of the epoch's permutation."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.start = 0

    def set_start(self, n: int) -> None:
        self.start = int(n)

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def build_sampler(cfg: dict, dataset, world: int, rank: int):
    """The map-style order: ``ShardWindowSampler`` (``data.shard_window`` shards at a time, the
    dataset's footer cache raised to the window) when the dataset has >= 2 x world shards, else
    (and with ``shard_window: 0``) the global shuffle ``ResumableSampler``. Both yield the same
    number of indices in every epoch."""
    from c2fmae_data.loading.sampler import ShardWindowSampler

    window, seed = cfg["data"]["shard_window"], cfg["train"]["seed"]
    shards = len(getattr(dataset, "shard_files", ())) if hasattr(dataset, "shard_of") else 0
    if window and shards >= 2 * world:
        dataset.footer_cache = max(dataset.footer_cache, window)
        return ShardWindowSampler(dataset, world, rank, seed, window=window, fixed_length=True)
    return ResumableSampler(dataset, world, rank, seed)


def make_loader(dataset, sampler, cfg: dict, epoch: int, rank: int, pin: bool) -> DataLoader:
    """The epoch's loader: ``sampler`` over a map-style dataset, or (``sampler=None``) an
    IterableDataset that orders and splits its samples itself (no sampler, no shuffle)."""
    # The loader's own generator (not the global RNG) draws the workers' base seed, so worker
    # seeds depend only on (seed, epoch, rank) and building a loader mid-run consumes no RNG.
    g = torch.Generator().manual_seed(cfg["train"]["seed"] * 1_000_003 + epoch * 1009 + rank)
    nw = cfg["data"]["num_workers"]
    return DataLoader(dataset, batch_size=cfg["optim"]["batch_per_gpu"], sampler=sampler,
                      num_workers=nw, pin_memory=pin, drop_last=True, generator=g,
                      persistent_workers=False, prefetch_factor=4 if nw > 0 else None)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}
