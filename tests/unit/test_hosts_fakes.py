"""Small local servers for the registry, connect and doctor tests (no tests in here).

Everything listens on 127.0.0.1 on a port the kernel picks, and stops when the test ends.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up early (connect stops reading a huge answer) is expected.
        # Anything else goes to the test process's own stderr: socketserver would print
        # to sys.stderr, which is a command's captured stderr while one runs in-process.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            traceback.print_exc(file=sys.__stderr__)


class FakeBackend:
    """Serves the identity endpoints of the host contract, or misbehaves on purpose.

    ``mode``: ok, html, huge (declared length), huge-chunked (no length), array, 404,
    redirect-other (to another origin), redirect-same (within the origin), hang (never
    answers), drip (one byte at a time, forever).
    """

    def __init__(self, server_id: str, name: str = "Fake host", *, mode: str = "ok",
                 api_version: str = "v1", redirect_to: str = "") -> None:
        self.server_id, self.name, self.mode = server_id, name, mode
        self.api_version, self.redirect_to = api_version, redirect_to
        self.stop = threading.Event()
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                fake.requests.append(self.path)
                fake.handle(self)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        # A short poll interval: close() waits for the serving loop to notice (0.5 s by default).
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _send(self, h: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(body)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        mode, path = self.mode, h.path
        if mode == "hang":
            self.stop.wait(60)
            return
        if mode == "drip":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "100000")
            h.end_headers()
            while not self.stop.is_set():
                try:
                    h.wfile.write(b" ")
                    h.wfile.flush()
                except OSError:
                    return
                time.sleep(0.2)
            return
        if mode == "html":
            self._send(h, 200, b"<!doctype html><html><body>PixSim7</body></html>", "text/html")
            return
        if mode == "huge":
            self._send(h, 200, b"[" + b"0," * 5_000_000 + b"0]")
            return
        if mode == "huge-chunked":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(400):  # 25 MiB unless the client hangs up first
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                h.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
            return
        if mode == "404":
            self._send(h, 404, b'{"detail":"Not Found"}')
            return
        if mode == "array":
            self._send(h, 200, b"[1, 2, 3]")
            return
        if mode == "redirect-other":
            self._send(h, 302, b"", headers={"Location": self.redirect_to + path})
            return
        if mode == "redirect-same" and not path.startswith("/v2"):
            self._send(h, 307, b"", headers={"Location": "/v2" + path})
            return
        path = path.removeprefix("/v2")
        if path == "/api/v1/server/info":
            body = {"server_id": self.server_id, "server_name": self.name, "server_description": "",
                    "version": "0.1.0", "api_version": self.api_version}
        elif path == "/api/v1/version":
            # PixSim7's shape: the application's version here, the API generation in server info.
            body = {"api_version": "0.1.0", "build_sha": "abc123", "build_time": None,
                    "server_time": "2026-01-01T00:00:00Z"}
        else:
            self._send(h, 404, b'{"detail":"Not Found"}')
            return
        self._send(h, 200, json.dumps(body).encode())

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def fake_backend(server_id: str, name: str = "Fake host", **kwargs: Any) -> Iterator[FakeBackend]:
    backend = FakeBackend(server_id, name, **kwargs)
    try:
        yield backend
    finally:
        backend.close()


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port where connections are accepted by the kernel but never answered."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@contextmanager
def held_port(port: int = 0) -> Iterator[int]:
    """A port bound and listening on 127.0.0.1 by this process (another program's port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen(8)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def first_free_port(start: int = 8000, skip: set[int] | None = None) -> int:
    for port in range(start, start + 1000):
        if port not in (skip or set()) and port_is_free(port):
            return port
    raise AssertionError("no free port")


def write_minimal_host(directory: Path, host_id: str, name: str, port: int,
                       bind: str = "127.0.0.1") -> None:
    """Just enough pixsim-host.yaml for the registry's status probe (it reads plain YAML)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = {"version": 1, "host_id": host_id, "name": name, "model": "self",
            "backend": {"port": port, "bind": bind}}
    (directory / "pixsim-host.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
