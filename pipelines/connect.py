"""Reaching Ray for ``label_imagenet.py``: the address check, ``ray.init`` (with ``--ship-code``),
and the per-worker custom resources (``--worker-resource``). A user's mistake here (an address
where no Ray answers, a token the cluster refuses, a malformed resource) is a ``PlanError``: one
line naming it, exit 2, before anything is labeled.
"""
from __future__ import annotations

import os
import socket

from pipelines.plan import PlanError

CONNECT_TIMEOUT_S = 5.0


def parse_worker_resources(specs: "list[str] | None") -> "dict[str, float]":
    """``--worker-resource NAME=AMOUNT`` (repeatable) -> {NAME: AMOUNT}."""
    out: "dict[str, float]" = {}
    for spec in specs or []:
        name, sep, amount = spec.partition("=")
        name = name.strip()
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not sep or not name or value <= 0:
            raise PlanError(f"--worker-resource {spec!r}: expected NAME=AMOUNT with AMOUNT > 0 "
                            f"(a custom resource the label workers' nodes offer, e.g. a100=1)")
        if name in ("CPU", "GPU", "memory", "object_store_memory"):
            raise PlanError(f"--worker-resource {name}: use --worker-cpus / --gpus-per-worker "
                            f"for {name}")
        out[name] = value
    return out


def check_address(address: str) -> None:
    """A ``host:port`` address must accept a TCP connection; ``auto`` and ``ray://`` are left to
    Ray. Fails in seconds, where ``ray.init`` would retry for a long while."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise PlanError(f"--address {address!r}: expected host:port (the address `ray start "
                        f"--head` printed), 'auto', or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise PlanError(f"--address {address}: no Ray cluster answers there "
                        f"({e.strerror or e}); start one with `ray start --head` or pass the "
                        f"address it printed") from None


def runtime_env(ship_code: bool) -> "dict | None":
    """``--ship-code``: send this checkout's packages to every worker (runtime_env py_modules)."""
    if not ship_code:
        return None
    import c2fmae_data
    import labeling
    import pipelines

    env: dict = {"py_modules": [os.path.dirname(m.__file__)
                                for m in (c2fmae_data, labeling, pipelines)]}
    hub = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "HF_HOME") if k in os.environ}
    if hub:   # workers find weights the way the driver does
        env["env_vars"] = hub
    return env


def init_ray(args) -> None:
    """Connect to ``--address`` (or start a local Ray); Ray's own failure becomes one line."""
    import ray

    if ray.is_initialized():
        return
    env = runtime_env(args.ship_code)
    if not args.address:
        ray.init(num_cpus=args.num_cpus or os.cpu_count(), include_dashboard=False,
                 runtime_env=env)
        return
    try:
        ray.init(address=args.address, runtime_env=env)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise PlanError(f"--address {args.address}: cannot join that Ray cluster: "
                        f"{_reason(e)}") from None


def _reason(e: BaseException) -> str:
    """First line of the error and of its root cause (e.g. a refused auth token), shortened."""
    root = e
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__
    lines = [next((ln.strip() for ln in str(x).splitlines() if ln.strip()), type(x).__name__)
             for x in dict.fromkeys((e, root))]
    return "; ".join(ln[:200] for ln in lines)
