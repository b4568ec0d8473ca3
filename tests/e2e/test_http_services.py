"""HTTP services beside the backend (PixSim7's generation-api), on Docker and natively.

The reference backend declares ``generation-api`` (``serve-generation``, port variable
``GENERATION_API_PORT``), as PixSim7 does. A host that selects it in ``backend.services``
runs it from the backend's image or environment, publishes it on its own port (claimed in
the host registry, checked before anything starts), waits for its health endpoint, and
reports it in ``status`` and ``logs``; a crashed one is reported (and natively restarted by
the supervisor).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from e2e_helpers import (
    Host,
    assert_clean_failure,
    assert_ok,
    containers,
    free_port,
    host_maker,
    registry_home,  # noqa: F401 (an autouse fixture: this module's own host registry)
)
from native_support import Host as NativeHost
from native_support import Hosts
from native_support import cli as native_cli

SERVICE = "generation-api"


def select_generation_api(run: Callable[..., Any], port: int, **extra: str) -> None:
    fields = ", ".join([f"name: {SERVICE}", f"port: {port}", *(f"{k}: {v}" for k, v in extra.items())])
    assert_ok(run("config", "set", "backend.services", f"[{{{fields}}}]"))


def answers_as_the_host(url: str, host_id: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=10.0, trust_env=False) as http:
        health, info = http.get("/health"), http.get("/api/v1/server/info")
        status = http.get("/api/v1/generation/status")
    assert health.status_code == 200 and health.json()["database"] == "connected", health.text
    assert info.json()["server_id"] == host_id, info.text
    assert status.status_code == 200, status.text
    body: dict[str, Any] = status.json()
    assert (body["service"], body["server_id"]) == (SERVICE, host_id), body
    return body


def registry_claims(home: Path) -> dict[int, str]:
    """Port -> host name, as the registry in ``home`` records them."""
    data = json.loads((home / "hosts.json").read_text())
    claims: dict[int, str] = {}
    for entry in data["hosts"]:
        for port in [entry["port"], *entry.get("extra_ports", [])]:
            claims[int(port)] = entry["name"]
    return claims


def listening(port: int) -> socket.socket:
    """A socket of another program holding ``port`` on 127.0.0.1."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen(1)
    return holder


# ---- Docker -------------------------------------------------------------------------------


@pytest.fixture
def make_host(docker_client: docker.DockerClient, require_images: Callable[..., None],
              tmp_path: Path) -> Iterator[Callable[..., Host]]:
    yield from host_maker(docker_client, require_images, tmp_path, Host)


@pytest.mark.engine
def test_docker_generation_api_comes_up_beside_the_backend_as_the_host(
        make_host: Callable[..., Host], docker_client: docker.DockerClient,
        request: pytest.FixtureRequest) -> None:
    host = make_host()
    port = free_port()
    select_generation_api(host.run, port)
    assert f"{port}" in (host.dir / "frontend.env").read_text()
    assert registry_claims(request.getfixturevalue("registry_home"))[port] == host.name
    report = host.up_ok()
    url = f"http://127.0.0.1:{port}"
    assert report["service_urls"] == {SERVICE: url}
    assert report["services"][SERVICE]["health"] == "healthy", report["services"]
    status = answers_as_the_host(url, host.host_id)
    # Inside its container it listens on its declared port, published on the host's.
    assert status["port"] == 8001
    running = containers(docker_client, host)
    assert running[SERVICE].image.id == running["backend"].image.id
    env = dict(item.split("=", 1) for item in running[SERVICE].attrs["Config"]["Env"])
    assert env["GENERATION_API_PORT"] == "8001" and env["SERVER_ID"] == host.host_id

    shown = host.run("status", "--json")
    assert shown.code == 0, str(shown)
    service = shown.json()["services"][SERVICE]
    assert (service["state"], service["health"]) == ("running", "healthy")
    assert any(f"127.0.0.1:{port}" in p for p in service["ports"]), service
    logs = assert_ok(host.run("logs", SERVICE, "--tail", "50"))
    assert "/api/v1/generation/status" in logs.stdout
    assert assert_ok(host.run("info", "--json")).json()["service_urls"] == {SERVICE: url}
    restarted = assert_ok(host.run("restart", SERVICE, "--json")).json()
    assert SERVICE in restarted["restarted"], restarted
    answers_as_the_host(url, host.host_id)
    # A bundle records it among the services the origin ran.
    bundle = host.dir.parent / f"{host.name}.tar.gz"
    assert_ok(host.run("backup", "-o", bundle))
    try:
        with tarfile.open(bundle) as archive:
            member = archive.extractfile("manifest.json")
            assert member is not None
            assert SERVICE in json.load(member)["services"]
    finally:
        bundle.unlink()

    # A crash is reported by status, and `up` brings it back.
    running[SERVICE].kill()
    crashed = host.run("status", "--json")
    assert crashed.code == 4, str(crashed)
    assert crashed.json()["services"][SERVICE]["state"] == "exited"
    assert host.up_ok()["actions"][SERVICE] in ("started", "recreated")
    answers_as_the_host(url, host.host_id)


@pytest.mark.engine
def test_docker_a_port_clash_is_refused_before_anything_starts(
        make_host: Callable[..., Host], docker_client: docker.DockerClient) -> None:
    host = make_host()
    port = free_port()
    select_generation_api(host.run, port)
    with listening(port):
        refused = host.run("up")
    assert_clean_failure(refused)
    assert f"port {port}" in refused.stderr and SERVICE in refused.stderr, str(refused)
    assert containers(docker_client, host) == {}


# ---- native ---------------------------------------------------------------------------------


@pytest.mark.native
def test_native_generation_api_runs_is_reported_and_is_restarted_after_a_crash(hosts: Hosts) -> None:
    host: NativeHost = hosts.init()
    port = free_port()
    select_generation_api(host.run, port)
    report = host.up()
    url = f"http://127.0.0.1:{port}"
    assert report["service_urls"] == {SERVICE: url}
    status = answers_as_the_host(url, host.host_id)
    assert status["port"] == port  # natively it listens on the host's port itself
    with httpx.Client(base_url=host.url, timeout=10.0, trust_env=False) as http:
        assert http.get("/api/v1/server/info").json()["server_id"] == host.host_id
    service = host.status()["services"][SERVICE]
    assert (service["state"], service["health"], service["ports"]) == \
        ("running", "healthy", [f"127.0.0.1:{port}"])
    assert "/api/v1/generation/status" in assert_ok(host.run("logs", SERVICE)).stdout
    assert_ok(host.run("restart", SERVICE))
    service = host.status()["services"][SERVICE]
    assert (service["state"], service["health"]) == ("running", "healthy"), service
    # --dir before the service: everything after `--` is the command's own.
    probe = assert_ok(native_cli("exec", "--dir", host.dir, SERVICE, "--", "python", "-c",
                                 "import os; print(os.environ['GENERATION_API_PORT'])"))
    assert probe.stdout.strip() == str(port)

    # Crashed: the supervisor starts it again and status says so.
    crashed_pid = int(service["pid"])
    os.kill(crashed_pid, 9)
    deadline = time.monotonic() + 60
    while True:
        service = host.status()["services"][SERVICE]
        if service["state"] == "running" and service.get("pid") != crashed_pid \
                and service["health"] == "healthy":
            break
        assert time.monotonic() < deadline, f"not restarted: {service}"
        time.sleep(0.5)
    assert "restarted" in (service.get("detail") or "") or service.get("restarts"), service
    answers_as_the_host(url, host.host_id)
    down = assert_ok(host.run("down", "--json")).json()
    assert any(stopped.startswith(f"{SERVICE} (pid ") for stopped in down["stopped"]), down


@pytest.mark.native
def test_native_a_port_clash_is_refused_before_anything_starts(hosts: Hosts) -> None:
    host: NativeHost = hosts.init()
    port = free_port()
    select_generation_api(host.run, port)
    with listening(port):
        refused = host.run("up")
    assert_clean_failure(refused)
    assert f"port {port}" in refused.stderr and SERVICE in refused.stderr, str(refused)
    assert not list((host.dir / ".pixsim-host" / "run").glob("*.pid")), "something started"


@pytest.mark.native
def test_native_a_service_that_never_answers_health_fails_up_with_its_log(hosts: Hosts) -> None:
    host: NativeHost = hosts.init()
    select_generation_api(host.run, free_port(), health_endpoint="/not-its-health")
    failed = host.run("up", "--timeout", "20")
    assert_clean_failure(failed)
    assert SERVICE in failed.stderr and "healthy" in failed.stderr, str(failed)
    # Its own log tail, which shows the probes it refused.
    assert "/not-its-health 404" in failed.output, str(failed)


@pytest.mark.native
def test_native_doctor_knows_its_own_service_on_its_port_without_an_identity_endpoint(
        hosts: Hosts) -> None:
    # Like PixSim7's generation API, this one cannot say which host it is: doctor goes by
    # what the runtime runs, not by warning that "another program" holds the port.
    host: NativeHost = hosts.init()
    port = free_port()
    command = f"{sys.executable} -m http.server {{port}} --bind {{bind}}"
    assert_ok(host.run("config", "set", "backend.services",
                       f"[{{name: static, command: '{command}', port: {port}, health_endpoint: /}}]"))
    host.up()
    checks = {c["name"]: c for c in assert_ok(host.run("doctor", "--json")).json()["checks"]}
    assert checks["port"]["status"] == "pass", checks["port"]
    # Held by another program, the same port is reported.
    assert_ok(host.run("down"))
    with listening(port):
        held = host.run("doctor", "--json")
    checks = {c["name"]: c for c in held.json()["checks"]}
    assert checks["port"]["status"] == "warn" and "static" in checks["port"]["message"], checks["port"]
