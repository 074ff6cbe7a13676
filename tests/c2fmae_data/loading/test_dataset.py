"""ImageNetMultiGranular: real ImageNet sample through DataLoader workers, joins and their errors,
failed rows, EXIF, colour modes, DistributedSampler, fsspec roots, pickling."""
from __future__ import annotations

import io
import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from tests._datasets import (blob_masks, imagenet_sample_dataset, png_bytes, record,
                             synthetic_dataset, write_dataset)
from c2fmae_data import ImageNetMultiGranular
from c2fmae_data.format.categories import imagenet_wnid_to_index
from c2fmae_data.format.schema import FormatError
from c2fmae_data.loading.source import SampleError

SMALL = dict(size=32, stride=4)


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory, imagenet_sample):
    root = tmp_path_factory.mktemp("inet") / "ds"
    keys = imagenet_sample_dataset(root, imagenet_sample, shards=3)
    return root, keys


def test_real_imagenet_sample_through_two_workers(sample_root, imagenet_sample):
    root, keys = sample_root
    ds = ImageNetMultiGranular(root, imagenet_sample)
    assert len(ds) == len(keys) == 100 and ds.keys() == keys
    seen = []
    for b in DataLoader(ds, batch_size=16, shuffle=True, num_workers=2):
        n = len(b["key"])
        assert b["rgb"].shape == (n, 3, 224, 224) and b["rgb"].dtype == torch.float32
        assert b["instance"].shape == b["semantic"].shape == (n, 56, 56)
        assert b["instance"].dtype == b["semantic"].dtype == torch.int64
        sem, inst = b["semantic"], b["instance"]
        assert ((sem < 133) | (sem == 255)).all() and ((inst <= 32) | (inst == 255)).all()
        wnid_ix = imagenet_wnid_to_index()
        assert b["label"].tolist() == [wnid_ix[k.split("/")[1]] for k in b["key"]]
        seen += b["key"]
    assert sorted(seen) == keys
    assert -2.2 < float(b["rgb"].mean()) < 2.7 and b["rgb"].std() > 0.1


def test_eval_transform_and_strides(sample_root, imagenet_sample):
    root, keys = sample_root
    gray = next(i for i, k in enumerate(keys)
                if Image.open(imagenet_sample / k).mode == "L")
    ev = ImageNetMultiGranular(root, imagenet_sample, transform="eval", stride=1)
    a, b = ev[gray], ev[gray]
    assert a["rgb"].shape == (3, 224, 224) and a["instance"].shape == (224, 224)
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["semantic"], b["semantic"])
    raw = ImageNetMultiGranular(root, imagenet_sample, transform=None)[gray]
    assert raw["image"].mode == "RGB" and raw["instance"].shape == raw["image"].size[::-1]


@pytest.fixture()
def joined(tmp_path):
    images = tmp_path / "imagenet"
    keys = synthetic_dataset(tmp_path / "ds", n=8, image_root=images, shards=2)
    return tmp_path / "ds", images, keys


def test_hash_mismatch_and_missing_image_name_the_key(joined):
    root, images, keys = joined
    p = images / keys[2]
    p.write_bytes(p.read_bytes()[:-1] + b"\x00")      # same size, other bytes
    (images / keys[5]).unlink()
    ds = ImageNetMultiGranular(root, images, **SMALL)
    with pytest.raises(SampleError, match="sha256") as e:
        ds[2]
    assert e.value.key == keys[2] and keys[2] in str(e.value)
    with pytest.raises(SampleError, match="not found") as e:
        ds[5]
    assert keys[5] in str(e.value)
    assert ds[3]["key"] == keys[3]
    # without the hash check the modified file loads
    assert ImageNetMultiGranular(root, images, verify_hash=False, **SMALL)[2]["key"] == keys[2]

    skip = ImageNetMultiGranular(root, images, on_error="skip", **SMALL)
    got = [s["key"] for s in DataLoader(skip, batch_size=None, num_workers=2)]
    assert len(got) == 8 and keys[2] not in got and keys[5] not in got
    assert skip.errors == 2          # counted across both workers
    assert pickle.loads(pickle.dumps(skip)).errors == 2


def test_failed_rows_excluded_and_counted(tmp_path):
    keys = synthetic_dataset(tmp_path, n=6, failed=2)
    ds = ImageNetMultiGranular(tmp_path, **SMALL)
    assert len(ds) == 4 and ds.num_failed == 2 and ds.keys() == keys[:4]
    full = ImageNetMultiGranular(tmp_path, include_failed=True, **SMALL)
    assert len(full) == 6
    s = full[5]
    assert s["key"] == keys[5] and (s["instance"] == 255).all() and (s["semantic"] == 255).all()


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def test_exif_orientation_applied_and_size_mismatch_names_key(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6                                   # stored 60x40, displayed 40x60
    data = _jpeg(Image.new("RGB", (60, 40), (200, 30, 30)), exif=exif)
    inst, sem = blob_masks(40, 60, seed=1)
    good = record("train/n01440764/upright.jpg", data, inst, sem)
    inst_raw, sem_raw = blob_masks(60, 40, seed=1)
    bad = record("train/n01440764/raw.jpg", data, inst_raw, sem_raw)
    write_dataset(tmp_path, [good, bad], shards=1, self_contained=True)
    ds = ImageNetMultiGranular(tmp_path, transform=None)
    assert ds[1]["image"].size == (40, 60) and ds[1]["key"] == good["key"]
    with pytest.raises(SampleError, match="EXIF") as e:
        ds[0]
    assert e.value.key == bad["key"]


def test_grayscale_cmyk_and_alpha_become_rgb(tmp_path):
    inst, sem = blob_masks(24, 16, seed=2)
    imgs = {"gray.png": png_bytes(np.full((16, 24), 77, np.uint8)),
            "cmyk.jpg": _jpeg(Image.new("CMYK", (24, 16), (0, 255, 255, 0))),
            "rgba.png": png_bytes(np.full((16, 24, 4), (10, 200, 30, 0), np.uint8))}
    write_dataset(tmp_path, [record(f"train/n01440764/{k}", v, inst, sem)
                             for k, v in imgs.items()], shards=1, self_contained=True)
    ds = ImageNetMultiGranular(tmp_path, transform=None)
    got = {s["key"].split("/")[-1]: np.asarray(s["image"]) for s in (ds[i] for i in range(3))}
    assert all(a.shape == (16, 24, 3) for a in got.values())
    assert (got["gray.png"] == 77).all()
    assert abs(got["cmyk.jpg"][..., 0].mean() - 255) < 3 and got["cmyk.jpg"][..., 1].mean() < 3
    assert (got["rgba.png"] == (10, 200, 30)).all()


def test_distributed_sampler_two_ranks_two_workers_each_key_once(tmp_path):
    keys = synthetic_dataset(tmp_path, n=12, shards=3)
    ds = ImageNetMultiGranular(tmp_path, **SMALL)
    seen = Counter()
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
        sampler.set_epoch(1)
        for b in DataLoader(ds, batch_size=2, sampler=sampler, num_workers=2):
            seen.update(b["key"])
    assert sorted(seen) == keys and set(seen.values()) == {1}


def test_fsspec_roots_memory_and_file_urls(tmp_path):
    import fsspec

    keys = synthetic_dataset("memory://c2fmae-test/ds", n=5, shards=2,
                             image_root=tmp_path / "imgs")
    mem = fsspec.filesystem("memory")
    for k in keys:  # the images on a remote-style filesystem too
        mem.pipe(f"/c2fmae-test/imagenet/{k}", (tmp_path / "imgs" / k).read_bytes())
    ds = ImageNetMultiGranular("memory://c2fmae-test/ds", "memory://c2fmae-test/imagenet",
                               **SMALL)
    assert [ds[i]["key"] for i in range(len(ds))] == keys
    mem.rm("/c2fmae-test", recursive=True)

    synthetic_dataset(tmp_path / "local", n=5, image_root=tmp_path / "imgs")
    ds = ImageNetMultiGranular(f"file://{tmp_path}/local", f"file://{tmp_path}/imgs", **SMALL)
    got = [b["key"][0] for b in DataLoader(ds, batch_size=1, num_workers=2)]
    assert sorted(got) == ds.keys() and len(got) == 5
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder"):   # at construction
        ImageNetMultiGranular(f"file://{tmp_path}/local", f"file://{tmp_path}/nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SampleError, match="not found"):
        ImageNetMultiGranular(f"file://{tmp_path}/local", f"file://{tmp_path}/empty")[0]


def test_pickles_without_handles_and_bad_arguments(joined):
    root, images, keys = joined
    ds = ImageNetMultiGranular(root, images, **SMALL)
    ds[0]                                              # opens a shard and caches a row group
    clone = pickle.loads(pickle.dumps(ds))
    assert not clone._open and clone._cached == (None, None)
    assert clone[7]["key"] == keys[7]
    with pytest.raises(FormatError, match="no split 'val'"):
        ImageNetMultiGranular(root, images, split="val")
    with pytest.raises(ValueError, match="on_error"):
        ImageNetMultiGranular(root, images, on_error="ignore")
    with pytest.raises(SampleError, match="no image_bytes") as e:
        ImageNetMultiGranular(root, **SMALL)[1]         # labels-only set without imagenet_root
    assert e.value.key == keys[1]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_labels_are_exposed_without_decoding(imagenet_sample, tmp_path):
    from c2fmae_data import ImageNetMultiGranular
    from c2fmae_data.format.categories import imagenet_wnid_to_index

    imagenet_sample_dataset(tmp_path / "ds", imagenet_sample)
    ds = ImageNetMultiGranular(tmp_path / "ds", imagenet_root=imagenet_sample)
    expect = [imagenet_wnid_to_index()[k.split("/")[1]] for k in ds.keys()]
    assert ds.labels.tolist() == expect and len(set(expect)) == len(ds) == 100


def test_loader_and_labeler_decode_the_same_pixels():
    """16-bit, float, CMYK, palette and EXIF-rotated images: the labeler's pixels (what the masks
    were made on) equal the training loader's."""
    from labeling.images import SourceImage, prepare

    from c2fmae_data.loading.source import decode_rgb

    rng = np.random.default_rng(0)
    g16 = Image.fromarray((rng.random((9, 7)) * 65535).astype(np.uint16))
    flt = Image.fromarray(rng.random((9, 7)).astype(np.float32) * 3 - 1)
    rgb = Image.fromarray((rng.random((9, 7, 3)) * 255).astype(np.uint8))
    rot = io.BytesIO()
    exif = rgb.getexif()
    exif[0x0112] = 6
    rgb.save(rot, format="JPEG", exif=exif)
    cases = {"png16": g16, "float": flt, "cmyk": rgb.convert("CMYK"), "p": rgb.convert("P")}
    blobs = {"rot": rot.getvalue()}
    for name, im in cases.items():
        buf = io.BytesIO()
        im.save(buf, format="TIFF" if name in ("float", "cmyk") else "PNG")
        blobs[name] = buf.getvalue()
    for name, data in blobs.items():
        lab = prepare(SourceImage(name, "n01440764", 0, data))
        assert not isinstance(lab, dict), (name, lab)
        np.testing.assert_array_equal(lab.rgb, np.asarray(decode_rgb(data)), err_msg=name)
    upright = prepare(SourceImage("rot", "n01440764", 0, blobs["rot"]))
    assert upright.rgb.shape[:2] == (7, 9)      # the EXIF-rotated 7x9 (w x h) image: 9x7
