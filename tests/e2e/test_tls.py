"""A friend host with ``tls.mode internal`` on Docker, end to end.

The host listens for friends on 0.0.0.0 through the Caddy proxy (the offline stand-in for
``caddy:2.11``); its backend is published on loopback only. What a friend's machine sees is
checked as a friend would check it: ``connect https://127.0.0.1:PORT --ca-cert FILE``
verifies the host's identity over HTTPS with the CA file ``up`` exported, and without it is
refused in one line; a WebSocket through the proxy (wss, trusting that CA) gets the
backend's greeting naming the host; the security headers are on every answer; the backend
is not reachable on another address of this machine. Everything is removed at the end
(``down --volumes``, then the checks of ``e2e_helpers.destroy``).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import tls_support
from e2e_helpers import (
    IMAGES,
    Host,
    assert_answers_as,
    assert_clean_failure,
    assert_ok,
    containers,
    destroy,
    free_port,
    registry_home,  # noqa: F401 (an autouse fixture: this module's own host registry)
)

CADDY_IMAGE = "caddy:2.11"


@pytest.fixture(scope="module")
def tls_host(docker_client: docker.DockerClient, require_images: Callable[..., None],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, int, dict[str, Any]]]:
    require_images(*IMAGES, CADDY_IMAGE)
    host = Host.init(tmp_path_factory.mktemp("tls"), prefix="e2e-tls")
    tls_port = free_port()
    try:
        for key, value in (("model", "friend"), ("backend.bind", "0.0.0.0"),
                           ("tls.mode", "internal"), ("tls.port", str(tls_port)),
                           ("tls.max_body_size", "200KB")):
            assert_ok(host.run("config", "set", key, value))
        report = host.up_ok()
        yield host, tls_port, report
    finally:
        destroy(docker_client, host)


@pytest.mark.engine
def test_up_reports_https_and_exports_the_ca(tls_host: tuple[Host, int, dict[str, Any]]) -> None:
    host, port, report = tls_host
    url = f"https://127.0.0.1:{port}"
    assert report["backend_url"] == url and report["frontend"] == f"VITE_BACKEND_URL={url}"
    assert report["services"]["proxy"]["health"] == "healthy"
    ca_file = host.dir / "tls-ca.crt"
    assert report["tls"] == {"mode": "internal", "url": url, "ca_cert": str(ca_file),
                             "connect": f"pixsim-host connect {url} --ca-cert {ca_file}"}
    assert ca_file.stat().st_mode & 0o777 == 0o600
    assert ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    frontend = (host.dir / "frontend.env").read_text()
    assert f"VITE_BACKEND_URL='{url}'" in frontend
    assert f"VITE_WS_URL='wss://127.0.0.1:{port}/api/v1/ws/generations'" in frontend
    info = assert_ok(host.run("info")).stdout
    assert f"pixsim-host connect {url} --ca-cert {ca_file}" in info
    status = assert_ok(host.run("status", "--json")).json()
    assert status["services"]["proxy"]["state"] == "running"
    # The backend's own plain-HTTP checks still pass on loopback.
    assert_answers_as(host)
    checks = {check["name"]: check for check in host.run("doctor", "--json").json()["checks"]}
    assert checks["tls"]["status"] == "pass", checks["tls"]
    assert checks["images"]["status"] == "pass" and "4 images" in checks["images"]["message"]


@pytest.mark.engine
def test_connect_verifies_with_the_ca_and_refuses_without(
        tls_host: tuple[Host, int, dict[str, Any]], tmp_path: Path) -> None:
    host, port, _ = tls_host
    url = f"https://127.0.0.1:{port}"
    friend = {"home": tmp_path}  # the friend's machine: a registry of its own
    pinned = assert_ok(host_cli("connect", url, "--ca-cert", host.dir / "tls-ca.crt", "--json", **friend))
    assert pinned.json()["host_id"] == host.host_id
    refused = host_cli("connect", url, **friend)
    assert_clean_failure(refused)
    assert tls_support.ONE_LINE_REFUSAL in refused.stderr
    assert "not trusted" in refused.stderr


@pytest.mark.engine
def test_websocket_through_the_proxy(tls_host: tuple[Host, int, dict[str, Any]]) -> None:
    host, port, _ = tls_host
    greeting = tls_support.wss_exchange(port, host.dir / "tls-ca.crt")
    assert greeting["type"] == "connected" and greeting["host_id"] == host.host_id
    # Without the host's CA the handshake itself fails.
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_support.wss_exchange(port, Path(ssl.get_default_verify_paths().cafile or
                                            "/etc/ssl/certs/ca-certificates.crt"))


@pytest.mark.engine
def test_security_headers_and_body_limit(tls_host: tuple[Host, int, dict[str, Any]]) -> None:
    host, port, _ = tls_host
    answer = tls_support.get_https(f"https://127.0.0.1:{port}", "/api/v1/server/info",
                                   host.dir / "tls-ca.crt")
    assert answer.status_code == 200 and answer.json()["server_id"] == host.host_id
    tls_support.assert_security_headers(answer)
    assert "strict-transport-security" not in answer.headers  # only for ACME's public names
    # The proxy's body limit (200KB here), below the backend's own 1 MiB upload limit.
    with httpx.Client(verify=tls_support.trusting(host.dir / "tls-ca.crt"), timeout=10.0,
                      trust_env=False) as client:
        url = f"https://127.0.0.1:{port}/api/v1/uploads"
        assert client.put(f"{url}/small.bin", content=b"x" * 100_000).status_code == 201
        assert client.put(f"{url}/large.bin", content=b"x" * 300_000).status_code == 413


@pytest.mark.engine
def test_backend_is_published_on_loopback_only(docker_client: docker.DockerClient,
                                               tls_host: tuple[Host, int, dict[str, Any]]) -> None:
    host, port, _ = tls_host
    published = containers(docker_client, host)["backend"].attrs["HostConfig"]["PortBindings"]
    assert published == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(host.port)}]}
    outside = tls_support.outside_address()
    if outside is not None:  # what another machine would dial
        assert not tls_support.connects(outside, host.port), f"backend answers on {outside}"
        assert tls_support.connects(outside, port), f"the proxy does not answer on {outside}"


@pytest.mark.engine
def test_a_friend_dials_the_address_in_tls_domain(tls_host: tuple[Host, int, dict[str, Any]],
                                                  tmp_path: Path) -> None:
    # A URL with an address sends no server name: behind Docker's port publishing the proxy
    # cannot see which address was dialled, and answers with tls.domain's certificate.
    host, port, _ = tls_host
    address = tls_support.outside_address() or "127.0.0.2"  # any address that reaches 0.0.0.0
    assert_ok(host.run("config", "set", "tls.domain", address))
    report = host.up_ok()
    url = f"https://{address}:{port}"
    assert report["backend_url"] == url
    pinned = assert_ok(host_cli("connect", url, "--ca-cert", host.dir / "tls-ca.crt", "--json",
                                home=tmp_path)).json()
    assert pinned["host_id"] == host.host_id
    assert report["friend_urls"] == [url]  # the certificate's name only
    if address != "127.0.0.2":
        # Dialled by another address (no server name), the proxy answers with tls.domain's
        # certificate: the CA would not help, the error names what would.
        other = host_cli("connect", f"https://127.0.0.1:{port}", "--ca-cert", host.dir / "tls-ca.crt",
                         home=tmp_path)
        assert other.code != 0 and "use the name or address the host's certificate is for" in \
            other.stderr and "--ca-cert" not in other.stderr.split("certificate is for", 1)[1], str(other)
    # 127.0.0.1 keeps its own certificate (asked for by name, as up's own check does).
    assert tls_support.wss_exchange(port, host.dir / "tls-ca.crt")["host_id"] == host.host_id


@pytest.mark.engine
def test_turning_tls_off_removes_the_proxy(docker_client: docker.DockerClient,
                                           tls_host: tuple[Host, int, dict[str, Any]]) -> None:
    # Last in this module: it changes the shared host.
    host, port, _ = tls_host
    assert_ok(host.run("config", "set", "tls.mode", "off"))
    report = host.up_ok()
    assert "proxy" not in report["services"] and "tls" not in report
    assert report["backend_url"] == f"http://127.0.0.1:{host.port}"
    running = containers(docker_client, host)
    assert "proxy" not in running
    published = running["backend"].attrs["HostConfig"]["PortBindings"]["8000/tcp"]
    assert published == [{"HostIp": "0.0.0.0", "HostPort": str(host.port)}]  # backend.bind again
    assert not tls_support.connects("127.0.0.1", port)


def host_cli(*args: str | Path, home: Path) -> Any:
    from e2e_helpers import cli

    return cli(*args, home=home)
