"""The trainer over ``data.loader: stream`` and over the shard-window sampler: a 2-worker stream run
SIGKILLed mid-epoch and rerun gives the uninterrupted run's per-step losses (float equality);
every rank of a stream run gets the same number of batches; a map-style run resumes mid-epoch with
``ShardWindowSampler``; steps per epoch do not depend on the epoch."""
from __future__ import annotations

import pytest
from tests._datasets import synthetic_dataset
from tests._pretrain import config_file, read_log, run_until_killed, tiny_config

from c2fmae_data import ImageNetMultiGranularStream
from c2fmae_data.loading.sampler import ShardWindowSampler
from model.pretraining import checkpoint as ckpt
from model.pretraining.config import ConfigError
from model.pretrain import build_run, train
from model.pretraining.data import make_loader


@pytest.fixture(scope="module")
def uneven_root(tmp_path_factory):
    """20 rows in 3 shards of one row group each (7, 7, 6 rows): with 2 workers one reads two
    row groups (leaves rows over), the other one (starts its rows over)."""
    root = tmp_path_factory.mktemp("stream-data")
    synthetic_dataset(root, n=20, shards=3, size=(80, 64))
    return str(root)


def test_stream_sigkill_mid_epoch_with_two_workers_resumes_exactly(uneven_root, tmp_path):
    # 20 rows / (2 workers x batch 2) = 5 batches per worker: 10 steps per epoch; 13 steps
    cfg = tiny_config(uneven_root, "data.num_workers=2", "data.loader=stream", steps=13,
                      batch=2, total=2)
    cfg_path = config_file(cfg, tmp_path)
    full, out = str(tmp_path / "full"), str(tmp_path / "killed")
    r = run_until_killed(cfg_path, full, kill_at=0)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "10 steps/epoch" in r.stdout
    # killed after step 6 ran, before its save: resumes after 5 batches (odd: the resumed
    # loader's worker 0 plays worker 1), and worker 1 then starts its 6 or 7 rows over
    r = run_until_killed(cfg_path, out, kill_at=6)
    assert r.returncode == -9, r.stderr[-2000:]
    ck = ckpt.load(f"{out}/last.pt")
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (0, 5, 5)
    r = run_until_killed(cfg_path, out, kill_at=6)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = read_log(full), read_log(out)
    assert sorted(a) == sorted(b) == list(range(1, 14))
    assert [a[s]["epoch"] for s in (10, 11)] == [0, 1]         # the epoch ends at step 10
    for step in range(6, 14):
        assert b[step]["loss"] == a[step]["loss"], step        # float equality, not approx
        assert b[step]["losses"] == a[step]["losses"], step


def _batches(ds, cfg, epoch, rank):
    ds.set_epoch(epoch)
    ds.set_augment_seed(0, epoch)
    ds.set_batching(cfg["optim"]["batch_per_gpu"])
    return [list(b["key"]) for b in make_loader(ds, None, cfg, epoch, rank, False)]


def test_stream_resumes_after_any_number_of_batches(uneven_root):
    """The loader started after ``start`` batches yields exactly the rest of the epoch, for every
    ``start`` (both workers' shares skipped, the wrapped-around one past its first lap)."""
    cfg = tiny_config(uneven_root, "data.num_workers=2", "data.loader=stream")
    ds = ImageNetMultiGranularStream(uneven_root, size=64, seed=0)
    full = _batches(ds, cfg, 1, 0)
    assert len(full) == 10
    for start in range(1, 10):
        ds.set_batching(2, start=start)
        assert [list(b["key"]) for b in make_loader(ds, None, cfg, 1, 0, False)] == \
            full[start:], start


def test_stream_ranks_get_the_same_number_of_batches(tmp_path):
    root = str(tmp_path / "data")
    synthetic_dataset(root, n=38, shards=6, size=(32, 32))   # row groups of 7, 7, 7, 7, 7, 3
    cfg = tiny_config(root, "data.num_workers=2", "data.loader=stream", batch=2, total=4)
    for epoch in (0, 1):
        per_rank = [_batches(ImageNetMultiGranularStream(root, rank=r, world_size=2, size=32,
                                                         seed=0), cfg, epoch, r)
                    for r in range(2)]
        assert [len(p) for p in per_rank] == [8, 8]          # 38 // (2 x 2 x 2) x 2 workers
        assert all(len(b) == 2 for p in per_rank for b in p)
        first = {k for b in per_rank[0] for k in b}
        assert first.isdisjoint(k for b in per_rank[1] for k in b)  # ranks read other rows


def test_stream_refuses_more_readers_than_row_groups(uneven_root, tmp_path):
    cfg = tiny_config(uneven_root, "data.num_workers=4", "data.loader=stream")
    with pytest.raises(ConfigError, match="3 row groups for 1 process.* x 4 worker"):
        build_run(cfg, str(tmp_path / "out"), None, device="cpu")


def test_shard_window_is_used_and_resumes_mid_epoch(tmp_path):
    root = str(tmp_path / "data")
    synthetic_dataset(root, n=12, shards=4, size=(80, 64))
    cfg = tiny_config(root, "data.shard_window=2", steps=5, batch=2, total=2)
    run = build_run(cfg, str(tmp_path / "probe"), None, device="cpu")
    assert isinstance(run.sampler, ShardWindowSampler) and run.dataset.footer_cache >= 2
    assert run.sched.steps_per_epoch == 6
    plain = build_run(tiny_config(root, "data.shard_window=0"), str(tmp_path / "p2"), None,
                      device="cpu")
    assert not isinstance(plain.sampler, ShardWindowSampler)   # 0: the global shuffle

    train(cfg, str(tmp_path / "full"), resume=None)

    class Killed(Exception):
        pass

    def hook(rec):
        if rec["step"] == 4:
            raise Killed
    out = str(tmp_path / "killed")
    with pytest.raises(Killed):
        train(cfg, out, resume=None, on_step=hook)
    assert ckpt.load(f"{out}/last.pt")["step_in_epoch"] == 3      # mid-epoch
    train(cfg, out, resume="auto")
    a, b = read_log(tmp_path / "full"), read_log(out)
    assert sorted(a) == sorted(b) == list(range(1, 6))
    for step in (4, 5):
        assert b[step]["loss"] == a[step]["loss"], step


def test_shard_window_steps_per_epoch_do_not_depend_on_the_epoch(tmp_path):
    root = str(tmp_path / "data")
    synthetic_dataset(root, n=15, shards=5, size=(32, 32))    # 3 rows per shard
    ds = build_run(tiny_config(root), str(tmp_path / "o"), None, device="cpu").dataset
    lens = set()
    for epoch in range(6):
        for rank in range(2):   # 5 shards over 2 ranks: 2 or 3 shards, 6 or 9 rows
            s = ShardWindowSampler(ds, 2, rank, seed=0, window=2, fixed_length=True)
            s.set_epoch(epoch)
            idx = list(s)
            lens.add(len(idx))
            assert set(idx) <= set(range(15)) and s.epoch_indices()[0] == idx[0]
    assert lens == {7}                                          # 15 // 2, every epoch and rank


def test_stream_trains_from_an_fsspec_url(tmp_path):
    """An object-store root (here fsspec's in-memory filesystem, as s3:// would be) streams."""
    root = "memory://c2fmae-test/pretrain-stream"
    synthetic_dataset(root, n=8, shards=2, size=(32, 32))
    cfg = tiny_config(root, "data.loader=stream", steps=3, batch=2, total=2)
    train(cfg, str(tmp_path / "out"), resume=None)
    recs = read_log(tmp_path / "out")
    assert sorted(recs) == [1, 2, 3] and recs[3]["epoch"] == 0   # 8 rows / batch 2: 4 steps


def test_stream_with_skipped_samples_keeps_the_batch_count(tmp_path):
    """on_error=skip drops a failing sample; the reader takes more rows (starting over if need
    be), so the epoch still has its fixed number of full batches."""
    images = tmp_path / "imgs"
    keys = synthetic_dataset(tmp_path / "ds", n=12, shards=2, size=(32, 32), image_root=images)
    for k in keys[:3]:
        (images / k).unlink()                                   # 3 of one worker's 6 rows fail
    cfg = tiny_config(str(tmp_path / "ds"), "data.num_workers=2", "data.loader=stream")
    ds = ImageNetMultiGranularStream(tmp_path / "ds", images, size=32, on_error="skip")
    got = _batches(ds, cfg, 0, 0)
    assert len(got) == 6 and all(len(b) == 2 for b in got)      # 12 // (2 x 2) per worker
    assert not {k for b in got for k in b} & set(keys[:3]) and ds.errors >= 3
