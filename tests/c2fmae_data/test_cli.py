"""The c2fmae-data CLI: convert -> verify -> inspect (stats + grid), plugins, the console script."""
from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint

import numpy as np
import pytest
from PIL import Image

from c2fmae_data import cli
from c2fmae_data.format.schema import failed_record
from c2fmae_data.tools.inspection import TILE, dataset_stats, instance_colours
from c2fmae_data.format.manifest import build_manifest
from c2fmae_data.format.shards import write_shard
from tests._datasets import tiny_record


@pytest.fixture(scope="module")
def panoptic_root(coco_panoptic_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("pan")
    d = coco_panoptic_sample / "sample_data"
    rc = cli.main(["convert-coco", str(out), "--panoptic", str(d / "panoptic_examples.json"),
                   str(d / "panoptic_examples"), "--images", str(d / "input_images"),
                   "--split", "val", "--self-contained", "--quiet"])
    assert rc == 0
    return out


def test_convert_verify_inspect_grid(panoptic_root, tmp_path, capsys):
    assert cli.main(["verify", str(panoptic_root), "--full"]) == 0
    grid = tmp_path / "grid.png"
    assert cli.main(["inspect", str(panoptic_root), "--grid", str(grid), "--n", "16"]) == 0
    out = capsys.readouterr().out
    assert "rows 2  ok 2  failed 0" in out and "none (ground truth): 2" in out
    from c2fmae_data.tools.grid import panel_origin

    with Image.open(grid) as im:  # 2 ok samples -> one row of 2 x (RGB | instance | semantic)
        assert im.size[0] == 2 * 3 * TILE + 8 and im.size[1] > TILE
        a = np.asarray(im.convert("RGB"))
    (x, y), (xs, _) = panel_origin(0, 0), panel_origin(0, 2)
    rgb, sem = a[y:y + TILE, x:x + TILE], a[y:y + TILE, xs:xs + TILE]
    assert rgb.std() > 20  # the real photo, not the grey placeholder
    from c2fmae_data.format.categories import semantic_palette

    person = np.array(semantic_palette()[0], np.uint8)
    assert (sem == person).all(-1).sum() > 100  # semantic drawn in the COCO palette


def test_grid_refuses_labels_only_without_image_root(tmp_path):
    from c2fmae_data.tools.inspection import draw_grid

    write_shard(str(tmp_path), "train", 0, [tiny_record(f"train/{i}.JPEG") for i in range(5)])
    build_manifest(str(tmp_path))
    with pytest.raises(ValueError, match="labels only .* --imagenet-root DIR, the folder holding "
                                         "train/"):
        draw_grid(str(tmp_path), str(tmp_path / "g.png"), n=5)   # not grey boxes
    assert not (tmp_path / "g.png").exists()
    cols = instance_colours(40)
    assert len({tuple(c) for c in cols[1:]}) == 40 and tuple(cols[0]) == (0, 0, 0)


def test_inspect_stats_are_right(tmp_path, capsys):
    recs = [tiny_record(f"train/a{i}.JPEG", class_index=c) for i, c in enumerate([0, 0, 7])]
    recs[2]["threshold"] = 0.25
    recs.append(failed_record("train/z.JPEG", "no box above 0.05"))
    write_shard(str(tmp_path), "train", 0, recs)
    build_manifest(str(tmp_path))
    s = dataset_stats(str(tmp_path))
    assert (s["rows"], s["ok"], s["failed"], s["instances"]) == (4, 3, 1, 6)
    assert s["classes"] == {"covered": 2, "of": 1000, "min_per_class": 1, "max_per_class": 2}
    assert s["instances_per_image"] == {"2": 3}
    assert s["thresholds"] == {"0.25": 1, "0.30": 2}
    assert s["instance_categories"] == {"person": 3, "horse": 3}  # indices 0, 17
    assert s["failures"] == [{"key": "train/z.JPEG", "reason": "no box above 0.05"}]
    assert cli.main(["inspect", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failure_reasons"] == {"no box above 0.05": 1}


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert cli.main(["convert-coco", str(tmp_path / "o"), "--images", str(tmp_path)]) == 2


def _fake_eps(monkeypatch, tmp_path, eps):
    (tmp_path / "fake_plugin.py").write_text(
        "def register(sub):\n"
        "    p = sub.add_parser('hello')\n"
        "    p.add_argument('--name', default='world')\n"
        "    p.set_defaults(func=lambda a: print('hello', a.name) or 0)\n"
        "def broken(sub):\n"
        "    raise RuntimeError('model weights missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "_entry_points", lambda: [
        EntryPoint(name, value, cli.PLUGIN_GROUP) for name, value in eps])


def test_plugin_commands_and_broken_plugin(tmp_path, monkeypatch, capsys):
    _fake_eps(monkeypatch, tmp_path, [("bad", "fake_plugin:broken"),
                                      ("gone", "no_such_module:register"),
                                      ("hello", "fake_plugin:register")])
    assert cli.main(["hello", "--name", "c2f"]) == 0
    cap = capsys.readouterr()
    assert "hello c2f" in cap.out
    assert "plugin 'bad'" in cap.err and "model weights missing" in cap.err
    assert "plugin 'gone'" in cap.err
    write_shard(str(tmp_path / "ds"), "train", 0, [tiny_record("train/a.JPEG")])
    assert cli.main(["manifest", str(tmp_path / "ds")]) == 0  # built-ins still work
    assert (tmp_path / "ds" / "manifest.json").exists()
    assert cli.main(["manifest", str(tmp_path / "nothing")]) == 2
    assert "no finished shards" in capsys.readouterr().err


def test_console_script_is_installed():
    r = subprocess.run([sys.executable, "-c",
                        "import sys; from importlib.metadata import entry_points as e;"
                        "ep = [x for x in e(group='console_scripts') if x.name == 'c2fmae-data'];"
                        "sys.argv = ['c2fmae-data', '--help']; ep[0].load()()"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "convert-coco" in r.stdout and "verify" in r.stdout
