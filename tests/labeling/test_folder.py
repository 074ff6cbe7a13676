"""Single-machine labeling of a folder: a resume never skips images, unreadable files become
failed rows (fake models, generated images)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from c2fmae_data.format.fs import open_fs
from c2fmae_data.format.shards import iter_shard, list_shards
from c2fmae_data.tools.verify import verify
from labeling.folder import label_folder
from labeling.labeler import Labeler

WNID = "n01440764"


def _folder(tmp_path, n):
    d = tmp_path / "imgs" / "train" / WNID
    d.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((12 + i, 20, 3), 40 * i, np.uint8)).save(d / f"im{i}.JPEG")
    return tmp_path / "imgs"


def _keys(root):
    fs, base = open_fs(str(root))
    return [r["key"] for rel in list_shards(str(root)) for r in iter_shard(fs, f"{base}/{rel}", ["key"])]


def test_resume_with_other_limit_is_refused_not_silently_partial(tmp_path):
    imgs, out, lab = _folder(tmp_path, 5), tmp_path / "out", Labeler.from_preset("fake")
    quiet = {"log": lambda s: None, "shard_size": 2}
    label_folder(lab, str(imgs), str(out), limit=3, **quiet)        # shards: [0, 1], [2]
    with pytest.raises(FileExistsError, match="shard 1"):
        label_folder(lab, str(imgs), str(out), limit=5, **quiet)    # shard 1 would be [2, 3]
    assert len(_keys(out)) == 3                                      # nothing was lost or mixed
    t = label_folder(lab, str(imgs), str(out), limit=3, **quiet)    # the same run resumes
    assert t["skipped_shards"] == 2
    label_folder(lab, str(imgs), str(out), limit=5, overwrite=True, **quiet)
    assert _keys(out) == [f"train/{WNID}/im{i}.JPEG" for i in range(5)]
    assert verify(str(out), full=True).ok


def test_unreadable_file_becomes_a_failed_row(tmp_path):
    imgs = _folder(tmp_path, 2)
    (imgs / "train" / WNID / "gone.JPEG").symlink_to(tmp_path / "missing.JPEG")
    out = tmp_path / "out"
    t = label_folder(Labeler.from_preset("fake"), str(imgs), str(out), log=lambda s: None)
    assert (t["ok"], t["failed"]) == (2, 1)
    fs, base = open_fs(str(out))
    rows = {r["key"]: r for rel in list_shards(str(out))
            for r in iter_shard(fs, f"{base}/{rel}", ["key", "status", "reason"])}
    bad = rows[f"train/{WNID}/gone.JPEG"]
    assert bad["status"] == "failed" and bad["reason"].startswith("read error")
    assert verify(str(out)).ok
