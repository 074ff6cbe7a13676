"""The README's and the docs' commands and Python snippets run as written.

Every command (fenced or inline) names a program, module, script and cluster yaml that exist, and
its options parse with the real parser. Every import of every Python snippet runs. The cheap
snippets run in full (``RUNNABLE``), with their placeholder paths pointed at a synthetic dataset.
"""
from __future__ import annotations

import configparser

import pytest

from tests._datasets import synthetic_dataset
from tests._snippets import REPO, check_command, doc_commands, doc_python_blocks, run_imports

COMMANDS = doc_commands()
BLOCKS = doc_python_blocks()


def test_the_docs_hold_commands_and_snippets():
    progs = {argv[0] for _, argv, _ in COMMANDS}
    assert {"c2fmae-data", "python", "python3", "torchrun", "ray"} <= progs
    assert len(COMMANDS) > 60 and len(BLOCKS) > 8


@pytest.mark.parametrize("where,argv,full", COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_command_exists_and_parses(where, argv, full):
    check_command(argv, full)


def test_a_stale_option_or_module_is_caught():
    with pytest.raises(AssertionError, match="does not parse"):
        check_command(["c2fmae-data", "verify", "ROOT", "--no-such-option"])
    with pytest.raises(AssertionError, match="no such module"):
        check_command(["python", "-m", "model.no_such_command"])
    with pytest.raises(AssertionError, match="no such file"):
        check_command(["python", "bench/labeling.py", "--gpu"])
    with pytest.raises(AssertionError, match="unknown option"):
        check_command(["c2fmae-data", "label", "--gpus"], full=False)


@pytest.mark.parametrize("where,source", BLOCKS, ids=[w for w, _ in BLOCKS])
def test_snippet_imports_run(where, source):
    run_imports(source, where)


def test_plugin_entry_points_in_the_docs_exist():
    import importlib

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    for line in cfg["options.entry_points"]["c2fmae_data.commands"].strip().splitlines():
        target = line.split("=", 1)[1].strip()
        mod, attr = target.split(":")
        assert callable(getattr(importlib.import_module(mod), attr)), target
        assert target in (REPO / "docs" / "FORMAT.md").read_text(), f"FORMAT.md lacks {target}"


# ----------------------------------------------------------------------------- full runs
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs") / "ds"
    synthetic_dataset(root, n=8)
    return str(root)


@pytest.fixture(scope="module")
def batch(data):
    from torch.utils.data import DataLoader

    from c2fmae_data import ImageNetMultiGranular

    return next(iter(DataLoader(ImageNetMultiGranular(data, transform="train"), batch_size=2)))


def _encoder(path):
    from model import build_model
    from model.export import export_model

    export_model(build_model("c2fmae_vit_test"), str(path))


# (file, first line) -> placeholders to replace and names the snippet expects to exist
RUNNABLE = {
    ("README.md", "from torch.utils.data import DataLoader"):
        {"path/or/s3://bucket/c2fmae-in1k": "{data}", "/data/imagenet": "{data}"},
    ("README.md", "from model import build_model"): {"step / total_steps": "0.1"},
    ("docs/MODEL.md", "from model import build_model"): {"step / total_steps": "0.1"},
    ("docs/PRETRAIN.md", "from model.export import create_timm_model"): {},
    ("docs/PRETRAIN.md", "from model.pretraining.config import load_config"):
        {"data.root=/data/demo": "data.root={data}", "train.max_steps=50": "train.max_steps=2"},
}


def _block(where_file: str, first: str) -> str:
    hits = [s for w, s in BLOCKS if w.split(":")[0] == where_file and s.startswith(first)]
    assert len(hits) == 1, f"{where_file}: expected one python block starting {first!r}"
    return hits[0]


@pytest.mark.parametrize("key", list(RUNNABLE), ids=[f"{f}:{l}" for f, l in RUNNABLE])
def test_cheap_snippet_runs_in_full(key, data, batch, tmp_path, monkeypatch):
    import timm
    import torch

    source = _block(*key)
    for old, new in RUNNABLE[key].items():
        assert old in source, f"{key}: placeholder {old!r} is gone; update RUNNABLE"
        source = source.replace(old, new.format(data=data))
    monkeypatch.chdir(tmp_path)
    _encoder(tmp_path / "encoder.safetensors")
    ns = {"batch": batch, "timm": timm, "torch": torch}
    exec(compile(source, f"{key[0]} snippet", "exec"), ns)
