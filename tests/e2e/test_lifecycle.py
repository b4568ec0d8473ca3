"""``up``, ``down``, ``status``, ``logs``, ``restart`` end to end, on a real Docker engine.

Every command runs as a user runs it: ``python -m pixsim_host ...`` in a subprocess, no
stdin, output captured. Each host is created with ``init`` under a unique name and port, and
its teardown always runs ``down --volumes --yes`` and then checks that no container,
network or volume of its Docker project is left behind.

One module-scoped host (``shared``) serves the tests that leave a host as they found it (up
and verified); tests that break a host on purpose get hosts of their own (``make_host``).
Every command's output is checked against the secrets of every host these tests created:
no command may ever print one. Commands use a host registry (``$PIXSIM_HOST_HOME``) of this
module's own, so the tests neither read nor fill the user's.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from e2e_helpers import (
    HOST_ID_LABEL,
    IMAGES,
    SERVICES,
    Host,
    Run,
    assert_answers_as,
    assert_clean_failure,
    containers,
    destroy,
    host_maker,
    project_resources,
    registry_home,  # noqa: F401 (an autouse fixture: this module's own host registry)
)

# ---- hosts ----------------------------------------------------------------------------------


def container_ids(client: docker.DockerClient, host: Host) -> dict[str, str]:
    return {service: c.id for service, c in containers(client, host).items()}


def started_at(client: docker.DockerClient, host: Host) -> dict[str, str]:
    return {service: c.attrs["State"]["StartedAt"] for service, c in containers(client, host).items()}


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(docker_client: docker.DockerClient, require_images: Callable[..., None],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, Run]]:
    """A host brought up cold once for the module, with the result of that first ``up``.

    Tests that use it leave it up and verified (or restore that before they end).
    """
    require_images(*IMAGES)
    host = Host.init(tmp_path_factory.mktemp("shared"))
    try:
        cold = host.run("up", "--json")
        yield host, cold
    finally:
        destroy(docker_client, host)


@pytest.fixture
def make_host(docker_client: docker.DockerClient, require_images: Callable[..., None],
              tmp_path: Path) -> Iterator[Callable[..., Host]]:
    """Creates hosts of the test's own; all are torn down (and checked) when it ends."""
    yield from host_maker(docker_client, require_images, tmp_path, Host)


def shared_up(shared: tuple[Host, Run]) -> Host:
    host, _ = shared
    host.up_ok()
    return host


def world_and_key(host: Host, tag: str) -> tuple[dict[str, Any], str, str]:
    """Write a world (Postgres) and a key (Redis) through the backend; return what to read back."""
    key, value = f"e2e-{tag}-{uuid.uuid4().hex[:8]}", f"value of {tag} {uuid.uuid4().hex}"
    with host.http() as http:
        created = http.post("/api/v1/worlds", json={"name": f"world {tag} {uuid.uuid4().hex[:8]}",
                                                    "meta": {"tag": tag, "n": 7}})
        assert created.status_code == 201, created.text
        put = http.put(f"/api/v1/kv/{key}", content=value.encode())
        assert put.status_code == 200, put.text
    world = created.json()
    assert world["name"].startswith(f"world {tag}") and isinstance(world["id"], int)
    return world, key, value


def assert_readable(host: Host, world: dict[str, Any], key: str, value: str) -> None:
    with host.http() as http:
        got = http.get(f"/api/v1/worlds/{world['id']}")
        assert got.status_code == 200, got.text
        assert got.json() == world
        kv = http.get(f"/api/v1/kv/{key}")
        assert kv.status_code == 200, kv.text
        assert kv.json() == {"key": key, "value": value}


# ---- no engine ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["up"], ["status"], ["down"], ["logs", "backend"]])
def test_unreachable_engine_is_one_clear_error(tmp_path: Path, command: list[str]) -> None:
    host = Host.init(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_CONTEXT", "DOCKER_HOST")}
    env["DOCKER_HOST"] = "unix:///nonexistent.sock"
    run = host.run(*command, env=env, timeout=60)
    assert_clean_failure(run)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, str(run)
    assert lines[0].startswith("Error: no Docker Engine answers at unix:///nonexistent.sock"), str(run)
    assert "DOCKER_HOST" in lines[0], str(run)


# ---- the shared host ------------------------------------------------------------------------


@pytest.mark.engine
def test_cold_up_reaches_verified_healthy(shared: tuple[Host, Run],
                                          docker_client: docker.DockerClient) -> None:
    host, cold = shared
    assert cold.code == 0, str(cold)
    report = cold.json()
    assert report["host_id"] == host.host_id
    assert report["name"] == host.name
    assert report["backend_url"] == host.url
    assert report["frontend"] == f"VITE_BACKEND_URL={host.url}"
    assert report["actions"] == {service: "created" for service in SERVICES}
    assert sorted(report["services"]) == sorted(SERVICES)
    for service in SERVICES:
        assert report["services"][service]["state"] == "running", report["services"][service]
        assert report["services"][service]["health"] == "healthy"  # every one passed up's checks
    backend = report["backend"]
    assert backend["health"] == "healthy" and backend["verified"] is True
    assert backend["health_report"]["database"] == "connected"
    assert backend["health_report"]["redis"] == "connected"
    assert backend["ready"]["status"] == "ready"
    assert backend["server"]["server_id"] == host.host_id
    # The test's own requests agree with what `up` verified.
    assert_answers_as(host)
    # Exactly the three containers, labelled with this host, and only the backend published,
    # on loopback at the chosen port: database and Redis are never reachable from outside.
    found = containers(docker_client, host)
    assert sorted(found) == sorted(SERVICES)
    for service, container in found.items():
        assert container.status == "running", service
        assert container.labels[HOST_ID_LABEL] == host.host_id
        bindings = container.attrs["HostConfig"]["PortBindings"] or {}
        if service == "backend":
            assert bindings == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(host.port)}]}
        else:
            assert bindings == {}, f"{service} publishes {bindings}"


@pytest.mark.engine
def test_second_up_recreates_nothing(shared: tuple[Host, Run],
                                     docker_client: docker.DockerClient) -> None:
    host = shared_up(shared)
    before, started = container_ids(docker_client, host), started_at(docker_client, host)
    report = host.up_ok()
    assert report["actions"] == {service: "unchanged" for service in SERVICES}
    assert container_ids(docker_client, host) == before
    assert started_at(docker_client, host) == started, "an unchanged up restarted a container"
    assert report["backend"]["server"]["server_id"] == host.host_id
    assert_answers_as(host)


@pytest.mark.engine
def test_config_change_recreates_only_what_it_must(shared: tuple[Host, Run],
                                                   docker_client: docker.DockerClient) -> None:
    host = shared_up(shared)
    before = container_ids(docker_client, host)
    description = f"e2e description {uuid.uuid4().hex[:8]}"
    changed = host.run("config", "set", "description", description)
    assert changed.code == 0, str(changed)

    report = host.up_ok()
    # The worker shares the backend's environment (SERVER_DESCRIPTION): it is replaced too.
    assert report["actions"] == {"db": "unchanged", "redis": "unchanged", "backend": "recreated",
                                 "worker": "recreated"}
    after = container_ids(docker_client, host)
    assert after["db"] == before["db"] and after["redis"] == before["redis"]
    assert after["backend"] != before["backend"]
    assert report["backend"]["server"]["server_description"] == description
    with host.http() as http:
        assert http.get("/api/v1/server/info").json()["server_description"] == description

    again = host.up_ok()
    assert again["actions"] == {service: "unchanged" for service in SERVICES}
    assert container_ids(docker_client, host) == after


@pytest.mark.engine
def test_data_survives_down_and_up(shared: tuple[Host, Run],
                                   docker_client: docker.DockerClient) -> None:
    host = shared_up(shared)
    world, key, value = world_and_key(host, "persist")
    volumes_before = sorted(project_resources(docker_client, host.project)["volumes"])
    assert volumes_before == sorted(f"{host.project}_{v}" for v in ("backend-data", "db-data",
                                                                    "redis-data"))

    down = host.run("down")
    assert down.code == 0, str(down)
    left = project_resources(docker_client, host.project)
    assert left["containers"] == [] and left["networks"] == [], left
    assert sorted(left["volumes"]) == volumes_before, "down removed a volume"

    report = host.up_ok()
    assert report["actions"] == {service: "created" for service in SERVICES}
    assert_readable(host, world, key, value)
    with host.http() as http:
        names = [w["name"] for w in http.get("/api/v1/worlds").json()["worlds"]]
    assert world["name"] in names


@pytest.mark.engine
def test_status_exit_codes_follow_health(shared: tuple[Host, Run],
                                         docker_client: docker.DockerClient) -> None:
    host = shared_up(shared)
    healthy = host.run("status")
    assert healthy.code == 0, str(healthy)
    assert f"Host {host.name!r} ({host.host_id}) is healthy." in healthy.stdout
    report = host.run("status", "--json")
    assert report.code == 0, str(report)
    data = report.json()
    assert data["health"] == "healthy" and data["backend"]["verified"] is True
    assert {s: v["state"] for s, v in data["services"].items()} == dict.fromkeys(SERVICES, "running")

    containers(docker_client, host)["db"].stop(timeout=20)
    try:
        broken = host.run("status")
        assert broken.code != 0, str(broken)
        assert "Traceback" not in broken.output
        assert "is NOT healthy" in broken.stdout, str(broken)
        db_lines = [line for line in broken.stdout.splitlines() if line.split()[:1] == ["db"]]
        assert len(db_lines) == 1 and "exited" in db_lines[0], str(broken)
        as_json = host.run("status", "--json")
        assert as_json.code != 0, str(as_json)
        data = as_json.json()
        assert data["health"] == "unhealthy" and as_json.code == 4
        assert data["services"]["db"]["state"] == "exited"
        assert data["services"]["redis"]["state"] == "running"
    finally:
        restored = host.run("up", "--json")
    assert restored.code == 0, str(restored)
    assert restored.json()["actions"] == {"db": "started", "redis": "unchanged",
                                          "backend": "unchanged", "worker": "unchanged"}
    again = host.run("status")
    assert again.code == 0, str(again)
    assert_answers_as(host)


@pytest.mark.engine
def test_logs_print_the_tail_and_mask_secrets(shared: tuple[Host, Run],
                                              docker_client: docker.DockerClient) -> None:
    host = shared_up(shared)
    marker = f"logs-marker-{uuid.uuid4().hex[:8]}"
    secret = host.secrets["SECRET_KEY"]
    with host.http() as http:
        assert http.get(f"/api/v1/kv/{marker}").status_code == 404
        # The backend logs each request's path, so this puts a secret into its log.
        leaking = http.get(f"/api/v1/kv/{secret}").status_code
    assert leaking == 404, "GET /api/v1/kv/<SECRET_KEY> did not answer 404"
    backend = containers(docker_client, host)["backend"]
    # The backend writes its access line after the response: wait until the engine has it.
    deadline = time.monotonic() + 15
    while secret not in backend.logs(tail=5).decode("utf-8", "replace"):
        assert time.monotonic() < deadline, "the backend never logged the request"
        time.sleep(0.1)

    run = host.run("logs", "backend", "--tail", "5")
    assert run.code == 0, str(run)
    lines = run.stdout.splitlines()
    assert len(lines) == 5, str(run)
    assert any(marker in line for line in lines), str(run)
    assert any("GET /api/v1/kv/******** 404" in line for line in lines), str(run)

    every = host.run("logs", "--tail", "3")
    assert every.code == 0, str(every)
    services = set()
    for line in every.stdout.splitlines():
        match = re.match(r"^(backend|db|redis|worker)\s*\| ", line)
        assert match, f"unprefixed line {line!r} in {every}"
        services.add(match.group(1))
    assert services == set(SERVICES), str(every)

    unknown = host.run("logs", "nosuch")
    assert_clean_failure(unknown)
    assert "'nosuch'" in unknown.stderr and "backend" in unknown.stderr


@pytest.mark.engine
def test_down_volumes_without_yes_and_tty_deletes_nothing(shared: tuple[Host, Run],
                                                          docker_client: docker.DockerClient) -> None:
    host = shared_up(shared)
    ids = container_ids(docker_client, host)
    volumes = sorted(project_resources(docker_client, host.project)["volumes"])
    assert len(volumes) == 3

    run = host.run("down", "--volumes")
    assert_clean_failure(run)
    assert "--yes" in run.stderr
    for name in volumes:
        assert name in run.stderr, f"{name} not listed in {run}"
    assert container_ids(docker_client, host) == ids
    assert all(c.status == "running" for c in containers(docker_client, host).values())
    assert sorted(project_resources(docker_client, host.project)["volumes"]) == volumes
    status = host.run("status")
    assert status.code == 0, str(status)


@pytest.mark.engine
def test_restart_backend_keeps_the_host_verified(shared: tuple[Host, Run],
                                                 docker_client: docker.DockerClient) -> None:
    host = shared_up(shared)
    ids, started = container_ids(docker_client, host), started_at(docker_client, host)

    run = host.run("restart", "backend")
    assert run.code == 0, str(run)
    assert "verified healthy" in run.stdout, str(run)
    assert container_ids(docker_client, host) == ids
    after = started_at(docker_client, host)
    assert after["backend"] != started["backend"], "the backend was not restarted"
    assert after["db"] == started["db"] and after["redis"] == started["redis"]
    status = host.run("status")
    assert status.code == 0, str(status)
    assert_answers_as(host)


# ---- hosts of their own ---------------------------------------------------------------------


@pytest.mark.engine
def test_backend_crash_fails_up_fast_with_its_logs(make_host: Callable[..., Host],
                                                   docker_client: docker.DockerClient) -> None:
    host = make_host()
    command = ["python", "-c", "import sys; print('boom-marker'); sys.exit(3)"]
    changed = host.run("config", "set", "backend.command", json.dumps(command))
    assert changed.code == 0, str(changed)
    assert json.loads(host.run("config", "get", "backend.command").stdout) == command

    run = host.run("up", "--timeout", "120")
    assert_clean_failure(run)
    assert run.elapsed < 30, f"a crashing backend took {run.elapsed:.1f} s to fail `up`"
    assert "'backend'" in run.stderr and "code 3" in run.stderr, str(run)
    # The backend's own output, from its log (not the command line that printed it).
    assert "boom-marker" in [line.strip() for line in run.stderr.splitlines()], str(run)
    found = containers(docker_client, host)
    assert sorted(found) == sorted(SERVICES), "containers must be left for inspection"
    assert found["db"].status == "running" and found["redis"].status == "running"
    logs = host.run("logs", "backend", "--tail", "5")
    assert logs.code == 0, str(logs)
    assert "boom-marker" in logs.stdout.splitlines(), str(logs)


@pytest.mark.engine
def test_port_in_use_fails_before_anything_is_created(make_host: Callable[..., Host],
                                                      docker_client: docker.DockerClient) -> None:
    host = make_host()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", host.port))
        squatter.listen(1)
        run = host.run("up", "--timeout", "60")
    assert_clean_failure(run)
    assert f"port {host.port}" in run.stderr, str(run)
    assert project_resources(docker_client, host.project) == {
        "containers": [], "networks": [], "volumes": []}


@pytest.mark.engine
def test_backend_answering_as_another_host_is_refused(make_host: Callable[..., Host],
                                                      docker_client: docker.DockerClient) -> None:
    host = make_host()
    other = str(uuid.uuid4())
    command = ["sh", "-c", f"SERVER_ID={other} exec python -m pixsim_reference_backend"]
    changed = host.run("config", "set", "backend.command", json.dumps(command))
    assert changed.code == 0, str(changed)

    run = host.run("up", "--timeout", "120")
    assert_clean_failure(run)
    assert run.elapsed < 30, f"refusing another host took {run.elapsed:.1f} s"
    assert "answers as host" in run.stderr and other in run.stderr, str(run)
    assert host.host_id in run.stderr, str(run)
    # Really another host answering there, not a backend that failed to start.
    with host.http() as http:
        assert http.get("/api/v1/server/info").json()["server_id"] == other
    status = host.run("status")
    assert status.code != 0, str(status)

    # The other host_id is now recorded in this host's database: with SERVER_ID back to this
    # host, the backend refuses the database, and `up` fails at once with the reason.
    reverted = host.run("config", "set", "backend.command", "null")
    assert reverted.code == 0, str(reverted)
    again = host.run("up", "--timeout", "120")
    assert_clean_failure(again)
    assert again.elapsed < 30, f"a backend refusing its database took {again.elapsed:.1f} s to fail"
    # The backend and its worker start together and both refuse the database: whichever
    # exits first is the one named, with its own reason.
    assert "'backend'" in again.stderr or "'worker'" in again.stderr, str(again)
    assert f"this database belongs to host {other}" in again.stderr, str(again)


@pytest.mark.engine
def test_two_hosts_side_by_side_and_down_of_one(shared: tuple[Host, Run],
                                                make_host: Callable[..., Host],
                                                docker_client: docker.DockerClient) -> None:
    b = shared_up(shared)
    a = make_host()
    assert a.up_ok()["backend"]["server"]["server_id"] == a.host_id
    assert_answers_as(a)
    assert_answers_as(b)
    a_data, b_data = world_and_key(a, "host-a"), world_and_key(b, "host-b")
    # Host-local data: each host sees only what was written to it.
    with a.http() as http_a, b.http() as http_b:
        a_names = [w["name"] for w in http_a.get("/api/v1/worlds").json()["worlds"]]
        b_names = [w["name"] for w in http_b.get("/api/v1/worlds").json()["worlds"]]
        assert http_a.get(f"/api/v1/kv/{b_data[1]}").status_code == 404
        assert http_b.get(f"/api/v1/kv/{a_data[1]}").status_code == 404
    assert a_data[0]["name"] in a_names and a_data[0]["name"] not in b_names
    assert b_data[0]["name"] in b_names and b_data[0]["name"] not in a_names
    b_ids, b_started = container_ids(docker_client, b), started_at(docker_client, b)

    down = a.run("down")
    assert down.code == 0, str(down)
    assert project_resources(docker_client, a.project)["containers"] == []
    assert container_ids(docker_client, b) == b_ids
    assert started_at(docker_client, b) == b_started
    status = b.run("status")
    assert status.code == 0, str(status)
    assert_answers_as(b)
    assert_readable(b, *b_data)
    a_status = a.run("status", "--json")
    assert a_status.code != 0, str(a_status)
    assert {s: v["state"] for s, v in a_status.json()["services"].items()} == dict.fromkeys(
        SERVICES, "missing")


@pytest.mark.engine
def test_missing_image_with_pull_never_names_the_image(make_host: Callable[..., Host],
                                                       docker_client: docker.DockerClient) -> None:
    host = make_host()
    image = f"e2e-missing/postgres:{uuid.uuid4().hex[:8]}"
    changed = host.run("config", "set", "database.image", image)
    assert changed.code == 0, str(changed)
    run = host.run("up", "--pull", "never", "--timeout", "60")
    assert_clean_failure(run)
    assert image in run.stderr and "--pull never" in run.stderr, str(run)
    assert project_resources(docker_client, host.project) == {
        "containers": [], "networks": [], "volumes": []}


def host_resources(client: docker.DockerClient, host: Host) -> list[str]:
    """Everything on the engine labelled with this host's host_id."""
    flt = {"label": f"{HOST_ID_LABEL}={host.host_id}"}
    return ([f"container {c.name}" for c in client.containers.list(all=True, filters=flt)]
            + [f"network {n.name}" for n in client.networks.list(filters=flt)]
            + [f"volume {v.name}" for v in client.volumes.list(filters=flt)])


@pytest.mark.engine
def test_a_host_reusing_another_hosts_project_touches_nothing_of_it(
        make_host: Callable[..., Host], docker_client: docker.DockerClient, tmp_path: Path) -> None:
    owner = make_host()
    owner.up_ok()
    data = world_and_key(owner, "owner")
    down = owner.run("down")
    assert down.code == 0, str(down)
    owner_volumes = sorted(project_resources(docker_client, owner.project)["volumes"])
    assert len(owner_volumes) == 3

    # The same name on the same engine, created with another registry (another user of this
    # Docker engine, say): another host_id, but the same Docker project.
    twin = make_host(name=owner.name, home=tmp_path / "other-registry")
    assert twin.project == owner.project and twin.host_id != owner.host_id
    refused = twin.run("up", "--timeout", "60")
    assert_clean_failure(refused)
    assert "belongs to another host" in refused.stderr and owner.host_id in refused.stderr, str(refused)
    # A refused `up` leaves nothing behind, least of all something that locks the owner out.
    assert host_resources(docker_client, twin) == []
    owner.up_ok()
    assert_readable(owner, *data)

    # The twin's down (even with --volumes --yes) neither stops the owner nor deletes its data.
    ids = container_ids(docker_client, owner)
    twin_down = twin.run("down", "--volumes", "--yes")
    assert_clean_failure(twin_down)
    assert owner.host_id in twin_down.stderr, str(twin_down)
    assert container_ids(docker_client, owner) == ids
    assert all(c.status == "running" for c in containers(docker_client, owner).values())
    assert_answers_as(owner)

    down = owner.run("down")
    assert down.code == 0, str(down)
    created = {name: docker_client.volumes.get(name).attrs["CreatedAt"] for name in owner_volumes}
    twin_down = twin.run("down", "--volumes", "--yes")
    assert twin_down.code == 0, str(twin_down)
    assert "Deleted its data: there was none." in twin_down.stdout, str(twin_down)
    assert {name: docker_client.volumes.get(name).attrs["CreatedAt"]
            for name in owner_volumes} == created, "the twin's down touched the owner's volumes"
