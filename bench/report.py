"""Write one bench script's results into its own section of docs/benchmarks.md.

Each script owns the block between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` and replaces
only that, so scripts can be rerun independently.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import statistics
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    try:
        import torch

        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        tv = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        dev, tv = "no GPU", "no torch"
    load = f", 1-min load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (f"{platform.machine()}, {os.cpu_count()} cores{load}, {dev}, "
            f"Python {platform.python_version()}, {tv}")


def median(xs):
    return statistics.median(list(xs))


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of docs/benchmarks.md with ``body``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"<!-- BEGIN {name} -->\n{body.rstrip()}\n\n_Measured {stamp} on {machine()}._\n"
             f"<!-- END {name} -->")
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    pat = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    print(block)
