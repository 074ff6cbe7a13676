"""ImageNetMultiGranularStream: shards split across DDP ranks x DataLoader workers, each key once;
epoch-seeded deterministic shuffle; equal counts per rank with ``even``; failed rows and errors."""
from __future__ import annotations

from collections import Counter

import pytest
from torch.utils.data import DataLoader

from tests._datasets import synthetic_dataset
from c2fmae_data import ImageNetMultiGranularStream

SMALL = dict(size=32, stride=4)


@pytest.fixture(scope="module")
def stream_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    keys = synthetic_dataset(root, n=23, shards=5, failed=3)  # 5 units of 4-5 rows
    return root, keys


def _keys(ds, workers=2):
    return [k for b in DataLoader(ds, batch_size=3, num_workers=workers) for k in b["key"]]


def test_two_ranks_two_workers_yield_every_key_once(stream_root):
    root, keys = stream_root
    ok = keys[:20]
    seen, per_rank = Counter(), []
    for rank in range(2):
        ds = ImageNetMultiGranularStream(root, rank=rank, world_size=2, seed=1, buffer_size=4,
                                         **SMALL)
        ds.set_epoch(3)
        got = _keys(ds)
        per_rank.append(len(got))
        assert len(got) == len(ds)
        seen.update(got)
    assert sorted(seen) == ok and set(seen.values()) == {1}   # failed rows never yielded
    assert ds.num_failed == 3 and all(n > 0 for n in per_rank)


def test_shuffle_is_deterministic_per_epoch(stream_root):
    root, _ = stream_root
    ds = ImageNetMultiGranularStream(root, seed=7, buffer_size=8, **SMALL)
    ds.set_epoch(0)
    a, b = _keys(ds), _keys(ds)
    ds.set_epoch(1)
    c = _keys(ds)
    assert a == b and a != c and sorted(a) == sorted(c)
    in_order = [s["key"] for s in ImageNetMultiGranularStream(root, shuffle=False, **SMALL)]
    assert in_order == sorted(in_order) and sorted(a) == in_order


def test_even_gives_every_rank_and_worker_the_same_count(stream_root):
    root, _ = stream_root
    counts = []
    for rank in range(3):
        ds = ImageNetMultiGranularStream(root, rank=rank, world_size=3, even=True, **SMALL)
        got = _keys(ds, workers=2)
        assert len(set(got)) == len(got) and len(got) <= len(ds)
        counts.append(len(got))
    assert len(set(counts)) == 1 and counts[0] > 0
    uneven = [len(ImageNetMultiGranularStream(root, rank=r, world_size=3, **SMALL))
              for r in range(3)]
    assert sum(uneven) == 20 and len(set(uneven)) > 1


def test_errors_skip_and_raise(tmp_path):
    images = tmp_path / "imgs"
    keys = synthetic_dataset(tmp_path / "ds", n=6, shards=2, image_root=images)
    (images / keys[4]).unlink()
    ds = ImageNetMultiGranularStream(tmp_path / "ds", images, on_error="skip", **SMALL)
    got = _keys(ds)
    assert sorted(got) == sorted(set(keys) - {keys[4]}) and ds.errors == 1
    with pytest.raises(Exception, match=keys[4]):
        _keys(ImageNetMultiGranularStream(tmp_path / "ds", images, shuffle=False, **SMALL), 0)
    with pytest.raises(ValueError, match="rank"):
        len(ImageNetMultiGranularStream(tmp_path / "ds", images, rank=2, world_size=2))
