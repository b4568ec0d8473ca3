"""What a client of a TLS host checks, for the Docker and native end-to-end tests.

Each check is done the way a friend's machine would: over the proxy's HTTPS port, trusting
only the CA file the host exported (nothing of pixsim-host's own client code is used), and a
WebSocket upgraded through the proxy with the standard library's ssl plus the reference
backend's small RFC 6455 client.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx

from pixsim_reference_backend import websocket as ws

# Headers the proxy adds for a public backend (docs/tls.md).
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
}
ONE_LINE_REFUSAL = "pass its CA with --ca-cert FILE"


def trusting(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def get_https(url: str, path: str, ca_file: Path) -> httpx.Response:
    with httpx.Client(verify=trusting(ca_file), timeout=10.0, trust_env=False) as client:
        return client.get(url + path)


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, dict(response.headers))
    # Neither Caddy's nor the backend's own Server header reaches the client.
    assert "server" not in response.headers, dict(response.headers)


def wss_exchange(port: int, ca_file: Path, server_name: str = "localhost") -> dict[str, Any]:
    """Open wss://server_name:port/api/v1/ws/generations (dialling 127.0.0.1), trusting the
    CA; return the greeting after one ping/pong round and a clean close."""
    context = trusting(ca_file)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock = context.wrap_socket(raw, server_hostname=server_name)
    except BaseException:
        raw.close()
        raise
    client = ws.Client(sock, f"{server_name}:{port}")
    try:
        greeting: dict[str, Any] = json.loads(client.receive_text())
        client.send_text("ping")
        assert client.receive_text() == "pong"
    finally:
        code = client.close()
    assert code == ws.NORMAL, code
    return greeting


def connects(address: str, port: int) -> bool:
    """Whether a TCP connection to address:port is accepted."""
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=3):
        return True
    return False


def outside_address() -> str | None:
    """An address of this machine other than loopback (what another machine would dial)."""
    from pixsim_host.netaddr import reachable_addresses

    addresses = [a for a in reachable_addresses("0.0.0.0") if ":" not in a]
    return addresses[0] if addresses else None
