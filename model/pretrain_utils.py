"""Pieces of the pretraining loop: dataset, resumable sampler, loaders, DDP setup, autocast,
logging."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from .config import ConfigError


# ----------------------------------------------------------------------------- data
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
    from c2fmae_data.format import FormatError
    from c2fmae_data.transforms import EvalTransform, TrainTransform

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
    from c2fmae_data.sampler import ShardWindowSampler

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


# ----------------------------------------------------------------------------- distributed
def init_distributed(cfg: dict, device: str = "auto") -> "tuple[int, int, torch.device]":
    """(rank, world_size, device) from torchrun's environment; one process when it is absent."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        dev = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        # fp32 matmuls / convolutions outside autocast on TF32 tensor cores (Ampere and later)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        backend = cfg["train"]["dist_backend"]
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return rank, world, dev


def all_gather_objects(obj: Any, world: int) -> list:
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def amp_dtype(cfg: dict, device: torch.device) -> "torch.dtype | None":
    """train.amp -> autocast dtype: auto = bf16 on CUDA, fp32 (None) elsewhere."""
    amp = cfg["train"]["amp"]
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def autocast_ctx(cfg: dict, device: torch.device):
    """(autocast context, whether fp16 needs a GradScaler)."""
    dtype = amp_dtype(cfg, device)
    if dtype is None:
        return contextlib.nullcontext(), False
    return torch.autocast(device.type, dtype=dtype), dtype == torch.float16


# ----------------------------------------------------------------------------- logging
class Logger:
    """Rank 0 only: stdout lines, ``log.jsonl`` in the output dir, TensorBoard when installed.

    A run that starts at ``start_step`` (the resumed checkpoint's, 0 for a fresh run) redoes
    the steps after it: their records from the earlier, killed run are dropped from log.jsonl
    (and purged from TensorBoard), so every step has one record, the one of the run that
    went on. ``self.dropped`` counts them."""

    def __init__(self, output_dir: str, enabled: bool, start_step: int = 0):
        self.enabled = enabled
        self.tb, self.dropped = None, 0
        if not enabled:
            return
        path = os.path.join(output_dir, "log.jsonl")
        self.dropped = truncate_log(path, start_step)
        self.jsonl = open(path, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            # events with step >= purge_step (those of the redone steps) are hidden
            self.tb = SummaryWriter(os.path.join(output_dir, "tensorboard"),
                                    purge_step=start_step + 1)
        except ImportError:  # tensorboard is optional
            self.tb = None

    def log(self, rec: "dict[str, Any]", echo: bool = True) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(rec) + "\n")
        self.jsonl.flush()
        if echo:
            tasks = " ".join(f"{k}={v:.4f}" for k, v in rec["losses"].items())
            print(f"[step {rec['step']} ep {rec['epoch']}] loss={rec['loss']:.4f} ({tasks}) "
                  f"lr={rec['lr']:.3e} grad_norm={rec['grad_norm']:.3f} "
                  f"{rec['img_per_s']:.1f} img/s", flush=True)
        if self.tb is not None:
            step = rec["step"]
            self.tb.add_scalar("loss/total", rec["loss"], step)
            for k, v in rec["losses"].items():
                self.tb.add_scalar(f"loss/{k}", v, step)
            for k in ("lr", "grad_norm", "img_per_s", "progress"):
                self.tb.add_scalar(k, rec[k], step)

    def log_probe(self, step: int, epoch: int, res: "dict[str, Any]") -> None:
        """A probe result: one ``{"step", "epoch", "probe": {...}}`` line in log.jsonl."""
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, "epoch": epoch, "probe": res}) + "\n")
        self.jsonl.flush()
        print(f"[probe step {step} ep {epoch}] k-NN top-1 {res['knn_top1']:.2f}%  linear top-1 "
              f"{res['linear_top1']:.2f}%  ({res['num_train']} train / {res['num_val']} val, "
              f"{res['num_classes']} classes)", flush=True)
        if self.tb is not None:
            for k in ("knn_top1", "knn_top5", "linear_top1", "linear_top5"):
                self.tb.add_scalar(f"probe/{k}", res[k], step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()


def truncate_log(path: str, last_step: int, key: str = "step") -> int:
    """Keep the records of ``path`` with ``record[key] <= last_step`` (rewritten atomically);
    drop the rest and any partial line a kill left. Returns the number of lines dropped."""
    if not os.path.exists(path):
        return 0
    keep, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
                ok = line.endswith("\n") and int(rec[key]) <= last_step
            except (ValueError, KeyError, TypeError):
                ok = False
            if ok:
                keep.append(line)
            else:
                dropped += 1
    if dropped:
        tmp = os.path.join(os.path.dirname(path), f".log.jsonl.tmp-{os.urandom(6).hex()}")
        with open(tmp, "w") as f:
            f.writelines(keep)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


def param_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes: equal digests = bit-identical replicas."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def check_replicas(model: torch.nn.Module, rank: int, world: int) -> None:
    """Print this rank's parameter digest; raise on every rank if the DDP replicas diverged."""
    digest = param_digest(model)
    print(f"rank {rank}: parameter sha256 {digest}", flush=True)
    digests = all_gather_objects(digest, world)
    if len(set(digests)) > 1:
        raise RuntimeError(f"DDP replicas diverged: parameter digests per rank {digests}")
