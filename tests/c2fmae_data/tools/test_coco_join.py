"""COCO ground truth joins its own images: the README's convert-coco -> verify --imagenet-root ->
DataLoader commands, run verbatim on the real coco-tiny sample (``coco`` is a symlink to it)."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def readme_coco_commands() -> "list[str]":
    """The three lines after the README's '# COCO ground truth' comment: convert, verify, load."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("# COCO ground truth"))
    cmds = [ln for ln in lines[start:] if not ln.startswith("#")][:3]
    assert cmds[0].startswith("c2fmae-data convert-coco OUT --instances coco/")
    assert cmds[1].startswith("c2fmae-data verify OUT --imagenet-root coco")
    assert cmds[2].startswith("python3 -c") and "DataLoader" in cmds[2]
    return cmds


def run(cmd: str, cwd: Path) -> "subprocess.CompletedProcess[str]":
    argv = shlex.split(cmd)
    if argv[0] == "c2fmae-data":      # this checkout's CLI, whatever is installed
        argv = [sys.executable, "-m", "c2fmae_data.cli", *argv[1:]]
    elif argv[0] == "python3":
        argv[0] = sys.executable
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_readme_coco_commands_join_the_real_images(coco_tiny, tmp_path):
    (tmp_path / "coco").symlink_to(coco_tiny.resolve(), target_is_directory=True)
    convert, check, load = readme_coco_commands()
    r = run(convert, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "50 rows (50 ok, 0 failed)" in r.stdout
    from c2fmae_data.format.manifest import load_manifest

    m = load_manifest(str(tmp_path / "OUT"))
    assert list(m["splits"]) == ["val"]                       # the split name stays val
    assert m["splits"]["val"]["shards"][0]["first_key"].startswith("val2017/")
    assert m["provenance"]["key_prefix"] == "val2017"
    r = run(check, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "50 source images checked" in r.stdout and r.stdout.rstrip().endswith("OK")
    r = run(load, tmp_path)
    assert r.returncode == 0, r.stderr
    keys = eval(r.stdout.strip())     # the printed list of the batch's keys
    assert len(keys) == 4 and all(k.startswith("val2017/") and k.endswith(".jpg") for k in keys)
    assert all((coco_tiny / k).is_file() for k in keys)


def test_key_prefix_is_the_images_folder_name(coco_tiny):
    from c2fmae_data.tools.coco import key_prefix

    assert key_prefix(str(coco_tiny / "val2017") + "/") == "val2017"
    assert key_prefix(".") == Path.cwd().name


@pytest.mark.parametrize("bad", ["/", "missing_folder"])
def test_images_folder_refused_in_one_line(tmp_path, bad):
    from c2fmae_data.cli import main

    ann = tmp_path / "instances_val.json"
    ann.write_text('{"images": [], "annotations": [], "categories": []}')
    assert main(["convert-coco", str(tmp_path / "o"), "--instances", str(ann),
                 "--images", bad]) == 2
    assert not (tmp_path / "o").exists()
