"""The native host's supervisor, end to end: what `up` starts is brought back when it crashes.

A SIGKILLed backend, worker, PostgreSQL or Redis is started again within seconds, with
exactly what `up` starts (so `up` afterwards finds it unchanged), and `status` shows the
restart; `down` stops the supervisor first and nothing is restarted after it; a service
that crashes again and again is restarted with a growing delay, never two copies at once.
Each test prints the time from the kill to a healthy host again.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from native_support import Host, Hosts, assert_ok, processes_under

pytestmark = pytest.mark.native




def supervisor_pid(host: Host) -> int | None:
    try:
        return int(json.loads((host.dir / ".pixsim-host" / "supervisor.pid").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def recorded_pid(host: Host, service: str) -> int | None:
    try:
        return int(json.loads(host.pid_file(service).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def is_running(pid: int) -> bool:
    """A live process (not a zombie nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def answers(host: Host) -> bool:
    try:
        with httpx.Client(base_url=host.url, timeout=2.0, trust_env=False) as http:
            return http.get("/api/v1/server/info").json().get("server_id") == host.host_id
    except (httpx.HTTPError, ValueError):
        return False


def kill_and_wait_back(host: Host, service: str, deadline_seconds: float = 60.0) -> float:
    """SIGKILL ``service``; seconds until a new process of it runs and the host answers."""
    old = recorded_pid(host, service)
    assert old is not None
    killed = time.monotonic()
    os.kill(old, signal.SIGKILL)
    deadline = killed + deadline_seconds
    while time.monotonic() < deadline:
        new = recorded_pid(host, service)
        if new not in (None, old) and Path(f"/proc/{new}").exists() and answers(host):
            return time.monotonic() - killed
        time.sleep(0.05)
    log = (host.dir / "logs" / "supervisor.log").read_text(errors="replace")
    raise AssertionError(f"{service} was not brought back in {deadline_seconds:.0f} s; "
                         f"supervisor log:\n{log}")


def test_a_killed_backend_and_worker_are_brought_back(hosts: Hosts) -> None:
    host = hosts.init()
    host.up()
    assert is_running(supervisor_pid(host) or 0)
    assert all("restarts" not in s for s in host.status()["services"].values())
    host.put_kv("kept", "across a crash")

    took = kill_and_wait_back(host, "backend")
    print(f"\nbackend SIGKILLed -> running and answering again in {took:.2f} s")
    status = host.status()
    backend = status["services"]["backend"]
    assert backend["state"] == "running", status
    assert backend["restarts"]["restarts"] == 1, backend
    assert backend["restarts"]["last_restart_at"], backend
    assert status["health"] == "healthy", status
    assert host.get_kv("kept") == "across a crash"
    # What the supervisor started is what `up` starts: up leaves it alone.
    pid = recorded_pid(host, "backend")
    report = host.up()
    assert report["actions"]["backend"] == "unchanged", report["actions"]
    assert recorded_pid(host, "backend") == pid

    took = kill_and_wait_back(host, "worker")
    print(f"worker SIGKILLed -> running again in {took:.2f} s")
    services = host.status()["services"]
    assert services["worker"]["state"] == "running"
    assert services["worker"]["restarts"]["restarts"] == 1, services["worker"]
    assert services["backend"]["restarts"]["restarts"] == 1
    human = host.run("status")
    assert human.code == 0, str(human)
    assert "restarted 1 time(s) by the supervisor" in human.stdout, human.stdout


def test_a_killed_postgres_and_redis_are_brought_back(hosts: Hosts) -> None:
    host = hosts.init()
    host.up()
    host.put_kv("kept", "across a database crash")
    for service in ("redis", "db"):
        took = kill_and_wait_back(host, service)
        print(f"\n{service} SIGKILLed -> running again, host answering, in {took:.2f} s")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and host.run("status").code != 0:
        time.sleep(0.5)
    status = host.status()
    assert status["health"] == "healthy", status
    assert status["services"]["db"]["restarts"]["restarts"] >= 1
    assert status["services"]["redis"]["restarts"]["restarts"] >= 1
    assert host.get_kv("kept") == "across a database crash"


def test_down_stops_the_supervisor_first_and_nothing_comes_back(hosts: Hosts) -> None:
    host = hosts.init()
    host.up()
    supervisor = supervisor_pid(host)
    assert supervisor is not None
    down = assert_ok(host.run("down"))
    assert "stopped the supervisor" in down.stderr, str(down)
    assert not is_running(supervisor)
    assert supervisor_pid(host) is None
    # Nothing is restarted afterwards: no process of the host, for longer than the backoff.
    watch_until = time.monotonic() + 4.0
    while time.monotonic() < watch_until:
        assert processes_under(host.dir) == [], "something runs after down"
        time.sleep(0.2)
    assert not list((host.dir / ".pixsim-host" / "run").glob("*.pid"))
    # up starts it again; a second up keeps the same one (one supervisor per host).
    host.up()
    first = supervisor_pid(host)
    host.up()
    assert supervisor_pid(host) == first


def test_native_restart_no_leaves_a_crash_alone(hosts: Hosts) -> None:
    host = hosts.init()
    up = assert_ok(host.run("up"))
    assert "started the supervisor" in up.stderr, str(up)
    running = supervisor_pid(host)
    assert running and is_running(running)
    assert_ok(host.run("config", "set", "native.restart", "no"))
    host.up()  # (config set may have run it already)
    assert supervisor_pid(host) is None and not is_running(running)
    pid = recorded_pid(host, "worker")
    assert pid
    os.kill(pid, signal.SIGKILL)
    time.sleep(3.0)
    assert host.status()["services"]["worker"]["state"] == "exited"


@pytest.mark.parametrize("lifetime", [2, 0], ids=["after-2s", "at-once"])
def test_a_service_that_keeps_crashing_backs_off_one_copy_at_a_time(hosts: Hosts, lifetime: int) -> None:
    host = hosts.init()
    marker = f"crash-on-purpose-{uuid.uuid4().hex[:8]}"
    config_file = host.dir / "pixsim-host.yaml"
    config: dict[str, Any] = yaml.safe_load(config_file.read_text())
    # 2 s: long enough for `up` to see it start, never long enough to reset the backoff.
    crasher = f"python -c 'import time, sys; time.sleep({lifetime}); sys.exit(3)' {marker}"
    config["backend"]["workers"] = ["worker", {"name": "crasher", "command": crasher}]
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    if lifetime:
        host.up()
    else:
        # Whether `up` still saw it run (then it passes) or saw it gone (then it fails
        # naming it) is a race; either way the supervisor, started with the host, restarts
        # it, as Docker restarts an unless-stopped container that failed.
        outcome = host.run("up")
        assert outcome.code == 0 or (outcome.code == 1 and "crasher" in outcome.stderr), str(outcome)
    state_file = host.dir / ".pixsim-host" / "supervisor.json"
    most_at_once = 0
    starts: list[float] = []
    backoffs: list[float] = []
    seen_restarts = 0
    last_exit: object = None
    deadline = time.monotonic() + 60
    was_running = False
    while time.monotonic() < deadline and seen_restarts < 4:
        copies = [pid for pid in processes_under(host.dir)
                  if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]
        most_at_once = max(most_at_once, len(copies))
        if copies and not was_running:
            starts.append(time.monotonic())
        was_running = bool(copies)
        try:
            entry = json.loads(state_file.read_text())["services"]["crasher"]
        except (OSError, ValueError, KeyError):
            entry = {}
        if entry.get("restarts", 0) > seen_restarts:
            seen_restarts = entry["restarts"]
            backoffs.append(float(entry["backoff_seconds"]))
            last_exit = entry.get("last_exit_code")
        time.sleep(0.05)
    gaps = [round(b - a, 2) for a, b in zip(starts, starts[1:], strict=False)]
    print(f"\nbackoffs recorded {backoffs}; seconds between starts {gaps}")
    assert seen_restarts >= 4, (seen_restarts, backoffs)
    assert most_at_once <= 1, f"{most_at_once} copies ran at once"
    assert most_at_once == 1 or not lifetime  # one that ends at once may never be seen running
    assert backoffs[:4] == [0.5, 1.0, 2.0, 4.0], backoffs
    assert last_exit == 3, last_exit  # the supervisor's own child: its exit code is known
    if lifetime:  # a process that lives 2 s is seen each time it runs
        assert len(gaps) >= 3 and gaps[-1] > gaps[0] + 1.5, gaps  # the delay grows
    status = host.status()["services"]
    assert status["crasher"]["restarts"]["restarts"] >= 4
    assert status["backend"]["state"] == "running" and "restarts" not in status["backend"]
    assert_ok(host.run("down"))
    time.sleep(3.0)
    assert processes_under(host.dir) == []


def test_the_supervisor_waits_while_another_command_holds_the_host(hosts: Hosts) -> None:
    from pixsim_host.hostdir import HostDir
    from pixsim_host.locking import host_lock

    host = hosts.init()
    host.up()
    old = recorded_pid(host, "backend")
    assert old
    with host_lock(HostDir(host.dir), wait=False, command="a test holding the host"):
        os.kill(old, signal.SIGKILL)
        time.sleep(4.0)  # many times the first backoff: it would have restarted by now
        assert recorded_pid(host, "backend") == old, "restarted while another command held the host"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and recorded_pid(host, "backend") == old:
        time.sleep(0.05)
    new = recorded_pid(host, "backend")
    assert new not in (None, old) and Path(f"/proc/{new}").exists()


def test_the_supervisor_ends_when_its_host_is_gone(hosts: Hosts) -> None:
    host = hosts.init()
    host.up()
    supervisor = supervisor_pid(host)
    assert supervisor
    config = host.dir / "pixsim-host.yaml"
    aside = host.dir.parent / f"{host.dir.name}.yaml"
    config.rename(aside)
    try:
        time.sleep(1.5)  # an editor replacing the file: the supervisor stays
        assert is_running(supervisor)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and is_running(supervisor):
            time.sleep(0.1)
        assert not is_running(supervisor), "the supervisor outlived its host's config"
    finally:
        aside.rename(config)
    host.up()  # starts a new one
    assert supervisor_pid(host) not in (None, supervisor)
