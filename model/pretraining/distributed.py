"""One process or torchrun's DDP: rank / world / device, autocast, gathering, replica checks."""
from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Any

import torch
import torch.distributed as dist


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
