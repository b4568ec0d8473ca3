"""The backend's own jobs on a real engine: migrations before start, workers, extensions, exec.

The reference backend follows PixSim7 here: it never creates its schema (a separate
``migrate`` command does, needing ``pg_trgm`` and ``vector``), exits 3 on an unmigrated
database, and leaves background jobs to a worker process. Each test drives the real CLI
against the stand-in images and checks the outcome through the backend's own API.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import yaml
from e2e_helpers import (
    Host,
    Run,
    assert_clean_failure,
    assert_ok,
    cli,
    containers,
    host_maker,
    registry_home,  # noqa: F401 (an autouse fixture: this module's own host registry)
)

pytestmark = pytest.mark.engine


@pytest.fixture
def make_host(docker_client: docker.DockerClient, require_images: Callable[..., None],
              tmp_path: Path) -> Iterator[Callable[..., Host]]:
    yield from host_maker(docker_client, require_images, tmp_path, Host)


def exec_in(host: Host, service: str, *command: str) -> Run:
    # --dir goes before the service: everything after `--` is the command's own.
    return cli("exec", "--dir", host.dir, service, "--", *command, home=host.home)


def set_key(host: Host, key: str, value: str) -> None:
    assert_ok(host.run("config", "set", key, value))


def submit_job(host: Host, text: str) -> str:
    with host.http() as http:
        answer = http.post("/api/v1/jobs", json={"kind": "render", "text": text})
    assert answer.status_code in (200, 201, 202), answer.text
    return str(answer.json()["id"])


def wait_job(host: Host, job_id: str, timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    with host.http() as http:
        while True:
            job: dict[str, object] = http.get(f"/api/v1/jobs/{job_id}").json()
            if job["status"] in ("done", "failed") or time.monotonic() > deadline:
                return job
            time.sleep(0.2)


def test_a_fresh_host_comes_up_through_its_migrations_and_its_worker_does_jobs(
        make_host: Callable[..., Host], docker_client: docker.DockerClient) -> None:
    host = make_host()
    report = host.up_ok()
    assert "worker" in report["services"], report["services"]
    state = yaml.safe_load((host.dir / ".pixsim-host" / "migrations.json").read_text())
    assert state["commands"] == ["python -m pixsim_reference_backend migrate"]
    # The worker runs the backend's image with the backend's environment.
    running = containers(docker_client, host)
    assert running["worker"].image.id == running["backend"].image.id
    job = wait_job(host, submit_job(host, "hello"))
    assert job["status"] == "done", job
    # A no-change up does not migrate again (the backend's code did not change).
    before = (host.dir / ".pixsim-host" / "migrations.json").read_text()
    assert_ok(host.run("up"))
    assert (host.dir / ".pixsim-host" / "migrations.json").read_text() == before
    status = host.run("status", "--json")
    assert status.code == 0, status
    assert status.json()["services"]["worker"]["state"] == "running"


def test_an_unmigrated_backend_never_starts(make_host: Callable[..., Host]) -> None:
    host = make_host()
    set_key(host, "backend.migrate", "[]")
    failed = host.run("up", "--timeout", "60")
    assert_clean_failure(failed)
    # The backend's own refusal, shown with its log: it exits 3 before it listens.
    assert "exited with code 3" in failed.output, failed
    assert "does not exist" in failed.output, failed
    set_key(host, "backend.migrate", "['python -m pixsim_reference_backend migrate']")
    host.up_ok()


def test_a_failing_migration_stops_up_and_leaves_the_running_backend_alone(
        make_host: Callable[..., Host], docker_client: docker.DockerClient) -> None:
    host = make_host()
    host.up_ok()
    job = wait_job(host, submit_job(host, "kept"))
    before = containers(docker_client, host)["backend"].id
    set_key(host, "backend.migrate",
            "['python -m pixsim_reference_backend migrate', "
            "'python -c \"import sys; print(\\\"schema step 2 broke\\\"); sys.exit(4)\"']")
    failed = host.run("up")
    assert_clean_failure(failed)
    assert "failed (exit 4): schema step 2 broke" in failed.output, failed
    assert "pixsim-host migrate" in failed.output, failed
    # The backend that ran before is the same container, still answering, data intact.
    assert containers(docker_client, host)["backend"].id == before
    with host.http() as http:
        again = http.get(f"/api/v1/jobs/{job['id']}").json()
    assert again["status"] == "done"


def test_a_missing_extension_is_named_before_any_migration(make_host: Callable[..., Host]) -> None:
    host = make_host()
    set_key(host, "database.extensions", "[vector, pg_trgm, no_such_extension]")
    failed = host.run("up")
    assert_clean_failure(failed)
    assert "cannot create the extension no_such_extension" in failed.output, failed
    assert not (host.dir / ".pixsim-host" / "migrations.json").exists()


def test_exec_runs_in_the_backends_environment_and_psql_in_db(make_host: Callable[..., Host]) -> None:
    host = make_host()
    host.up_ok()
    ran = exec_in(host, "backend", "python", "-c", "import os; print(os.environ['SERVER_ID'])")
    assert ran.code == 0, ran
    assert ran.stdout.strip() == host.host_id
    failed = exec_in(host, "backend", "python", "-c", "raise SystemExit(7)")
    assert failed.code == 7, failed
    sql = exec_in(host, "db", "psql", "-U", "pixsim", "-d", "pixsim", "-t", "-A", "-c",
                  "SELECT count(*) FROM alembic_version")
    assert sql.code == 0, sql
    assert sql.stdout.strip() == "1"
    unknown = exec_in(host, "nope", "true")
    assert unknown.code == 2 and "no service 'nope'" in unknown.output, unknown


def test_a_hung_backend_is_restarted_by_up(make_host: Callable[..., Host],
                                          docker_client: docker.DockerClient) -> None:
    host = make_host()
    host.up_ok()
    backend = containers(docker_client, host)["backend"]
    backend.reload()
    pid = int(backend.attrs["State"]["Pid"])
    os.kill(pid, signal.SIGSTOP)  # running, accepting connections, answering nothing
    try:
        status = host.run("status", "--json")
        assert status.code != 0, status
        assert status.json()["backend"]["health"] != "healthy"
        report = host.up_ok("--timeout", "90")
        assert report["backend"]["server"]["server_id"] == host.host_id
    finally:
        import contextlib

        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_exec_passes_stdin_on_and_repairs_a_host_whose_backend_cannot_start(
        make_host: Callable[..., Host], docker_client: docker.DockerClient) -> None:
    host = make_host()
    # The first migration is refused: the backend never starts on the empty database.
    set_key(host, "backend.migrate", "['python -c \"raise SystemExit(9)\"']")
    assert_clean_failure(host.run("up"))
    assert "backend" not in containers(docker_client, host)
    # The backend's environment is still at hand: a one-off container of its image.
    probe = exec_in(host, "backend", "python", "-c", "import os; print(os.environ['SERVER_ID'])")
    assert probe.code == 0, probe
    assert probe.stdout.strip() == host.host_id
    # Standard input reaches the command (piped SQL, a script's answers), and psql needs no
    # arguments: the host's role and database are set.
    piped = cli("exec", "--dir", host.dir, "db", "--", "psql", "-At", "-v", "ON_ERROR_STOP=1",
                input_text="CREATE TABLE repaired (x int); SELECT 40 + 2;\n", home=host.home)
    assert piped.code == 0, piped
    assert piped.stdout.strip().splitlines()[-1] == "42"
    failing = cli("exec", "--dir", host.dir, "db", "--", "psql", "-At", "-v", "ON_ERROR_STOP=1",
                  input_text="SELECT * FROM no_such_table;\n", home=host.home)
    assert failing.code != 0, failing
    oneoffs = docker_client.containers.list(all=True, filters={"label": "com.docker.compose.oneoff=True"})
    assert not [c for c in oneoffs if c.labels.get("com.docker.compose.project") == host.project]
