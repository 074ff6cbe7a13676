"""A local HTTP server over a folder that honours Range requests and counts the bytes it sends.

``RangeServer(folder)`` starts on 127.0.0.1 in a thread (``url``, ``bytes_sent``, ``requests``,
``reset()``, ``close()``; also a context manager). HEAD answers Content-Length and
``Accept-Ranges: bytes``; GET with ``Range: bytes=a-b`` / ``a-`` / ``-n`` answers 206 with
Content-Range (what fsspec's HTTPFileSystem needs for random reads), without Range 200.
Python's SimpleHTTPRequestHandler ignores Range, hence this one. Used by tests and bench/.
"""
from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeServer:
    def __init__(self, folder):
        self.folder = Path(folder).resolve()
        self.lock = threading.Lock()
        self.bytes_sent = 0
        self.requests: "list[tuple[str, str, str | None]]" = []   # (method, path, Range)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _file(self) -> "Path | None":
                p = (server.folder / self.path.split("?")[0].lstrip("/")).resolve()
                return p if p.is_file() and server.folder in p.parents else None

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body: bool):
                rng = self.headers.get("Range")
                with server.lock:
                    server.requests.append((self.command, self.path, rng))
                p = self._file()
                if p is None:
                    self.send_error(404)
                    return
                size = p.stat().st_size
                start, end, status = 0, size, 200
                m = _RANGE.match(rng or "")
                if m and (m[1] or m[2]):
                    if m[1]:
                        start = int(m[1])
                        end = min(size, int(m[2]) + 1) if m[2] else size
                    else:
                        start = max(0, size - int(m[2]))
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.end_headers()
                        return
                    status = 206
                with open(p, "rb") as f:
                    f.seek(start)
                    chunk = f.read(end - start) if body else b""
                self.send_response(status)
                self.send_header("Content-Length", str(end - start))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                self.end_headers()
                if body:   # counted first: a client may return before this thread goes on
                    with server.lock:
                        server.bytes_sent += len(chunk)
                    self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.bytes_sent, self.requests = 0, []

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
