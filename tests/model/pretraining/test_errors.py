"""User mistakes on the pretraining CLI: one line naming the flag, exit 2, no traceback, nothing
written; stale checkpoint temporaries and redone log records."""
from __future__ import annotations

import json
import os

import pytest
from tests._datasets import synthetic_dataset
from tests._pretrain import TINY_MODEL

from model.pretraining import checkpoint as ckpt
from model.pretrain import main, parse_args
from model.pretraining.logs import truncate_log

TINY = [a for o in TINY_MODEL for a in ("--set", o)] + ["--batch-per-gpu", "2", "--total-batch",
                                                          "2", "--max-steps", "1"]


@pytest.fixture(scope="module")
def labels_only(tmp_path_factory):
    d = tmp_path_factory.mktemp("labels-only")
    synthetic_dataset(d / "ds", n=4, size=(80, 64), image_root=d / "images")
    return str(d / "ds"), str(d / "images")


def _run(capsys, tmp_path, *argv):
    out = tmp_path / "out"
    rc = main(["--config", "pretrain_demo", "--output-dir", str(out), *TINY, *argv])
    err = capsys.readouterr().err.strip()
    return rc, err, out


def _one_line_error(rc, err, out, *words):
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()  # neither config.yaml nor an empty log.jsonl


def test_labels_only_dataset_without_imagenet_root(capsys, tmp_path, labels_only):
    ds, _ = labels_only
    _one_line_error(*_run(capsys, tmp_path, "--data", ds), "--imagenet-root", "labels only")


def test_missing_imagenet_root_folder(capsys, tmp_path, labels_only):
    ds, _ = labels_only
    _one_line_error(*_run(capsys, tmp_path, "--data", ds, "--imagenet-root",
                          str(tmp_path / "nope")), "--imagenet-root", "no such folder")


def test_data_folder_without_manifest(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line_error(*_run(capsys, tmp_path, "--data", str(tmp_path / "empty")), "--data",
                    "manifest.json")


def test_missing_resume_checkpoint(capsys, tmp_path, labels_only):
    ds, images = labels_only
    _one_line_error(*_run(capsys, tmp_path, "--data", ds, "--imagenet-root", images,
                          "--resume", str(tmp_path / "no.pt")), "--resume")


def test_bad_config_offers_pretrain_configs_only(capsys, tmp_path):
    rc, err, out = _run(capsys, tmp_path, "--config", "finetune_tiny_cpu")
    _one_line_error(rc, err, out, "--config", "pretrain_tiny", "model.finetune")
    assert "choices: pretrain_demo, pretrain_tiny" in err
    assert "finetune_vitb_400ep" not in err


def test_labels_only_dataset_trains_with_imagenet_root(capsys, tmp_path, labels_only):
    ds, images = labels_only
    rc, err, out = _run(capsys, tmp_path, "--data", ds, "--imagenet-root", images,
                        "--set", "train.log_every_steps=1")
    assert rc == 0, err
    assert [json.loads(x)["step"] for x in open(out / "log.jsonl")] == [1]


def test_help_example_lines_are_intact(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    # the docstring's shell continuation survives (a non-raw docstring joined the two lines)
    assert "--config pretrain_vit_base_400ep \\\n        --data ROOT" in text
    assert "pretrain_vit_small" in text and "finetune_" not in text


def test_stale_temporaries_are_removed_but_nothing_else(tmp_path):
    names = [".last.pt.tmp-0123456789ab", ".checkpoint-0004.pt.tmp-abcdefabcdef",
             ".notes.txt.tmp-x", "last.pt.tmp-0123456789ab", "keep.pt"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    removed = ckpt.clean_stale_temps(str(tmp_path))
    assert sorted(os.path.basename(p) for p in removed) == names[1::-1]
    assert sorted(os.listdir(tmp_path)) == sorted(names[2:])


def test_truncate_log_drops_redone_steps_and_a_partial_line(tmp_path):
    p = tmp_path / "log.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3, 4)]
    probe = json.dumps({"step": 2, "epoch": 1, "probe": {}})
    p.write_text("\n".join(lines[:2] + [probe] + lines[2:]) + '\n{"step": 5, "lo')
    assert truncate_log(str(p), 2) == 3   # steps 3, 4 and the half-written line
    assert p.read_text().splitlines() == lines[:2] + [probe]
    assert truncate_log(str(p), 2) == 0
