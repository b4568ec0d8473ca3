"""``up`` killed while it starts or replaces a service: the next ``up`` finishes (it stops what
the killed one left running without a pid file instead of starting a second one beside it, or
blaming "another program" for the host's own port), and ``status`` never calls a host whose
replacement did not finish verified.

Native hosts (fast); the Docker recreate is in test_interrupted_recreate_docker.py. The
commands run in a subprocess and stop at a named step with ``PIXSIM_HOST_FAULT_POINT``.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
from fault_helpers import error_lines
from native_support import Host, Hosts, assert_ok

pytestmark = pytest.mark.native

FAULT = "PIXSIM_HOST_FAULT_POINT"
WHEN = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"


def service_processes(host: Host, service: str) -> list[int]:
    """This host's processes of ``service``, found by what they run and where."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        argv = cmdline.split()
        runs = {
            "redis": cwd.startswith(str(host.dir / "data")) and "redis" in cmdline,
            # `python -m pixsim_reference_backend` (its worker has a subcommand after it).
            "backend": cwd == str(host.dir) and argv[-2:] == ["-m", "pixsim_reference_backend"],
            # The postmaster (its children have other command lines).
            "db": bool(argv) and argv[0].endswith("/postgres") and str(host.dir) in cmdline,
        }
        if runs[service]:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running: a zombie is dead already (its parent, the killed command, cannot reap it)."""
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("service", ["db", "redis", "backend"])
def test_a_second_up_takes_over_a_service_started_without_its_pid_file(
        hosts: Hosts, service: str) -> None:
    host = hosts.init()
    killed = host.run("up", env={FAULT: f"native.spawned.{service}"})
    assert killed.code == -signal.SIGKILL, str(killed)
    assert not host.pid_file(service).exists()
    [survivor] = service_processes(host, service)
    second = assert_ok(host.run("up", "--json"))
    assert second.json()["backend"]["server"]["server_id"] == host.host_id
    if service != "db":  # PostgreSQL's is adopted through its own lock file, then restarted
        assert (f"stopping the {service} an interrupted command left running without a pid file "
                f"(pid {survivor})") in second.stderr, second.stderr
    [running] = service_processes(host, service)  # one, never a second beside the first
    assert running != survivor and not alive(survivor)
    assert host.pid_file(service).exists()
    assert host.run("status").code == 0


def test_status_does_not_verify_a_replacement_up_did_not_finish(hosts: Hosts) -> None:
    host = hosts.init()
    host.up("--timeout", "120")
    # A change the backend must be restarted for, then an `up` killed as it starts the new one.
    assert_ok(host.run("plugins", "disable", "game_stealth", "--no-restart"))
    killed = host.run("up", env={FAULT: "native.spawned.backend"})
    assert killed.code == -signal.SIGKILL, str(killed)
    status = host.run("status", "--json")
    assert status.code == 4, str(status)
    problem = status.json()["backend"]["problem"]
    assert re.fullmatch(f"`pixsim-host up` \\(started {WHEN}\\) began replacing backend and did "
                        "not verify the host \\(it was interrupted or failed\\); run `pixsim-host "
                        "up` to finish", problem), problem
    assert status.json()["backend"]["verified"] is False
    journal = host.dir / ".pixsim-host" / "up-replace-in-progress.json"
    assert journal.stat().st_mode & 0o777 == 0o600
    host.up()
    assert not journal.exists()
    assert host.plugins_enabled()["game_stealth"] is False
    assert len(service_processes(host, "backend")) == 1
    assert host.run("status").code == 0


@pytest.mark.parametrize(("service", "how"), [("redis", "TERM"), ("backend", "INT2")])
def test_sigterm_or_two_ctrl_c_as_a_process_starts_wait_for_its_pid_file(
        hosts: Hosts, service: str, how: str) -> None:
    host = hosts.init()
    stopped = host.run("up", env={FAULT: f"native.spawned.{service}:{how}"})
    assert stopped.code == 130, str(stopped)
    assert error_lines(stopped.stderr) == [
        "Error: interrupted before the host was verified; run `pixsim-host up` again to finish"]
    [running] = service_processes(host, service)
    assert json.loads(host.pid_file(service).read_text())["pid"] == running  # recorded: not lost
    second = assert_ok(host.run("up", "--json")).json()
    assert second["actions"][service] == "unchanged"
    assert service_processes(host, service) == [running]
