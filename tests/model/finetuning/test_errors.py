"""User mistakes on the fine-tuning CLIs: one line naming the flag, exit 2, no traceback, nothing
written."""
from __future__ import annotations

import numpy as np
import pytest
from tests._datasets import synthetic_dataset
from PIL import Image

from c2fmae_data.format.categories import imagenet_wnids
from model import finetune, multigranular_ft


@pytest.fixture(scope="module")
def train_only(tmp_path_factory):
    """An ImageNet-layout folder with train/ and no val/."""
    root = tmp_path_factory.mktemp("inet")
    (root / "train" / imagenet_wnids()[0]).mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(
        root / "train" / imagenet_wnids()[0] / "a.png")
    return root


def _fails(capsys, tmp_path, cli, *argv, words=()):
    out = tmp_path / "out"
    rc = cli(["--output-dir", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()
    return err


def test_no_val_folder(capsys, tmp_path, train_only):
    _fails(capsys, tmp_path, finetune.cli, "--config", "finetune_tiny_cpu", "--imagenet-root",
           str(train_only), words=("--imagenet-root", "no val/ folder", "data.val_split"))


def test_missing_pretrained_file(capsys, tmp_path, train_only):
    _fails(capsys, tmp_path, finetune.cli, "--config", "finetune_tiny_cpu", "--imagenet-root",
           str(train_only), "--set", "data.val_split=train", "--pretrained",
           str(tmp_path / "enc.safetensors"), words=("--pretrained", "no such file"))


def test_unreadable_pretrained_file(capsys, tmp_path, train_only):
    bad = tmp_path / "enc.safetensors"
    bad.write_bytes(b"not safetensors")
    _fails(capsys, tmp_path, finetune.cli, "--config", "finetune_tiny_cpu", "--imagenet-root",
           str(train_only), "--set", "data.val_split=train", "--pretrained", str(bad),
           words=("--pretrained",))


def test_no_imagenet_root(capsys, tmp_path):
    _fails(capsys, tmp_path, finetune.cli, "--config", "finetune_tiny_cpu",
           words=("--imagenet-root",))


def test_bad_config_offers_finetune_configs(capsys, tmp_path):
    err = _fails(capsys, tmp_path, finetune.cli, "--config", "pretrain_tiny",
                 words=("--config", "finetune_tiny_cpu", "model.pretrain"))
    assert "pretrain_demo" not in err


def test_help_lists_the_shipped_configs(capsys):
    with pytest.raises(SystemExit):
        finetune.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "finetune_tiny_cpu, finetune_vitb_1600ep, finetune_vitb_400ep" in text


def test_multigranular_without_manifest_or_pretrained(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    _fails(capsys, tmp_path, multigranular_ft.cli, "--data", str(tmp_path / "empty"),
           "--pretrained", "x.pt", words=("--data", "manifest.json"))
    ds = tmp_path / "ds"
    synthetic_dataset(ds, n=2, size=(32, 32))
    _fails(capsys, tmp_path, multigranular_ft.cli, "--data", str(ds),
           "--pretrained", str(tmp_path / "no.pt"), words=("--pretrained", "no such file"))
    _fails(capsys, tmp_path, multigranular_ft.cli, "--data", str(ds),
           words=("--pretrained", "required"))
