"""Plain tools read a dataset root: the FORMAT.md one-liners (pandas, pyarrow, duckdb, Hugging Face
``datasets``) run verbatim, and the dataset card README.md that makes ``load_dataset(ROOT)`` work."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from c2fmae_data.format.card import CARD, MARK
from c2fmae_data.format.manifest import build_manifest
from c2fmae_data.format.shards import write_shard
from tests._datasets import tiny_record
from tests._datasets import good_dataset

REPO = Path(__file__).resolve().parents[3]
KEYS = {"train": [f"train/n0/{i}{j}.JPEG" for i in range(2) for j in range(3)],
        "val": ["val/v.JPEG"]}


def one_liners() -> str:
    text = (REPO / "docs" / "FORMAT.md").read_text()
    block = re.search(r"<!-- BEGIN plain-tools -->\n```python\n(.*?)```\n<!-- END plain-tools -->",
                      text, re.S)
    assert block, "docs/FORMAT.md lost its plain-tools block"
    return block.group(1)


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A two-split root whose shards/ also holds an interrupted write's leftover."""
    import fsspec.implementations.local as local

    r = good_dataset(tmp_path / "ds")
    real_mv = local.LocalFileSystem.mv

    def crash(self, *a, **k):
        raise OSError("simulated crash before the rename")
    monkeypatch.setattr(local.LocalFileSystem, "mv", crash)
    with pytest.raises(OSError, match="simulated"):
        write_shard(r, "train", 2, [tiny_record("train/n0/99.JPEG")])
    monkeypatch.setattr(local.LocalFileSystem, "mv", real_mv)
    left = [p.name for p in (tmp_path / "ds" / "shards").iterdir() if ".tmp-" in p.name]
    assert len(left) == 1 and left[0].startswith(".train-00002.parquet.tmp-")
    return r


def test_format_md_one_liners_read_every_split(root, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    assert (Path(root) / "manifest.json").exists() and (Path(root) / CARD).exists()
    env = {"ROOT": root}
    exec(one_liners(), env)
    all_keys = sorted(KEYS["train"] + KEYS["val"])
    assert sorted(env["df"]["key"]) == all_keys and env["df"].shape[1] == 15
    assert sorted(env["t"].column("key").to_pylist()) == all_keys
    assert list(env["val"]["key"]) == KEYS["val"] and list(env["val"]["num_instances"]) == [2]
    dd = env["dd"]
    assert sorted(dd) == ["train", "val"]
    assert dd["train"]["key"] == KEYS["train"] and dd["val"]["key"] == KEYS["val"]
    assert dd["val"][0]["instances"][1]["category"] == 17


def test_card_yaml_names_each_split(root):
    text = (Path(root) / CARD).read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front == {"configs": [{"config_name": "default", "data_files": [
        {"split": "train", "path": "shards/train-*.parquet"},
        {"split": "val", "path": "shards/val-*.parquet"}]}]}
    assert MARK in text and "| train | 6 | 6 | 0 | 2 |" in text


def test_card_follows_the_manifest_but_never_replaces_a_users_card(root):
    card = Path(root) / CARD
    write_shard(root, "test", 0, [tiny_record("test/t.JPEG")])
    build_manifest(root)
    assert "split: test" in card.read_text()           # rewritten with the manifest
    card.write_text("# my own card\n")
    build_manifest(root)
    assert card.read_text() == "# my own card\n"


def test_download_writes_the_card_of_what_it_holds(root, tmp_path):
    from c2fmae_data.tools.download import download

    (Path(root) / CARD).unlink()                        # the remote has no card
    dest = tmp_path / "copy"
    download(root, str(dest), progress=False, split="val")
    text = (dest / CARD).read_text()
    assert "split: val" in text and "split: train" not in text
