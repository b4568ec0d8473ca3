"""The per-host lock: commands that change a host never interleave; the second one waits
(saying for whom) or, with ``--no-wait``, fails at once; a lock whose holder was killed
is no lock at all.

Holders are separate processes (the lock is an OS lock between processes), killed with
SIGKILL where a test needs a holder that dies without cleaning up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from unit_helpers import assert_clean_failure, clean_env, run_cli

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pixsim_host.hostdir import HostDir
    from pixsim_host.locking import host_lock
    root, command, log, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    with host_lock(HostDir(Path(root)), command=command):
        with open(log, "a") as f:
            f.write(f"start {command} {time.time()}\\n")
        print("locked", flush=True)
        time.sleep(seconds)
        with open(log, "a") as f:
            f.write(f"end {command} {time.time()}\\n")
""")

READER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pixsim_host.cli.common import locked_host
    with locked_host(Path(sys.argv[1]), no_wait=False, command="reader") as (host, config):
        print("description:", config.description, flush=True)
""")


@pytest.fixture
def host(tmp_path: Path) -> Path:
    root = tmp_path / "h"
    result = run_cli("init", str(root), "--yes", "--name", "locked", "--port", "18901")
    assert result.returncode == 0, str(result)
    return root


def start_holder(host: Path, command: str, log: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(host), command, str(log), str(seconds)],
                            env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked", proc.stderr.read() if proc.stderr else ""
    return proc


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent.sock"}


@pytest.mark.parametrize("command", [
    ["up"], ["down"], ["restart"], ["plugins", "enable", "romance"], ["plugins", "disable", "romance"],
    ["plugins", "install", "/nonexistent"], ["plugins", "remove", "romance"],
])
def test_no_wait_fails_at_once_naming_the_holder(host: Path, tmp_path: Path, command: list[str],
                                                 holders: list[subprocess.Popen[str]]) -> None:
    holder = start_holder(host, "plugins enable", tmp_path / "log", 60)
    holders.append(holder)
    started = time.monotonic()
    result = run_cli(*command, "--no-wait", "--dir", str(host), env=clean_env(**NO_ENGINE))
    assert time.monotonic() - started < 5
    assert_clean_failure(result)
    assert result.stderr.count("\n") == 1, str(result)
    assert f"`pixsim-host plugins enable` (pid {holder.pid}, running for" in result.stderr, str(result)
    assert "is changing the host" in result.stderr and "without --no-lock-wait" in result.stderr


def test_a_second_command_waits_for_the_first_and_they_never_interleave(
        host: Path, tmp_path: Path, holders: list[subprocess.Popen[str]]) -> None:
    log = tmp_path / "log"
    first = start_holder(host, "first", log, 1.5)
    holders.append(first)
    second = subprocess.Popen([sys.executable, "-c", HOLDER, str(host), "second", str(log), "0.2"],
                              env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    holders.append(second)
    _, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert first.wait(10) == 0
    assert f"Waiting for `pixsim-host first` (pid {first.pid}" in err, err
    assert "The other command finished" in err
    events = [line.split() for line in log.read_text().splitlines()]
    assert [(kind, who) for kind, who, _ in events] == [
        ("start", "first"), ("end", "first"), ("start", "second"), ("end", "second")]
    assert float(events[2][2]) >= float(events[1][2])


def test_a_killed_holder_leaves_no_lock_behind(host: Path, tmp_path: Path,
                                               holders: list[subprocess.Popen[str]]) -> None:
    holder = start_holder(host, "up", tmp_path / "log", 600)
    holders.append(holder)
    blocked = run_cli("down", "--no-wait", "--dir", str(host), env=clean_env(**NO_ENGINE))
    assert "is changing the host" in blocked.stderr, str(blocked)

    os.kill(holder.pid, signal.SIGKILL)  # no finally, no atexit: the kernel drops the lock
    holder.wait(10)
    assert (host / ".pixsim-host" / "lock.owner").exists(), "the dead holder's note is left behind"
    started = time.monotonic()
    result = run_cli("down", "--no-wait", "--dir", str(host), env=clean_env(**NO_ENGINE))
    assert time.monotonic() - started < 10
    # The lock was taken: the command got as far as the (absent) engine.
    assert_clean_failure(result)
    assert "is changing the host" not in result.stderr, str(result)
    assert "no Docker Engine answers" in result.stderr, str(result)

    from pixsim_host.hostdir import HostDir
    from pixsim_host.locking import host_lock

    with host_lock(HostDir(host), wait=False, command="test"):
        pass


def test_a_waiter_goes_on_when_the_holder_is_killed(host: Path, tmp_path: Path,
                                                     holders: list[subprocess.Popen[str]]) -> None:
    log = tmp_path / "log"
    holder = start_holder(host, "stuck", log, 600)
    holders.append(holder)
    waiter = subprocess.Popen([sys.executable, "-c", HOLDER, str(host), "waiter", str(log), "0"],
                              env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    holders.append(waiter)
    time.sleep(0.7)
    assert waiter.poll() is None, "the waiter waits while the holder lives"
    os.kill(holder.pid, signal.SIGKILL)
    killed_at = time.time()
    _, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    starts = [line.split() for line in log.read_text().splitlines() if line.startswith("start waiter")]
    assert starts and float(starts[0][2]) - killed_at < 5


def test_a_command_that_waited_reads_the_config_the_first_one_left(
        host: Path, tmp_path: Path, holders: list[subprocess.Popen[str]]) -> None:
    holder = start_holder(host, "editor", tmp_path / "log", 1.0)
    holders.append(holder)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(host)], env=clean_env(),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    holders.append(reader)
    time.sleep(0.3)
    # The holder's change, made while the reader waits for the lock.
    config_file = host / "pixsim-host.yaml"
    data = yaml.safe_load(config_file.read_text())
    data["description"] = "changed while you waited"
    config_file.write_text(yaml.safe_dump(data, sort_keys=False))
    out, err = reader.communicate(timeout=30)
    assert reader.returncode == 0, err
    assert "Waiting for `pixsim-host editor`" in err
    assert out.strip() == "description: changed while you waited"
