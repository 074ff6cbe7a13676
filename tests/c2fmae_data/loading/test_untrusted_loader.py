"""The loaders on hostile rows (issue 19): ids outside the row's instance table or outside the
semantic classes are refused with one FormatError line naming shard, row, key and column, or
counted and skipped with ``on_error="skip"``; verify lists them all; a PNG bomb stays within a
memory cap in every reader."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from c2fmae_data import FormatError, ImageNetMultiGranular, ImageNetMultiGranularStream
from c2fmae_data.cli import main
from c2fmae_data.format.manifest import build_manifest
from c2fmae_data.format.schema import encode_instance_png
from c2fmae_data.format.shards import write_shard
from c2fmae_data.loading.source import SampleError
from c2fmae_data.tools.verify import verify
from tests._datasets import WNID, blob_masks, png_bytes, record
from tests._pngs import png

REPO = Path(__file__).resolve().parents[3]
SMALL = {"size": 32, "stride": 4}
SHARD = "shards/train-00000.parquet"


def hostile_dataset(root, edit) -> "list[str]":
    """Six self-contained rows in one shard; ``edit(i, rec)`` changes row i before it is written
    without validation (a buggy or hostile producer)."""
    recs = []
    for i in range(6):
        img = png_bytes(np.full((30, 40, 3), 30 * i, np.uint8))
        inst, sem = blob_masks(40, 30, n=3, seed=i)
        rec = record(f"train/{WNID}/im{i}.png", img, inst, sem)
        edit(i, rec)
        recs.append(rec)
    write_shard(str(root), "train", 0, recs, validate=False,
                meta={"self_contained": True, "provenance": {}})
    build_manifest(str(root))
    return [r["key"] for r in recs]


def bad_ids(i: int, rec: dict) -> None:
    if i == 1:   # every pixel id 9 while the row has 3 instances: any crop samples it
        rec["instance_png"] = encode_instance_png(np.full((30, 40), 9, np.uint16))
    if i == 4:   # semantic id 200: neither a class 0..132 nor 255 (the encoder refuses it)
        rec["semantic_png"] = png(40, 30, 8, b"".join(b"\x00" + bytes([200]) * 40
                                                      for _ in range(30)))


@pytest.mark.parametrize("transform", ["train", None])
def test_ids_out_of_range_raise_one_line_naming_shard_row_key_column(tmp_path, transform):
    keys = hostile_dataset(tmp_path, bad_ids)
    ds = ImageNetMultiGranular(tmp_path, transform=transform, **SMALL)
    with pytest.raises(FormatError) as e:
        ds[1]
    assert str(e.value) == (f"{SHARD}: row group 0 row 1: key {keys[1]!r}: instance_png: "
                            "instance id 9 above num_instances 3")
    assert isinstance(e.value, SampleError) and "\n" not in str(e.value)
    with pytest.raises(FormatError, match=rf"row 4: key {keys[4]!r}: semantic_png: semantic id "
                                          r"200 outside 0..132 and not 255$"):
        ds[4]
    ds[0]


def test_skip_counts_logs_and_goes_on_in_both_loaders(tmp_path, caplog):
    keys = hostile_dataset(tmp_path, bad_ids)
    good = [k for i, k in enumerate(keys) if i not in (1, 4)]
    with caplog.at_level(logging.WARNING, logger="c2fmae_data"):
        ds = ImageNetMultiGranular(tmp_path, on_error="skip", transform="eval", **SMALL)
        got = [ds[i]["key"] for i in range(len(ds))]
        assert ds.errors == 2 and set(got) == set(good)
        st = ImageNetMultiGranularStream(tmp_path, on_error="skip", shuffle=False, **SMALL)
        assert [s["key"] for s in DataLoader(st, batch_size=None)] == good
        assert st.errors == 2
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert any("instance id 9 above num_instances 3" in m for m in skipped)
    assert any("semantic id 200" in m for m in skipped)


def test_verify_lists_every_bad_row_and_exits_1(tmp_path, capsys):
    keys = hostile_dataset(tmp_path, bad_ids)
    assert verify(str(tmp_path), workers=1).ok       # quick mode reads no mask
    probs = verify(str(tmp_path), full=True, workers=1).problems
    assert f"{SHARD}: {keys[1]!r}: instance_png has id 9 but only 3 metadata rows" in probs
    assert f"{SHARD}: {keys[4]!r}: semantic class id 200 out of range" in probs
    assert main(["verify", str(tmp_path), "--full", "--workers", "1"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and out.out.count("PROBLEM") >= 2


def test_inspect_grid_on_a_hostile_mask_is_one_line_exit_2(tmp_path, capsys):
    keys = hostile_dataset(tmp_path, bad_ids)
    assert main(["inspect", str(tmp_path), "--grid", str(tmp_path / "g.png"), "--n", "6"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{SHARD}: key {keys[4]!r}: masks: semantic_png" in err


BOMB_CHILD = textwrap.dedent("""
    import json, resource, sys
    from c2fmae_data import FormatError, ImageNetMultiGranular, ImageNetMultiGranularStream
    from c2fmae_data.tools.verify import verify
    from c2fmae_data.tools.inspection import dataset_stats
    root = sys.argv[1]
    ImageNetMultiGranular(root, transform=None)        # warm: imports, allocator arenas
    vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, ((vm << 10) + (256 << 20), resource.RLIM_INFINITY))
    out = {}
    for name, read in (
            ("map", lambda: ImageNetMultiGranular(root, transform="train", size=32)[2]),
            ("full", lambda: ImageNetMultiGranular(root, transform=None)[2]),
            ("stream", lambda: list(ImageNetMultiGranularStream(root, size=32, shuffle=False))),
            ("verify", lambda: verify(root, full=True, workers=1).problems),
            ("inspect", lambda: dataset_stats(root))):
        try:
            out[name] = str(read())[:300]
        except FormatError as e:
            out[name] = "FormatError: " + str(e)
    print(json.dumps(out))
""")


def test_a_png_bomb_stays_within_a_memory_cap_in_every_reader(tmp_path):
    """A 40x30 semantic PNG whose zlib stream inflates to 1 GiB: every reader runs in a child
    with RLIMIT_AS 256 MiB above its footprint and ends cleanly (a FormatError or a report)."""
    raw = b"".join(b"\x00" + bytes(40) for _ in range(30))

    def bomb(i, rec):
        if i == 2:
            rec["semantic_png"] = png(40, 30, 8, raw, zeros=1 << 30)
    hostile_dataset(tmp_path, bomb)
    r = subprocess.run([sys.executable, "-c", BOMB_CHILD, str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["full"] == (f"FormatError: {SHARD}: row group 0 row 2: key "
                           f"'train/{WNID}/im2.png': semantic_png: PNG zlib stream inflates past "
                           "1230 bytes, the size 40x30 allows")
    assert out["map"].startswith("{'rgb'")            # a crop reads a prefix: capped, fine
    assert "inflates past 1230 bytes" in out["verify"] and "MemoryError" not in r.stderr


def test_self_contained_rows_without_image_bytes_are_named(tmp_path):
    """Found by the fuzzer: a footer bit flip renamed the column image_bytes; verify accepted the
    self-contained set while the loader could not read one image."""
    import pyarrow.parquet as pq

    from tests._hostile import relist

    keys = hostile_dataset(tmp_path, lambda i, rec: None)
    t = pq.read_table(tmp_path / SHARD)
    pq.write_table(t.rename_columns([c.replace("image_bytes", "hmage_bytes")
                                     for c in t.column_names]), tmp_path / SHARD)
    relist(tmp_path, SHARD)
    probs = verify(str(tmp_path), full=True, workers=1).problems
    assert f"{SHARD}: lacks column image_bytes (the manifest says self_contained)" in probs
    assert f"{SHARD}: {keys[0]!r}: image_bytes missing on an ok row of a self-contained " \
           "dataset" in probs
    with pytest.raises(FormatError, match=rf"row 0: key {keys[0]!r}: image_bytes: row has no "
                                          "image_bytes"):
        ImageNetMultiGranular(tmp_path, **SMALL)[0]
