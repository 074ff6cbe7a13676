"""download from a local http.server: resume with Range, restart without it, refuse escaping paths."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from c2fmae_data.tools import download as D
from c2fmae_data.cli import main
from c2fmae_data.format.schema import FormatError
from c2fmae_data.tools.verify import verify
from tests._datasets import good_dataset


class Server:
    """Serves a folder; optionally cuts the first GET of one path after ``cut`` bytes and may
    ignore Range headers. Records (path, Range header) of every GET."""

    def __init__(self, folder: Path):
        self.folder, self.requests = folder, []
        self.cut_path, self.cut, self.ranges = None, 0, True
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                srv.requests.append((self.path, rng))
                p = srv.folder / self.path.lstrip("/")
                if not p.is_file():
                    self.send_error(404)
                    return
                data, start, code = p.read_bytes(), 0, 200
                if rng and srv.ranges:
                    start = int(rng.split("=")[1].split("-")[0])
                    code = 206
                self.send_response(code)
                self.send_header("Content-Length", str(len(data) - start))
                if code == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                body = data[start:]
                if self.path == srv.cut_path:
                    srv.cut_path = None  # only the first time
                    self.wfile.write(body[:srv.cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def gets(self, suffix: str):
        return [r for p, r in self.requests if p.endswith(suffix)]


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "CHUNK", 1024)  # small reads so a cut keeps a partial file
    src = Path(good_dataset(tmp_path / "src"))
    srv = Server(src)
    srv.thread.start()
    yield srv, src
    srv.httpd.shutdown()
    srv.httpd.server_close()
    srv.thread.join(5)


def same_files(a: Path, b: Path) -> None:
    for p in (a / "shards").iterdir():
        assert (b / "shards" / p.name).read_bytes() == p.read_bytes()


def test_download_then_skip_present(served, tmp_path):
    srv, src = served
    dest = tmp_path / "dest"
    s = D.download(srv.url, str(dest), progress=False)
    assert sorted(s.downloaded) == ["index/train.parquet", "index/val.parquet",  # format 1.2
                                    "shards/train-00000.parquet", "shards/train-00001.parquet",
                                    "shards/val-00000.parquet"]
    same_files(src, dest)
    assert not [p for p in (dest / "shards").iterdir() if p.name.endswith(".part")]
    assert verify(str(dest), full=True).ok
    s = D.download(srv.url, str(dest), progress=False)
    assert len(s.skipped) == 5 and not s.downloaded


def test_interrupted_transfer_resumes_with_range(served, tmp_path):
    srv, src = served
    name = "shards/train-00001.parquet"
    size = (src / name).stat().st_size
    assert size > 3000
    srv.cut_path, srv.cut = "/" + name, 2500
    dest = tmp_path / "dest"
    D.download(srv.url, str(dest), progress=False, retries=3, backoff=0.01, workers=2)
    first, second = srv.gets(name)
    assert first is None and second == "bytes=2048-"  # two 1 KiB chunks were kept
    same_files(src, dest)
    assert verify(str(dest)).ok


def test_restart_when_server_ignores_range(served, tmp_path):
    srv, src = served
    name = "shards/val-00000.parquet"
    srv.ranges = False
    srv.cut_path, srv.cut = "/" + name, 1500
    dest = tmp_path / "dest"
    D.download(srv.url, str(dest), progress=False, retries=3, backoff=0.01)
    assert srv.gets(name)[1] == "bytes=1024-"  # asked, got 200, started over
    same_files(src, dest)


def test_interrupted_run_resumes_next_run(served, tmp_path):
    srv, src = served
    name = "shards/train-00000.parquet"
    srv.cut_path, srv.cut = "/" + name, 1100
    dest = tmp_path / "dest"
    with pytest.raises(D.DownloadError, match="train-00000"):
        D.download(srv.url, str(dest), progress=False, retries=0)
    assert (dest / (name + ".part")).stat().st_size == 1024
    assert not (dest / name).exists() and not (dest / "manifest.json").exists()
    s = D.download(srv.url, str(dest), progress=False, retries=0)
    assert s.resumed == [name] and srv.gets(name)[-1] == "bytes=1024-"
    assert verify(str(dest)).ok


def test_corrupt_remote_shard_never_lands(served, tmp_path):
    srv, src = served
    p = src / "shards" / "val-00000.parquet"
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF
    p.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    with pytest.raises(D.DownloadError, match="val-00000.parquet.*sha256"):
        D.download(srv.url, str(dest), progress=False, retries=1, backoff=0.01)
    assert not (dest / "shards" / "val-00000.parquet").exists()
    assert not (dest / "shards" / "val-00000.parquet.part").exists()
    assert len(srv.gets("val-00000.parquet")) == 2  # retried once from zero


@pytest.mark.parametrize("bad", ["shards/../../evil.parquet", "../evil.parquet",
                                 "/tmp/evil.parquet", "http://x/evil.parquet"])
def test_manifest_escaping_dest_is_refused(served, tmp_path, bad):
    srv, src = served
    m = json.loads((src / "manifest.json").read_text())
    m["splits"]["train"]["shards"][0]["file"] = bad
    (src / "manifest.json").write_text(json.dumps(m))
    dest = tmp_path / "a" / "dest"
    with pytest.raises(FormatError, match="escape|unsafe|named"):
        D.download(srv.url, str(dest), progress=False, retries=0)
    assert not dest.exists() and not (tmp_path / "a").exists()
    assert not (tmp_path / "evil.parquet").exists() and not Path("/tmp/evil.parquet").exists()
    assert srv.gets("evil.parquet") == []
    assert main(["download", srv.url, str(dest), "--quiet", "--retries", "0"]) == 2


def test_file_url_through_fsspec_and_cli(tmp_path, capsys):
    src = Path(good_dataset(tmp_path / "src"))
    dest = tmp_path / "dest"
    part = dest / "shards" / "train-00000.parquet.part"
    part.parent.mkdir(parents=True)
    part.write_bytes((src / "shards" / "train-00000.parquet").read_bytes()[:500])
    assert main(["download", f"file://{src}", str(dest), "--quiet", "--workers", "2"]) == 0
    assert "(1 resumed)" in capsys.readouterr().out
    same_files(src, dest)
    assert hashlib.sha256((dest / "manifest.json").read_bytes()).digest() == \
        hashlib.sha256((src / "manifest.json").read_bytes()).digest()
    assert not part.exists() and verify(str(dest)).ok
    assert sorted(os.listdir(dest)) == ["README.md", "index", "manifest.json", "shards"]  # + card
