"""The Ray labeling pipeline end to end on a local Ray (one session shared by the module) and the
real sample images: a full run over all 100 (fake models: every stage but the networks) that
verify accepts; then with tiny-random models a worker killed, a driver killed and resumed, and bad
inputs. Interrupted runs are compared row by row with one uninterrupted tiny-random run."""
from __future__ import annotations

import io
import os
from pathlib import Path
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from c2fmae_data.format.fs import open_fs
from c2fmae_data.format.shards import iter_shard, list_shards  # noqa: E402
from c2fmae_data.tools.verify import verify  # noqa: E402
from pipelines import label_imagenet  # noqa: E402
from pipelines.plan import list_images  # noqa: E402
from pipelines.hooks import CRASH_FLAG_ENV, CRASH_KEY_ENV, CRASH_TIMES_ENV  # noqa: E402
from tests._datasets import label_rows  # noqa: E402

SCRIPT = str(Path(__file__).resolve().parents[2] / "pipelines" / "label_imagenet.py")
COMMON = ["--models", "tiny-random", "--shard-size", "8", "--batch-size", "8", "--workers", "2",
          "--no-progress"]


REF_IMAGES = 24


def _argv(root, out, *extra):
    return ["--imagenet-root", str(root), "--out", str(out), *COMMON, *extra]


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """The real sample images when ../shared/data is there; else 28 generated JPEGs of varied
    sizes in the same <split>/<wnid>/<file> layout, so the fault tests run on any clone."""
    from tests.conftest import SHARED_DATA
    from PIL import Image

    from c2fmae_data.format.categories import imagenet_wnids

    real = SHARED_DATA / "imagenet-sample"
    if real.exists():
        return real
    root = tmp_path_factory.mktemp("generated-imagenet")
    rng = np.random.default_rng(0)
    for i in range(REF_IMAGES + 4):
        wnid = imagenet_wnids()[(i * 37) % 1000]
        d = root / "train" / wnid
        d.mkdir(parents=True, exist_ok=True)
        h, w = (int(v) for v in rng.integers(24, 320, 2))
        small = (rng.random((max(2, h // 8), max(2, w // 8), 3)) * 255).astype(np.uint8)
        Image.fromarray(small).resize((w, h)).save(d / f"{wnid}_{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def reference(ray_session, image_root, tmp_path_factory):
    """One uninterrupted tiny-random run over the first REF_IMAGES images."""
    out = tmp_path_factory.mktemp("reference")
    entry = label_imagenet.run(label_imagenet.parse_args(
        _argv(image_root, out, "--limit", str(REF_IMAGES))))
    rows = label_rows(out)
    assert entry["run"]["labeled_this_run"] == REF_IMAGES == len(rows)
    return out, entry, rows


def test_full_run_over_the_sample_is_verified_and_complete(ray_session, imagenet_sample,
                                                           tmp_path, monkeypatch):
    out = tmp_path / "out"
    url = f"file://{out}"            # output given as an fsspec URL
    argv = _argv(imagenet_sample, url, "--models", "fake")   # argparse: the last --models wins

    def no_read_back(fs, path, rel):   # the writers kept each shard's index rows in the ledger
        raise AssertionError(f"the manifest read {rel} back to index it")
    monkeypatch.setattr("c2fmae_data.format.manifest.read_shard_rows", no_read_back)
    entry = label_imagenet.run(label_imagenet.parse_args(argv))
    monkeypatch.undo()
    listing = [it.key for it in list_images(str(imagenet_sample), "train")[0]]
    assert sorted(label_rows(out)) == listing and len(listing) == 100     # every image exactly once
    report = verify(url, imagenet_root=str(imagenet_sample), full=True)
    assert report.ok, report.text()
    assert entry["images"] == 100 and entry["ok"] == 100 and entry["failed"] == 0
    assert entry["shards"] == 13 and entry["run"]["labeled_this_run"] == 100
    assert sum(entry["threshold_histogram"].values()) == entry["ok"]
    assert (out / "summary.json").exists() and (out / "manifest.json").exists()
    # the same command again: everything is finished, nothing is relabeled (no Ray needed)
    again = label_imagenet.run(label_imagenet.parse_args(argv))
    assert again["run"]["shards_skipped"] == 13 and again["run"]["labeled_this_run"] == 0
    assert verify(str(out)).ok


def test_reference_run_is_verified(reference, image_root):
    out, entry, _ = reference
    assert entry["ok"] + entry["failed"] == REF_IMAGES and entry["shards"] == 3
    assert verify(str(out), imagenet_root=str(image_root), full=True).ok


def test_worker_killed_mid_run_loses_and_duplicates_nothing(reference, image_root, tmp_path,
                                                            monkeypatch):
    _, _, ref = reference
    keys = sorted(ref)[:16]
    flag = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_KEY_ENV, keys[10])     # shard 1, while shard 0 is labeled too
    monkeypatch.setenv(CRASH_FLAG_ENV, str(flag))
    out = tmp_path / "out"
    entry = label_imagenet.run(label_imagenet.parse_args(_argv(image_root, out,
                                                               "--limit", "16")))
    assert flag.exists(), "the test hook did not kill a worker"
    assert entry["run"]["crashes"] >= 1
    rows = label_rows(out)
    assert sorted(rows) == keys
    assert rows == {k: ref[k] for k in keys}      # redone batch is bit-identical


def test_poison_image_becomes_one_failed_row(ray_session, image_root, tmp_path,
                                             monkeypatch):
    """An image that kills its worker every time: its batch is split, the image alone fails
    twice and is recorded as failed; its batch mates are labeled; the run completes."""
    keys = [it.key for it in list_images(str(image_root), "train")[0]][:6]
    flag = tmp_path / "crashes"
    monkeypatch.setenv(CRASH_KEY_ENV, keys[1])
    monkeypatch.setenv(CRASH_FLAG_ENV, str(flag))
    monkeypatch.setenv(CRASH_TIMES_ENV, "1000")
    out = tmp_path / "out"
    entry = label_imagenet.run(label_imagenet.parse_args(_argv(
        image_root, out, "--models", "fake", "--limit", "6", "--batch-size", "3",
        "--workers", "1", "--depth", "1")))
    crashes = flag.read_text().splitlines()
    assert len(crashes) == 4 == entry["run"]["crashes"]    # batch x2, then the image alone x2
    assert [c.endswith("(3 keys)") for c in crashes] == [True, True, False, False]
    fs, base = open_fs(str(out))
    rows = {r["key"]: r for rel in list_shards(str(out))
            for r in iter_shard(fs, f"{base}/{rel}", columns=["key", "status", "reason"])}
    assert sorted(rows) == keys
    assert rows[keys[1]]["status"] == "failed"
    assert rows[keys[1]]["reason"].startswith("labeling crashed 2x on this image alone")
    assert all(rows[k]["status"] == "ok" for k in keys if k != keys[1])
    assert verify(str(out), full=True).ok


def test_driver_killed_then_resumed_equals_uninterrupted(reference, image_root, tmp_path):
    _, _, ref = reference
    keys = sorted(ref)
    out = tmp_path / "out"
    address = ray.get_runtime_context().gcs_address
    cmd = [sys.executable, SCRIPT, *_argv(image_root, out, "--limit", "24"),
           "--address", address]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if list_shards(str(out)):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "driver finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)             # the driver only; Ray reaps its workers
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(1.0)   # a shard write already in flight may still land (atomically)
    before = {rel: (out / rel).stat().st_mtime_ns for rel in list_shards(str(out))}
    assert 1 <= len(before) < 3

    entry = label_imagenet.run(label_imagenet.parse_args(_argv(image_root, out,
                                                               "--limit", "24")))
    assert entry["run"]["shards_skipped"] == len(before)
    assert entry["run"]["shards_written"] == 3 - len(before)
    assert all((out / rel).stat().st_mtime_ns == t for rel, t in before.items())  # not redone
    rows = label_rows(out)
    assert rows == {k: ref[k] for k in keys}
    assert verify(str(out), imagenet_root=str(image_root)).ok


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _huge_png(width: int, height: int) -> bytes:
    """A small valid-looking PNG whose header claims width x height (decompression bomb)."""
    data = bytearray(_png(np.zeros((1, 1), np.uint8)))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def test_bad_inputs_are_labeled_or_failed_with_reason(ray_session, image_root, tmp_path):
    from PIL import Image

    src = sorted((image_root / "train").glob("*/*.JPEG"))[0]
    wnid = src.parent.name
    img = Image.open(src).convert("RGB").resize((64, 48))
    d = tmp_path / "in" / "train" / wnid
    d.mkdir(parents=True)

    def jpeg(im, **kw):
        buf = io.BytesIO()
        im.save(buf, format="JPEG", **kw)
        return buf.getvalue()

    good = jpeg(img)
    files = {
        "good.JPEG": good, "zero.JPEG": b"", "truncated.JPEG": good[: len(good) // 3],
        "cmyk.JPEG": jpeg(img.convert("CMYK")), "gray.JPEG": jpeg(img.convert("L")),
        "png_named.JPEG": _png(np.asarray(img)),
        "sixteen_bit.JPEG": _png((np.asarray(img.convert("L"), np.uint16) * 257)),
        "huge.JPEG": _huge_png(20000, 20000), "garbage.JPEG": b"not an image at all" * 10,
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    out = tmp_path / "out"
    entry = label_imagenet.run(label_imagenet.parse_args(
        _argv(tmp_path / "in", out, "--workers", "1")))
    fs, base = open_fs(str(out))
    rows = {r["key"].split("/")[-1]: r for rel in list_shards(str(out))
            for r in iter_shard(fs, f"{base}/{rel}", columns=["key", "status", "reason"])}
    assert sorted(rows) == sorted(files)
    for name in ("good.JPEG", "cmyk.JPEG", "gray.JPEG", "png_named.JPEG", "sixteen_bit.JPEG"):
        assert rows[name]["status"] == "ok", (name, rows[name]["reason"])
    for name in ("zero.JPEG", "huge.JPEG", "garbage.JPEG"):
        assert rows[name]["status"] == "failed" and rows[name]["reason"], name
    assert "pixels" in rows["huge.JPEG"]["reason"]
    assert rows["truncated.JPEG"]["status"] == "ok" or rows["truncated.JPEG"]["reason"]
    failed = {n for n, r in rows.items() if r["status"] == "failed"}
    assert entry["failed"] == len(failed) and sum(entry["failure_reasons"].values()) == len(failed)
    listed = (out / "failures-train.jsonl").read_text().splitlines()
    assert {line.split('"')[3].split("/")[-1] for line in listed} == failed
    assert verify(str(out), full=True).ok
