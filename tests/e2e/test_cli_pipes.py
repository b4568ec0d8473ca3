"""The CLI through pipes and terminals, on a real Docker engine.

* A reader that goes away (``pixsim-host down 2>&1 | head -1``, or a pipe closed before the
  command writes) never stops a command that changes a host halfway: ``down`` still stops
  every service, ``up`` still brings the host up verified, and neither prints a traceback.
* The documents of the commands that need a running host (``up``, ``status``, ``restart``,
  ``plugins ...``, ``backup``, ``clone``, ``restore``, ``destroy``) are valid against the
  schemas shipped in the package (tests/cli checks the others).
* The screens people read (``up``'s summary, ``status``) fit an 80-column terminal: the
  command runs on a pseudo-terminal of 80 columns and no line is longer.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from e2e_helpers import (
    CLI,
    IMAGES,
    Host,
    assert_ok,
    cli,
    cli_env,
    destroy,
    host_maker,
    project_containers,
    registry_home,  # noqa: F401 (an autouse fixture: this module's own host registry)
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from cli_helpers import check_schema  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def make_host(docker_client: docker.DockerClient, require_images: Callable[..., None],
              tmp_path: Path) -> Iterator[Callable[..., Host]]:
    yield from host_maker(docker_client, require_images, tmp_path, Host)


def _piped(host: Host, *args: str, close_at_once: bool) -> tuple[int, bytes]:
    """Run a command with stdout and stderr into one pipe; its reader is `head -1`, or
    nobody at all (the pipe closed before the command writes). Its exit code, and what the
    reader got."""
    command = subprocess.Popen([*CLI, *args, "--dir", str(host.dir)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=cli_env())
    assert command.stdout is not None
    if close_at_once:
        command.stdout.close()
        return command.wait(timeout=240), b""
    head = subprocess.Popen(["head", "-1"], stdin=command.stdout, stdout=subprocess.PIPE)
    command.stdout.close()  # only head reads it now: when head exits, the pipe is closed
    first, _ = head.communicate(timeout=240)
    return command.wait(timeout=240), first


def test_down_through_head_stops_every_service(docker_client: docker.DockerClient,
                                               make_host: Callable[..., Host]) -> None:
    host = make_host()
    host.up_ok()
    code, first = _piped(host, "down", close_at_once=False)
    assert code == 0, first
    assert b"Traceback" not in first
    assert project_containers(docker_client, host) == [], "down stopped halfway"
    status = host.run("status", "--json")
    assert status.code == 4 and status.json()["running"] is False, str(status)


def test_up_and_down_with_the_pipe_closed_before_they_write(docker_client: docker.DockerClient,
                                                            make_host: Callable[..., Host]) -> None:
    host = make_host()
    code, _ = _piped(host, "up", close_at_once=True)
    assert code == 0
    status = assert_ok(host.run("status", "--json")).json()
    assert status["health"] == "healthy"
    code, _ = _piped(host, "down", close_at_once=True)
    assert code == 0
    assert project_containers(docker_client, host) == []


def _on_a_terminal(host: Host, *args: str, columns: int = 80) -> tuple[int, str]:
    """Run a command with a pseudo-terminal of ``columns`` columns as stdout and stderr."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    environment = cli_env()
    environment.pop("COLUMNS", None)
    environment["TERM"] = "xterm"
    try:
        command = subprocess.Popen([*CLI, *args, "--dir", str(host.dir)], stdin=subprocess.DEVNULL,
                                   stdout=slave, stderr=slave, env=environment)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = command.wait(timeout=240)
    finally:
        os.close(master)
    return code, ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def _long_lines(screen: str, columns: int = 80) -> list[str]:
    lines = [line for chunk in screen.replace("\r\n", "\n").split("\n") for line in chunk.split("\r")]
    return [line for line in lines if len(line.rstrip()) > columns]


def test_up_summary_and_status_fit_80_columns(make_host: Callable[..., Host]) -> None:
    host = make_host()
    code, screen = _on_a_terminal(host, "up")
    assert code == 0, screen
    assert "is up and verified" in screen and _long_lines(screen) == [], screen
    code, screen = _on_a_terminal(host, "status")
    assert code == 0, screen
    assert "SERVICE" in screen and "healthy" in screen, screen
    assert _long_lines(screen) == [], screen


def test_documents_of_a_running_host(docker_client: docker.DockerClient,
                                     require_images: Callable[..., None], tmp_path: Path) -> None:
    require_images(*IMAGES)
    made: list[Host] = []
    try:
        host = Host.init(tmp_path / "orig")
        made.append(host)
        up = host.up_ok()
        check_schema("up", up)
        assert up["health"] == "healthy" and up["services"]["backend"]["health"] == "healthy"
        status = assert_ok(host.run("status", "--json")).json()
        check_schema("status", status)
        # up and status say the same about the backend
        assert status["services"]["backend"]["health"] == up["services"]["backend"]["health"]
        assert status["backend"]["health"] == up["backend"]["health"] == "healthy"
        check_schema("restart", assert_ok(host.run("restart", "backend", "--json")).json())
        check_schema("migrate", assert_ok(host.run("migrate", "--json")).json())
        check_schema("logs", assert_ok(host.run("logs", "--tail", "5", "--json")).json())
        check_schema("plugins-list", assert_ok(host.run("plugins", "list", "--json")).json())
        shown = assert_ok(host.run("plugins", "show", "romance", "--json")).json()
        check_schema("plugins-show", shown)
        installed = assert_ok(host.run("plugins", "install", str(FIXTURES / "hello_external"),
                                       "--json")).json()
        check_schema("plugins-install", installed)
        assert installed["applied"] and "hello_external" in installed["plugins_enabled"]
        check_schema("plugins-disable", assert_ok(host.run("plugins", "disable", "hello_external",
                                                           "--json")).json())
        check_schema("plugins-enable", assert_ok(host.run("plugins", "enable", "hello_external",
                                                          "--json")).json())
        check_schema("plugins-remove", assert_ok(host.run("plugins", "remove", "hello_external",
                                                          "--json")).json())
        bundle = tmp_path / "orig.tar.gz"
        backup = assert_ok(host.run("backup", "-o", str(bundle), "--json")).json()
        check_schema("backup", backup)
        clone = assert_ok(cli("clone", bundle, "--dir", tmp_path / "copy", "--json")).json()
        made.append(Host.load(tmp_path / "copy"))
        check_schema("clone", clone)
        assert clone["origin"]["host_id"] == host.host_id != clone["host_id"]
        destroyed = assert_ok(host.run("destroy", "--yes", "--json")).json()
        made.remove(host)
        check_schema("destroy", destroyed)
        assert project_containers(docker_client, host) == [] and not host.dir.exists()
        restored = assert_ok(cli("restore", bundle, "--dir", tmp_path / "back", "--json")).json()
        made.append(Host.load(tmp_path / "back"))
        check_schema("restore", restored)
        assert restored["host_id"] == host.host_id and restored["origin"] is None
        down = assert_ok(made[-1].run("down", "--json")).json()
        check_schema("down", down)
    finally:
        errors: list[BaseException] = []
        for each in made:
            try:
                destroy(docker_client, each)
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("up", "--help"), ("hosts", "list"),
                                  ("doctor",)], ids=" ".join)
def test_a_reader_that_left_is_no_traceback(args: tuple[str, ...], tmp_path: Path) -> None:
    """No engine needed: commands that only print end quietly when nobody reads them."""
    command = subprocess.Popen([*CLI, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=cli_env(), cwd=tmp_path)
    assert command.stdout is not None and command.stderr is not None
    command.stdout.close()
    err = command.stderr.read().decode()
    code = command.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert code in (0, 1), err  # doctor fails its engine check here, as a result, not a crash
