"""Registry, lock, connect and doctor against real hosts on a real Docker engine.

* two ``up``s of one host at once: one waits for the other, both succeed, nothing breaks;
* an ``up`` killed with SIGKILL while it holds the host's lock: the next ``up --no-wait``
  takes the lock and converges the half-made stack;
* ``connect`` to a host brought up with ``up`` on loopback: first use, the same identity
  again, then another host on the same URL refused until re-pinned;
* ``hosts list`` sees the hosts up; ``doctor`` passes on a healthy host and fails when an
  image is missing or a service of a running host is stopped.

Every host is created with ``init`` under a unique name and a free port, in the test's own
registry (tests/conftest.py), and torn down with ``down --volumes --yes``; anything of its
Docker project left after that is removed and reported. Every command's output is checked
against the hosts' secrets (tests/e2e/e2e_helpers.py).
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from e2e_helpers import (
    REGISTRY_ENV,
    SERVICE_LABEL,
    SERVICES,
    Host,
    cli,
    host_maker,
    project_containers,
    spawn,
    use_registry,
)

pytestmark = pytest.mark.engine


@pytest.fixture(autouse=True)
def test_registry(_pixsim_home: None) -> Iterator[Path]:
    """Commands use the test's own registry, the one tests/conftest.py puts in $PIXSIM_HOST_HOME."""
    with use_registry(Path(os.environ[REGISTRY_ENV])) as home:
        yield home


@pytest.fixture
def make_host(docker_client: docker.DockerClient, require_images: Callable[..., None],
              tmp_path: Path) -> Iterator[Callable[..., Host]]:
    yield from host_maker(docker_client, require_images, tmp_path, Host, prefix="e2e-reg")


def hosts_list() -> dict[str, dict[str, Any]]:
    run = cli("hosts", "list", "--json", "--timeout", "3")  # a loaded CI machine may be slow
    assert run.code == 0, str(run)
    return {h["name"]: h for h in run.json()["hosts"]}


# ---- the lock ----------------------------------------------------------------------------------


def test_two_ups_at_once_one_waits_and_both_succeed(make_host: Callable[..., Host],
                                                    docker_client: docker.DockerClient) -> None:
    host = make_host()
    first = spawn("up", "--json", "--dir", str(host.dir))
    time.sleep(0.3)
    second = spawn("up", "--json", "--dir", str(host.dir))
    outs = [(run.stdout, run.stderr) for run in (proc.finish() for proc in (first, second))]
    for proc, (out, err) in zip((first, second), outs, strict=True):
        assert proc.returncode == 0, f"{out}\n{err}"
    waited = [err for _, err in outs if "Waiting for `pixsim-host up`" in err]
    assert len(waited) == 1, outs
    reports = [json.loads(out) for out, _ in outs]
    # One created the stack; the other, having waited, found it up and changed nothing.
    actions = sorted(set(report["actions"].values()) for report in reports)
    assert {"unchanged"} in actions and any("created" in a for a in actions), actions
    assert all(r["backend"]["server"]["server_id"] == host.host_id for r in reports)
    assert len(project_containers(docker_client, host)) == len(SERVICES)
    status = host.run("status", "--json")
    assert status.code == 0 and status.json()["health"] == "healthy", str(status)


def test_an_up_killed_while_holding_the_lock_leaves_no_deadlock(
        make_host: Callable[..., Host], docker_client: docker.DockerClient) -> None:
    host = make_host()
    owner = host.dir / ".pixsim-host" / "lock.owner"
    proc = spawn("up", "--dir", str(host.dir))
    deadline = time.monotonic() + 60
    while not owner.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert owner.exists() and proc.poll() is None, "up should be holding the lock now"
    time.sleep(0.5)  # somewhere in the middle of creating the stack
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert owner.exists(), "a killed holder cleans up nothing"

    again = host.run("up", "--no-wait", "--json")
    assert again.code == 0, str(again)
    assert again.json()["backend"]["server"]["server_id"] == host.host_id
    assert len(project_containers(docker_client, host)) == len(SERVICES)
    assert not owner.exists(), "a clean finish removes its note"


# ---- connect, hosts list, doctor -------------------------------------------------------------


def test_connect_to_a_real_host_then_another_host_on_its_url(make_host: Callable[..., Host]) -> None:
    first = make_host()
    assert first.run("up").code == 0
    assert hosts_list()[first.name]["status"] == "up"

    new = cli("connect", first.url)
    assert new.code == 0, str(new)
    assert "First connection" in new.stdout and first.host_id in new.stdout and first.name in new.stdout
    assert f"VITE_BACKEND_URL={first.url}" in new.stdout
    same = cli("connect", first.url, "--json")
    assert same.code == 0 and same.json()["outcome"] == "known" and same.json()["host_id"] == first.host_id

    doctor = first.run("doctor", "--json")
    assert doctor.code == 0, str(doctor)
    checks = {c["name"]: c for c in doctor.json()["checks"]}
    assert checks["port"]["status"] == "pass" and "held by this host" in checks["port"]["message"]
    assert checks["health"]["status"] == "pass" and checks["images"]["status"] == "pass"

    # Another host takes over the URL: first its claim on the port must be released.
    assert first.run("down").code == 0
    assert hosts_list()[first.name]["status"] == "down"
    claimed = cli("init", str(first.dir.parent / "second"), "--yes", "--name", "second",
                  "--port", str(first.port))
    assert claimed.code != 0 and f"claimed by host '{first.name}'" in claimed.stderr, str(claimed)
    assert cli("hosts", "forget", first.name).code == 0
    second = make_host(port=first.port)
    assert second.run("up").code == 0

    refused = cli("connect", first.url)
    assert refused.code == 3, str(refused)
    assert "IDENTITY CHANGED" in refused.stderr
    assert first.host_id in refused.stderr and second.host_id in refused.stderr
    repinned = cli("connect", first.url, "--accept-new-identity", "--json")
    assert repinned.code == 0 and repinned.json()["outcome"] == "re-pinned", str(repinned)
    assert repinned.json()["host_id"] == second.host_id
    listed = cli("connect", "--list", "--json").json()["hosts"]
    assert [(h["backend_url"], h["host_id"]) for h in listed] == [(first.url, second.host_id)]
    assert hosts_list()[second.name]["status"] == "up"


def test_doctor_fails_on_a_missing_image_and_a_stopped_service(
        make_host: Callable[..., Host], docker_client: docker.DockerClient) -> None:
    host = make_host()
    assert host.run("up").code == 0
    redis = next(c for c in project_containers(docker_client, host)
                 if c.labels.get(SERVICE_LABEL) == "redis")
    redis.stop(timeout=5)
    stopped = host.run("doctor", "--json")
    assert stopped.code == 1, str(stopped)
    checks = {c["name"]: c for c in stopped.json()["checks"]}
    assert checks["health"]["status"] == "fail" and "redis is exited" in checks["health"]["message"]
    assert "pixsim-host up" in checks["health"]["hint"]
    assert stopped.stderr.startswith(f"Error: 1 of {len(checks)} checks failed (health)"), str(stopped)

    assert host.run("down").code == 0
    missing = f"pixsim-host-test/absent-{uuid.uuid4().hex[:8]}:1"
    assert host.run("config", "set", "redis.image", missing).code == 0
    result = host.run("doctor", "--json")
    assert result.code == 1, str(result)
    checks = {c["name"]: c for c in result.json()["checks"]}
    assert checks["images"]["status"] == "fail" and missing in checks["images"]["message"]
    assert checks["health"]["status"] == "skip"
