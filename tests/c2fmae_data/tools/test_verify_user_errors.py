"""verify and the loader on user mistakes: retyped columns, a missing image folder, a closed pipe."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from c2fmae_data.cli import main
from c2fmae_data.format.schema import records_to_table
from c2fmae_data.format.manifest import build_manifest
from c2fmae_data.format.shards import META_KEY
from c2fmae_data.tools.verify import verify
from tests._datasets import tiny_record
from tests._datasets import good_dataset

REPO = Path(__file__).resolve().parents[3]


def rewrite_shard(path: Path, change) -> None:
    """Rewrite a shard with ``change(table) -> table`` applied (as another tool might)."""
    t = pq.read_table(path)
    meta = t.schema.metadata
    pq.write_table(change(t).replace_schema_metadata(meta), path)


@pytest.mark.parametrize("full", [False, True])
def test_retyped_column_is_named_with_its_shard(tmp_path, full):
    root = good_dataset(tmp_path / "ds")
    shard = tmp_path / "ds" / "shards" / "val-00000.parquet"
    i = pq.read_schema(shard).get_field_index("source_size")
    rewrite_shard(shard, lambda t: t.set_column(i, "source_size", t["source_size"].cast(pa.string())))
    build_manifest(root)                       # the manifest agrees: only the type is wrong
    probs = verify(root, full=full).problems
    assert probs == ["shards/val-00000.parquet: column source_size is string, the format says "
                     "int64 (readers refuse its rows; rewrite the shard)"]


def test_large_string_and_binary_variants_are_accepted(tmp_path):
    root = good_dataset(tmp_path / "ds")
    shard = tmp_path / "ds" / "shards" / "val-00000.parquet"

    def widen(t):
        for name, typ in (("key", pa.large_string()), ("instance_png", pa.large_binary())):
            t = t.set_column(t.schema.get_field_index(name), name, t[name].cast(typ))
        return t
    rewrite_shard(shard, widen)
    build_manifest(root)
    assert pq.read_schema(shard).field("key").type == pa.large_string()
    rep = verify(root, full=True)
    assert rep.ok, rep.problems


def test_nested_field_type_is_checked(tmp_path):
    root = good_dataset(tmp_path / "ds")
    shard = tmp_path / "ds" / "shards" / "train-00001.parquet"
    recs = [tiny_record(f"train/n0/1{j}.JPEG") for j in range(3)]
    t = records_to_table(recs)
    inst = t.schema.field("instances").type.value_type
    bad = pa.list_(pa.struct([inst.field(j) if inst.field(j).name != "area" else
                              pa.field("area", pa.float64()) for j in range(inst.num_fields)]))
    t = t.set_column(t.schema.get_field_index("instances"), "instances",
                     t["instances"].cast(bad))
    pq.write_table(t.replace_schema_metadata({META_KEY: json.dumps({"format_version": "1.0"})}),
                   shard)
    build_manifest(root)
    probs = verify(root).problems
    assert len(probs) == 1 and probs[0].startswith(
        "shards/train-00001.parquet: column instances is list<") and "area: double" in probs[0]


def test_missing_imagenet_root_is_one_line_exit_2(tmp_path, capsys):
    root = good_dataset(tmp_path / "ds")
    assert main(["verify", root, "--imagenet-root", str(tmp_path / "nonexistent")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"c2fmae-data verify: error: --imagenet-root {tmp_path}/nonexistent: "
                          "no such folder")


def test_missing_dataset_root_is_one_line_exit_2(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nonexistent")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (f"c2fmae-data verify: error: {tmp_path}/nonexistent: no such "
                                 "folder (give a dataset root, the folder that holds "
                                 "manifest.json)\n")
    (tmp_path / "empty").mkdir()          # a folder without a manifest is a dataset problem
    assert main(["verify", str(tmp_path / "empty")]) == 1


def test_loader_refuses_missing_imagenet_root_at_construction(tmp_path):
    from c2fmae_data import ImageNetMultiGranular

    root = good_dataset(tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="imagenet_root .*nonexistent: no such folder"):
        ImageNetMultiGranular(root, imagenet_root=str(tmp_path / "nonexistent"))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ImageNetMultiGranular(root, imagenet_root=f"file://{tmp_path}/nonexistent")
    (tmp_path / "img").mkdir()
    assert len(ImageNetMultiGranular(root, imagenet_root=str(tmp_path / "img"))) == 6


def test_verify_into_a_closed_pipe_prints_no_traceback(tmp_path):
    root = good_dataset(tmp_path / "ds")
    p = subprocess.Popen([sys.executable, "-m", "c2fmae_data.cli", "verify", root, "--json", "-"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    p.stdout.close()            # the reader is gone before anything is written (`| head -0`)
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_image_root_one_level_too_deep_is_one_problem_per_folder(tmp_path):
    root = good_dataset(tmp_path / "ds", images=str(tmp_path / "img"))
    assert verify(root, imagenet_root=str(tmp_path / "img")).ok
    rep = verify(root, imagenet_root=str(tmp_path / "img" / "train"))   # the usual slip
    assert rep.problems == [
        f"--imagenet-root {tmp_path}/img/train has no folder {top}/, which the keys start with "
        f"({top}/...): pass the folder that holds {top}/; those rows' images were not checked"
        for top in ("train", "val")] and rep.checked_images == 0
