"""``download URL DEST``: fetch a dataset root (manifest, then shards) into a local folder.

* The remote ``manifest.json`` is read and checked first; if ANY shard entry would land outside
  DEST (``../``, absolute path, URL) or is malformed, nothing at all is written.
* Shards are fetched in parallel threads into ``DEST/shards/<name>.part`` and renamed to their
  final name only after their size and sha256 match the manifest, so a final name never holds a
  partial file. A shard already present with the right hash is skipped.
* An interrupted transfer resumes from the ``.part`` size: over http(s) with a ``Range`` request
  (restarting from zero when the server ignores it), elsewhere (file, s3, gs, ... through fsspec)
  by seeking. Failures are retried with exponential backoff; a ``.part`` whose hash ends up wrong is
  discarded and fetched again from zero.
* ``DEST/manifest.json`` is written last, once every shard verified: a folder with a manifest is a
  complete dataset root.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable

from c2fmae_data.format.bounds import MAX_MANIFEST_BYTES, loads_bounded, read_capped
from c2fmae_data.format.schema import FormatError
from c2fmae_data.format.manifest import MANIFEST, manifest_problems, safe_relpath, write_json_atomic
from c2fmae_data.format.fs import inside_root, join, open_fs, sha256_file

CHUNK = 1 << 20
PART = ".part"


class DownloadError(RuntimeError):
    """A shard that could not be fetched and verified after all retries."""


@dataclass
class Summary:
    downloaded: "list[str]" = field(default_factory=list)
    skipped: "list[str]" = field(default_factory=list)
    resumed: "list[str]" = field(default_factory=list)
    bytes: int = 0


def _is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _remote(url: str, rel: str) -> str:
    return url.rstrip("/") + "/" + rel


def _with_retries(what: str, fn: Callable[[int], Any], retries: int, backoff: float) -> Any:
    """Call ``fn(attempt)`` until it succeeds; sleep backoff * 2**attempt between failures."""
    for attempt in range(retries + 1):
        try:
            return fn(attempt)
        except FormatError:   # the bytes break the format: fetching again will not help
            raise
        except (OSError, ValueError, DownloadError) as e:  # requests errors are OSErrors
            if attempt == retries:
                raise DownloadError(f"{what}: failed after {retries + 1} attempts: {e}") from e
            time.sleep(min(backoff * 2 ** attempt, 30.0))


def read_remote(url: str, *, timeout: float = 60, limit: "int | None" = None) -> bytes:
    """The bytes at ``url``, refused (FormatError) past ``limit`` (default: the manifest bound):
    a hostile server cannot make the reader hold more."""
    limit = MAX_MANIFEST_BYTES if limit is None else limit
    if _is_http(url):
        import requests

        with requests.get(url, timeout=timeout, stream=True) as r:
            r.raise_for_status()
            data = bytearray()
            for b in r.iter_content(CHUNK):
                data += b
                if len(data) > limit:
                    raise FormatError(f"{url}: larger than {limit} bytes, the bound for it")
            return bytes(data)
    fs, path = open_fs(url)
    with fs.open(path, "rb") as f:
        return read_capped(f, limit, url)


def fetch_manifest(url: str, *, retries: int = 3, backoff: float = 0.5) -> "dict[str, Any]":
    """The remote manifest, refused as a whole if any entry is malformed or escapes the root."""
    src = _remote(url, MANIFEST)
    data = _with_retries(src, lambda _: read_remote(src), retries, backoff)
    m = loads_bounded(data, src)
    probs = manifest_problems(m)
    if probs:
        raise FormatError(f"{src}: refusing this manifest, nothing was written:\n  "
                          + "\n  ".join(probs[:50]))
    for s in m["splits"].values():
        for e in s["shards"]:
            safe_relpath(e["file"])  # also checked above; kept explicit: never trust remote paths
    return m


def _stream_http(url: str, offset: int, timeout: float):
    """(start offset actually served, iterator of chunks)."""
    import requests

    headers = {"Range": f"bytes={offset}-"} if offset else {}
    r = requests.get(url, headers=headers, stream=True, timeout=timeout)
    if r.status_code == 416:  # nothing past offset: the part already holds everything
        r.close()
        return offset, iter(())
    r.raise_for_status()
    start = offset if (offset and r.status_code == 206) else 0
    if offset and r.status_code == 206:
        cr = r.headers.get("Content-Range", "")
        if not cr.startswith(f"bytes {offset}-"):
            r.close()
            raise DownloadError(f"{url}: server answered range {cr!r} for bytes={offset}-")
    return start, r.iter_content(CHUNK)


def _stream_fsspec(url: str, offset: int):
    fs, path = open_fs(url)

    def gen():
        with fs.open(path, "rb") as f:
            f.seek(offset)
            for b in iter(lambda: f.read(CHUNK), b""):
                yield b
    return offset, gen()


def fsspec_local():
    import fsspec

    return fsspec.filesystem("file")


def _local_sha256(path: str) -> "tuple[str, int]":
    return sha256_file(fsspec_local(), path, CHUNK)


class _Fetcher:
    def __init__(self, url: str, dest: str, retries: int, backoff: float, timeout: float,
                 bar=None):
        self.url, self.dest = url, dest
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.bar = bar
        self.lock = threading.Lock()
        self.summary = Summary()

    def _progress(self, n: int) -> None:
        with self.lock:
            self.summary.bytes += n
            if self.bar is not None:
                self.bar.update(n)

    def shard(self, e: "dict[str, Any]") -> None:
        rel = safe_relpath(e["file"])
        local = fsspec_local()
        final = inside_root(local, self.dest, rel)       # no symlink in DEST leads out of it
        part = inside_root(local, self.dest, rel + PART)
        size, sha = int(e["bytes"]), e["sha256"]
        if os.path.exists(final) and os.path.getsize(final) == size \
                and _local_sha256(final)[0] == sha:
            with self.lock:
                self.summary.skipped.append(rel)
            if self.bar is not None:
                self.bar.update(size)
            return
        os.makedirs(os.path.dirname(final), exist_ok=True)
        src = _remote(self.url, rel)
        resumed = os.path.exists(part) and os.path.getsize(part) > 0

        def attempt(_: int) -> None:
            have = os.path.getsize(part) if os.path.exists(part) else 0
            if have > size:  # longer than the shard can be: start again
                os.remove(part)
                have = 0
            start, chunks = (_stream_http(src, have, self.timeout) if _is_http(src)
                             else _stream_fsspec(src, have))
            if start != have:  # the server ignored Range: restart from zero
                self._progress(-have)
                have = 0
            with open(part, "r+b" if (have and os.path.exists(part)) else "wb") as f:
                f.seek(have)
                f.truncate()
                for b in chunks:
                    if f.tell() + len(b) > size:   # never hold more than the manifest lists
                        self._progress(-f.tell())
                        f.close()
                        os.remove(part)
                        raise DownloadError(f"{src}: the server sends more than the {size} "
                                            "bytes the manifest lists")
                    f.write(b)
                    self._progress(len(b))
            got_sha, got = _local_sha256(part)
            if got < size:
                raise DownloadError(f"{src}: connection ended at {got} of {size} bytes")
            if got != size or got_sha != sha:
                os.remove(part)  # wrong content: never resume from it
                self._progress(-got)
                raise DownloadError(f"{src}: {got} bytes with sha256 {got_sha[:16]}..., "
                                    f"manifest says {size} bytes, {sha[:16]}...")
            os.replace(part, final)

        if resumed:
            self._progress(os.path.getsize(part))
        _with_retries(src, attempt, self.retries, self.backoff)
        with self.lock:
            self.summary.downloaded.append(rel)
            if resumed:
                self.summary.resumed.append(rel)


def download(url: str, dest: str, *, workers: int = 4, retries: int = 5, backoff: float = 0.5,
             timeout: float = 60, progress: bool = True, split: "str | None" = None) -> Summary:
    """Download the dataset root at ``url`` into the local folder ``dest``."""
    m = fetch_manifest(url, retries=retries, backoff=backoff)
    if split is not None and split not in m["splits"]:
        raise KeyError(f"split {split!r} not in {url} (has {sorted(m['splits'])})")
    entries = [e for sp, s in m["splits"].items() if split in (None, sp) for e in s["shards"]]
    entries += [s["index"] for sp, s in m["splits"].items()   # format 1.2: fetched like a shard
                if split in (None, sp) and s.get("index")]
    local = fsspec_local()
    for e in entries:   # before anything is written: no symlink in DEST leads out of it
        for suffix in ("", PART):
            inside_root(local, dest, safe_relpath(e["file"]) + suffix)
    os.makedirs(dest, exist_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(int(e["bytes"]) for e in entries), unit="B", unit_scale=True,
                   desc=f"download {os.path.basename(dest.rstrip('/')) or dest}")
    fetcher = _Fetcher(url, dest, retries, backoff, timeout, bar)
    errors = []
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            futs = {pool.submit(fetcher.shard, e): e["file"] for e in entries}
            for fut in as_completed(futs):
                try:
                    fut.result()
                except (DownloadError, OSError) as err:
                    errors.append(f"{futs[fut]}: {err}")
    finally:
        if bar is not None:
            bar.close()
    if errors:
        raise DownloadError(f"{len(errors)} shard(s) failed (rerun to resume):\n  "
                            + "\n  ".join(sorted(errors)))
    if split is not None:  # a partial copy lists only what it holds
        m = {**m, "splits": {split: m["splits"][split]}}
        m["totals"] = {k: int(m["splits"][split].get(k, 0)) for k in m.get("totals", {})}
    fs, base = open_fs(dest)
    write_json_atomic(fs, join(base, MANIFEST), m)
    from c2fmae_data.format.card import write_card

    write_card(fs, base, m)   # the card of what this copy holds (a remote card is not fetched)
    return fetcher.summary
