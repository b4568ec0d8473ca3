"""Engine API calls over a local unix socket, with the standard library.

The Docker SDK costs about a quarter of a second to import and connect (it brings
requests and urllib3). A `pixsim-host up` on a host that is already running as configured
only needs to read the engine's view of it (a container list, a few inspects), and `down`
only stops and removes containers, so those go through this client: reads on one
keep-alive connection (JSON answers), each change on a connection of its own. Everything
else, and every engine not on a local unix socket (TCP, TLS, contexts), goes through the
SDK (``engine.connect``). ``None`` from :func:`open_socket_engine` means "use the SDK".
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any
from urllib.parse import quote

from pixsim_host.runtime.engine import MIN_API, api_tuple, resolve_endpoint

TIMEOUT = 10.0


class EngineReadError(Exception):
    """The engine did not answer a read as expected; the caller takes the SDK's path."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class SocketEngine:
    """GET requests to the engine at ``path``, parsed as JSON (404 gives None)."""

    def __init__(self, path: str, timeout: float = TIMEOUT) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._conn = _UnixConnection(path, timeout)
        self.api_version = api_tuple(str(self.get("/version")["ApiVersion"]))
        self.close()  # held open only while in use: the next request connects again

    def get(self, path: str) -> Any:
        try:
            with self._lock:  # one connection: one request at a time
                self._conn.request("GET", path)
                response = self._conn.getresponse()
                body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise EngineReadError(f"GET {path}: {exc}") from None
        if response.status == 404:
            return None
        if response.status != 200:
            raise EngineReadError(f"GET {path}: HTTP {response.status}")
        try:
            return json.loads(body)
        except ValueError:
            raise EngineReadError(f"GET {path}: not JSON") from None

    def containers(self, label: str) -> list[dict[str, Any]]:
        filters = quote(json.dumps({"label": [label]}), safe="")
        found = self.get(f"/containers/json?all=1&filters={filters}")
        return list(found or [])

    def inspect_container(self, container_id: str) -> dict[str, Any] | None:
        found = self.get(f"/containers/{quote(container_id, safe='')}/json")
        return dict(found) if found is not None else None

    def inspect_image(self, image: str) -> dict[str, Any] | None:
        found = self.get(f"/images/{quote(image, safe=':/@')}/json")
        return dict(found) if found is not None else None

    def change(self, method: str, path: str, timeout: float = 120.0) -> tuple[int, str]:
        """One POST or DELETE without a body, on a connection of its own (so threads may
        call it at once): the HTTP status (404 included: the caller decides) and the
        engine's message, if it gave one."""
        conn = _UnixConnection(self._path, timeout)
        try:
            conn.request(method, path, headers={"Content-Length": "0"})
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise EngineReadError(f"{method} {path}: {exc}") from None
        finally:
            conn.close()
        try:
            message = str(json.loads(body).get("message") or "") if body else ""
        except (ValueError, AttributeError):
            message = body[:200].decode("utf-8", "replace")
        return response.status, message

    def close(self) -> None:
        self._conn.close()


def open_socket_engine() -> SocketEngine | None:
    """A client for the engine from the environment if it is on a local unix socket."""
    try:
        endpoint = resolve_endpoint()
    except Exception:  # a broken context: the SDK's path says what is wrong
        return None
    if not endpoint.url.startswith("unix://") or endpoint.tls_dir is not None:
        return None
    try:
        reader = SocketEngine(endpoint.url[len("unix://"):])
    except (EngineReadError, KeyError, TypeError, ValueError):
        return None
    return reader if reader.api_version >= MIN_API else None  # the SDK's path refuses it
