"""The dataset fuzzer (tests/_fuzz.py) in the suite: 250 seeded mutations of a generated shard,
its index and manifest through every loader mode and verify, in a child process under a memory
cap (256 MiB above its footprint) with a per-case watchdog. Any exception other than a
FormatError, silently changed data, a hang or a blow-up fails it (bench/data/fuzz.py runs more)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_fuzzer_allows_only_clean_reads_or_format_errors():
    r = subprocess.run([sys.executable, "-m", "tests._fuzz", "--cases", "250", "--seed", "0",
                        "--mem-mb", "256", "--case-timeout", "60"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-5000:]
    counts = json.loads(r.stdout)["counts"]
    assert sum(counts["family"].values()) == 250
    for loader in ("map", "full", "stream", "skip", "stream_skip", "failed"):
        assert set(counts[loader]) <= {"clean", "changed", "FormatError"}, counts[loader]
        assert counts[loader].get("clean", 0) > 20 and counts[loader].get("FormatError", 0) > 20
    # both families and every corruption site were drawn
    assert counts["family"]["corrupt"] > 100 and counts["family"]["crafted"] > 50
    kinds = " ".join(counts["kind"])
    for site in ("@shards", "@index", "@manifest.json", "png_bomb", "footer", "png_length"):
        assert site in kinds, site
