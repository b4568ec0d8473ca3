"""``up`` killed on Docker between removing a changed service's container and creating its
new one: no volume is touched, ``status`` says what happened and does not verify the host,
and the next ``up`` creates the missing container and verifies it.

The kill comes from the command itself at that step (``PIXSIM_HOST_FAULT_POINT``, a test
seam read once by the CLI), so it is the same moment on every run.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from e2e_helpers import (
    Host,
    assert_ok,
    containers,
    host_maker,
    project_resources,
    registry_home,  # noqa: F401 (an autouse fixture: this module's own host registry)
)

FAULT = "PIXSIM_HOST_FAULT_POINT"
WHEN = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"


@pytest.fixture
def make_host(docker_client: docker.DockerClient, require_images: Callable[..., None],
              tmp_path: Path) -> Iterator[Callable[[], Host]]:
    yield from host_maker(docker_client, require_images, tmp_path, Host)


def up_with_a_change_to_apply(make_host: Callable[[], Host],
                              docker_client: docker.DockerClient) -> tuple[Host, list[str]]:
    """A running host, its volumes, and a change its backend's container is recreated for
    (recorded, not applied yet): the next `up` replaces the backend."""
    host = make_host()
    host.up_ok()
    volumes = project_resources(docker_client, host.project)["volumes"]
    assert volumes
    assert_ok(host.run("plugins", "disable", "game_stealth", "--no-restart"))
    return host, volumes


@pytest.mark.engine
def test_up_killed_between_remove_and_create_is_finished_by_the_next_up(
        make_host: Callable[[], Host], docker_client: docker.DockerClient) -> None:
    host, volumes = up_with_a_change_to_apply(make_host, docker_client)
    # The data services are not touched (the worker, with the backend's environment, is
    # replaced in the same step).
    others = {name: c.id for name, c in containers(docker_client, host).items()
              if name in ("db", "redis")}
    killed = host.run("up", env={**os.environ, FAULT: "docker.removed.backend"})
    assert killed.code == -signal.SIGKILL, str(killed)
    left = containers(docker_client, host)
    assert "backend" not in left
    assert {name: c.id for name, c in left.items() if name in others} == others
    assert project_resources(docker_client, host.project)["volumes"] == volumes

    status = host.run("status", "--json")
    assert status.code == 4, str(status)
    document = status.json()
    assert document["services"]["backend"]["state"] == "missing"
    assert document["backend"]["verified"] is False
    # The worker (same level, converged in parallel) may have begun its replacement too.
    assert re.fullmatch(f"`pixsim-host up` \\(started {WHEN}\\) began replacing backend(, worker)? "
                        "and did not verify the host \\(it was interrupted or failed\\); run "
                        "`pixsim-host up` to finish", document["backend"]["problem"]), document["backend"]

    report = host.up_ok()
    assert report["actions"]["backend"] == "created"
    assert report["plugins_enabled"] and "game_stealth" not in report["plugins_enabled"]
    assert not (host.dir / ".pixsim-host" / "up-replace-in-progress.json").exists()
    assert project_resources(docker_client, host.project)["volumes"] == volumes
    assert assert_ok(host.run("status", "--json")).json()["backend"]["verified"] is True


@pytest.mark.engine
def test_sigterm_during_a_recreate_lets_the_new_container_be_made_first(
        make_host: Callable[[], Host], docker_client: docker.DockerClient) -> None:
    host, volumes = up_with_a_change_to_apply(make_host, docker_client)
    old = containers(docker_client, host)["backend"].id
    stopped = host.run("up", env={**os.environ, FAULT: "docker.removed.backend:TERM"})
    assert stopped.code == 130, str(stopped)
    assert [line for line in stopped.stderr.splitlines() if line.startswith("Error")] == [
        "Error: interrupted before the host was verified; run `pixsim-host up` again to finish"]
    # The replacement under way was finished before the process ended: a new container runs.
    backend = containers(docker_client, host)["backend"]
    assert backend.id != old and backend.status == "running"
    assert project_resources(docker_client, host.project)["volumes"] == volumes
    status = host.run("status", "--json")
    assert status.code == 4 and status.json()["backend"]["verified"] is False, str(status)
    report = host.up_ok()
    assert report["actions"]["backend"] == "unchanged"
    assert assert_ok(host.run("status", "--json")).json()["backend"]["verified"] is True
