"""Shards, index and manifest are untrusted (issue 19): paths stay inside the root, index rows
cannot point past a shard's row groups, footer/metadata/row-group/list/key/JSON sizes are bounded,
and a wrong column type is one FormatError naming file and column."""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from c2fmae_data import ImageNetMultiGranular, ImageNetMultiGranularStream
from c2fmae_data.format import manifest as manifest_mod
from c2fmae_data.format import parquet_guard, schema
from c2fmae_data.format.bounds import MAX_JSON_DEPTH, loads_bounded
from c2fmae_data.format.manifest import build_manifest, load_manifest
from c2fmae_data.format.schema import FormatError, check_record, safe_relpath
from c2fmae_data.tools import download as D
from c2fmae_data.tools.download import DownloadError
from c2fmae_data.tools.verify import verify
from tests._datasets import synthetic_dataset
from tests._hostile import relist

SHARD, INDEX = "shards/train-00000.parquet", "index/train.parquet"


@pytest.fixture
def root(tmp_path):
    synthetic_dataset(tmp_path / "ds", n=40, shards=2)   # 20 rows a shard: row groups 16 + 4
    return tmp_path / "ds"


# ----------------------------------------------------------------------------- paths
def test_symlinks_out_of_the_root_are_refused(root, tmp_path):
    outside = tmp_path / "outside.parquet"
    os.replace(root / SHARD, outside)
    os.symlink(outside, root / SHARD)
    ds = ImageNetMultiGranular(root, transform=None)        # the index does not touch shards
    with pytest.raises(FormatError, match=f"{SHARD}: a symlink leads outside the dataset root"):
        ds[0]
    assert any("symlink leads outside" in p for p in verify(str(root), workers=1).problems)
    with pytest.raises(FormatError, match="symlink leads outside"):
        build_manifest(str(root), write=False)
    os.replace(root / INDEX, tmp_path / "index.parquet")
    os.symlink(tmp_path / "index.parquet", root / INDEX)
    with pytest.raises(FormatError, match=f"{INDEX}: a symlink leads outside"):
        ImageNetMultiGranular(root)


def test_a_symlink_inside_the_root_is_fine(root):
    os.makedirs(root / "store")
    os.replace(root / SHARD, root / "store" / "a.parquet")
    os.symlink(root / "store" / "a.parquet", root / SHARD)
    assert len(ImageNetMultiGranular(root, transform=None)[0]["instance"]) == 40


@pytest.mark.parametrize("bad", ["../x.parquet", "/abs/shards/train-00000.parquet",
                                 "shards/../../x.parquet"])
def test_manifest_paths_escaping_the_root(root, bad):
    m = json.loads((root / "manifest.json").read_text())
    m["splits"]["train"]["shards"][0]["file"] = bad
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FormatError, match="escape the dataset root"):
        ImageNetMultiGranular(root)


# ----------------------------------------------------------------------------- index rows
def test_index_rows_cannot_point_past_a_shards_row_groups(root):
    """An index that puts all 20 rows of shard 0 into one row group (consistent with itself and
    with the manifest's row counts) while the shard holds groups of 16 + 4: without the open
    check, row 17 of "group 0" would be read at an offset the group does not have."""
    t = pq.read_table(root / INDEX)
    shard = pa.compute.equal(t.column("shard"), SHARD).to_numpy(zero_copy_only=False)
    groups = [0 if s else g for s, g in zip(shard, t.column("row_group").to_pylist())]
    rows = [i if s else r for i, (s, r) in enumerate(zip(shard, t.column("row").to_pylist()))]
    meta = json.loads(t.schema.metadata[b"c2fmae_index"])
    meta["shards"][0]["row_groups"] = 1
    t = t.set_column(2, "row_group", pa.array(groups, pa.int32()))
    t = t.set_column(3, "row", pa.array(rows, pa.int32()))
    pq.write_table(t.replace_schema_metadata({b"c2fmae_index": json.dumps(meta).encode()}),
                   root / INDEX)
    relist(root, INDEX)
    ds = ImageNetMultiGranular(root, transform=None)
    with pytest.raises(FormatError, match=rf"{SHARD}: row groups hold \[16, 4\].* the index says "
                                          r"\[20\]"):
        ds[17]
    st = ImageNetMultiGranularStream(root, transform=None, shuffle=False)
    with pytest.raises(FormatError, match="index and shard disagree"):
        next(iter(st))


def test_index_metadata_row_group_counts_are_bounded(root):
    t = pq.read_table(root / INDEX)
    meta = json.loads(t.schema.metadata[b"c2fmae_index"])
    meta["shards"][0]["row_groups"] = 10 ** 9        # np.bincount(minlength=1e9) = 8 GB
    pq.write_table(t.replace_schema_metadata({b"c2fmae_index": json.dumps(meta).encode()}),
                   root / INDEX)
    with pytest.raises(FormatError, match=r"row_groups': n <= 1048576"):
        ImageNetMultiGranular(root)


# ----------------------------------------------------------------------------- bounds
def test_footer_metadata_and_row_group_bounds(root, monkeypatch):
    path = str(root / SHARD)
    for name, value, msg in (("MAX_FOOTER_BYTES", 1000, "footer declares"),
                             ("MAX_METADATA_BYTES", 100, "key-value metadata"),
                             ("MAX_ROW_GROUP_ROWS", 8, "row group 0 declares 16 rows"),
                             ("MAX_ROW_GROUP_BYTES", 1000, "row group 0 declares 16 rows, \\d+ b")):
        with monkeypatch.context() as m:
            m.setattr(parquet_guard, name, value)
            with pytest.raises(FormatError, match=f"{SHARD}: .*{msg}"):
                with open(path, "rb") as f:
                    parquet_guard.open_parquet(f, SHARD)
            with pytest.raises(FormatError, match=f"{SHARD}: .*{msg}"):
                ImageNetMultiGranular(root, transform=None, use_index=False)
    data = bytearray((root / SHARD).read_bytes())
    data[-8:-4] = (2 ** 31).to_bytes(4, "little")     # a footer length past the file
    (root / SHARD).write_bytes(bytes(data))
    relist(root, SHARD)
    with pytest.raises(FormatError, match=r"footer declares 2147483648 bytes \(file \d+ bytes"):
        ImageNetMultiGranular(root, transform=None)[0]


def test_list_lengths_and_keys_are_bounded(root, monkeypatch):
    from tests._datasets import tiny_record

    monkeypatch.setattr(schema, "MAX_INSTANCES", 1)
    assert "2 instance metadata rows, the bound is 1" in check_record(tiny_record("train/a.JPEG"))
    monkeypatch.undo()
    with pytest.raises(FormatError, match="longer than 4096 bytes"):
        safe_relpath("a/" + "x" * 5000)
    t = pq.read_table(root / INDEX)
    keys = t.column("key").to_pylist()
    keys[5] = keys[5] + "x" * 5000                    # one key: fixed-width would be 40 x 5 KB
    pq.write_table(t.set_column(0, "key", pa.array(keys)), root / INDEX)
    relist(root, INDEX)
    with pytest.raises(FormatError, match=rf"{INDEX}: row 5: column key: 5\d+ bytes \(keys are "
                                          r"1..4096 bytes\)"):
        ImageNetMultiGranular(root)


def test_json_size_and_nesting_are_bounded(root, monkeypatch):
    m = json.loads((root / "manifest.json").read_text())
    deep = 0
    for _ in range(MAX_JSON_DEPTH + 5):
        deep = [deep]
    m["provenance"] = {"x": deep}
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FormatError, match="nested deeper than 32 levels"):
        load_manifest(str(root))
    with pytest.raises(FormatError, match="nested deeper"):   # past the parser's recursion
        loads_bounded("[" * 100000 + "]" * 100000, "x.json")
    with pytest.raises(FormatError, match="not valid JSON"):
        loads_bounded("1" * 5000, "x.json")                   # Python's int digit limit
    monkeypatch.setattr(manifest_mod, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(FormatError, match=r"manifest.json: \d+ bytes, larger than the bound"):
        load_manifest(str(root))


def test_manifest_fields_are_typed(root):
    m = json.loads((root / "manifest.json").read_text())
    m["splits"]["train"]["shards"][0]["rows"] = "20"
    m["splits"]["train"]["shards"][1]["sha256"] = None
    m["splits"]["train"]["index"]["bytes"] = -1
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FormatError) as e:
        ImageNetMultiGranular(root)
    text = str(e.value)
    assert f"shard {SHARD}: rows '20' is not a non-negative integer" in text
    assert "sha256 'None' is not 64 lower-case hex digits" in text
    assert f"index {INDEX}: bytes '-1' is not a non-negative integer" in text


# ----------------------------------------------------------------------------- types
def test_wrong_column_types_are_one_line_naming_file_and_column(root):
    t = pq.read_table(root / SHARD)
    i = t.schema.get_field_index("num_instances")
    pq.write_table(t.set_column(i, "num_instances", t["num_instances"].cast(pa.string()))
                   .replace_schema_metadata(t.schema.metadata), root / SHARD, row_group_size=16)
    relist(root, SHARD)
    for cls in (ImageNetMultiGranular, ImageNetMultiGranularStream):
        with pytest.raises(FormatError, match=f"^{SHARD}: column num_instances is string, the "
                                              "format says int32$"):
            ds = cls(root, transform=None)
            ds[0] if cls is ImageNetMultiGranular else next(iter(ds))
    t = pq.read_table(root / INDEX)
    i = t.schema.get_field_index("width")
    pq.write_table(t.set_column(i, "width", t["width"].cast(pa.string()))
                   .replace_schema_metadata(t.schema.metadata), root / INDEX)
    relist(root, INDEX)
    with pytest.raises(FormatError, match=f"{INDEX}: column width is string, the format says "
                                          "int32"):
        ImageNetMultiGranular(root)


# ----------------------------------------------------------------------------- download
def test_download_never_holds_more_than_listed(root, tmp_path, monkeypatch):
    m = json.loads((root / "manifest.json").read_text())
    m["splits"]["train"]["shards"][0]["bytes"] -= 100  # the source sends more than listed
    (root / "manifest.json").write_text(json.dumps(m))
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="sends more than the"):
        D.download(str(root), str(dest), progress=False, retries=0)
    assert not list((dest / "shards").glob("train-00000*"))
    monkeypatch.setattr(D, "MAX_MANIFEST_BYTES", 50)
    with pytest.raises(FormatError, match="larger than the bound"):
        D.fetch_manifest(str(root), retries=0)


def test_download_refuses_a_symlink_out_of_dest(root, tmp_path):
    dest = tmp_path / "dest"
    (dest / "shards").mkdir(parents=True)
    os.symlink(tmp_path / "victim", dest / "shards" / "train-00000.parquet.part")
    with pytest.raises(FormatError, match="symlink leads outside"):
        D.download(str(root), str(dest), progress=False, retries=0)
    assert not (tmp_path / "victim").exists()
