"""``config set`` interrupted at any step never leaves the config and its rendered files
disagreeing for good: a SIGKILL leaves a config newer than its files, which the next command
renders; files written by a killed command are its own, never taken for hand edits; Ctrl-C
and SIGTERM wait until the change is whole, and the message says it was made.

The commands run in a subprocess on a native host that is not started (nothing to wait for)
and stop at a named step with ``PIXSIM_HOST_FAULT_POINT``.
"""

from __future__ import annotations

import signal

import pytest
from fault_helpers import error_lines
from native_support import Host, Hosts, assert_ok, cli, free_port

pytestmark = pytest.mark.native

FAULT = "PIXSIM_HOST_FAULT_POINT"


@pytest.fixture
def host(hosts: Hosts) -> Host:
    return hosts.init()


def client_line(host: Host) -> str:
    [line] = [x for x in (host.dir / "frontend.env").read_text().splitlines()
              if x.startswith("VITE_BACKEND_URL=")]
    return line


def assert_rendered_from_config(host: Host) -> None:
    check = host.run("render", "--check")
    assert check.code == 0, str(check)


def test_sigkill_after_the_config_is_saved_is_rendered_by_the_next_command(host: Host) -> None:
    port = free_port()
    killed = host.run("config", "set", "backend.port", str(port), env={FAULT: "config.saved"})
    assert killed.code == -signal.SIGKILL, str(killed)
    assert host.run("config", "get", "backend.port").stdout.strip() == str(port)
    assert f":{port}" not in client_line(host)  # the config is newer than its files
    status = host.run("status")
    assert status.code == 4, str(status)  # not running, and it could tell
    assert client_line(host) == f"VITE_BACKEND_URL='http://127.0.0.1:{port}'"
    assert_rendered_from_config(host)


def test_files_a_killed_command_wrote_are_its_own_not_hand_edits(host: Host) -> None:
    original = (host.dir / "pixsim-host.yaml").read_bytes()
    old_line = client_line(host)
    compose = (host.dir / "compose.yaml").read_text()
    killed = host.run("config", "set", "backend.port", str(free_port()),
                      env={FAULT: "render.file-written"})
    assert killed.code == -signal.SIGKILL, str(killed)
    assert (host.dir / "compose.yaml").read_text() != compose  # the first file was written
    # The owner puts the config back by hand: the half-written files follow it.
    (host.dir / "pixsim-host.yaml").write_bytes(original)
    assert host.run("status").code == 4
    assert (host.dir / "compose.yaml").read_text() == compose
    assert client_line(host) == old_line
    assert_rendered_from_config(host)


@pytest.mark.parametrize("how", ["TERM", "INT2"])
def test_sigterm_or_two_ctrl_c_wait_until_the_change_is_whole(host: Host, how: str) -> None:
    port = free_port()
    stopped = host.run("config", "set", "backend.port", str(port),
                       env={FAULT: f"config.saved:{how}"})
    assert stopped.code == 130, str(stopped)
    assert error_lines(stopped.stderr) == [
        "Error: interrupted after the change was made: backend.port is set and the generated "
        "files are rendered; run `pixsim-host up` to apply it to a running host"]
    assert client_line(host) == f"VITE_BACKEND_URL='http://127.0.0.1:{port}'"
    assert_rendered_from_config(host)
    registered = assert_ok(cli("hosts", "list", "--json")).json()["hosts"]
    assert [entry["port"] for entry in registered if entry["host_id"] == host.host_id] == [port]


def test_config_set_first_rolls_back_a_plugin_change_a_killed_command_left(host: Host) -> None:
    from pixsim_host.config import load_config
    from pixsim_host.hostdir import HostDir
    from pixsim_host.journal import release
    from pixsim_host.plugin_change import JOURNAL, PluginChangeRun

    config_file = host.dir / "pixsim-host.yaml"
    run = PluginChangeRun(HostDir(host.dir), load_config(config_file), "plugins disable romance")
    run.begin()
    release(HostDir(host.dir), JOURNAL)  # as when its process was killed
    config_file.write_text(config_file.read_text().replace("disabled: []", "disabled: [romance]"))
    assert "romance" in config_file.read_text()
    port = free_port()
    changed = assert_ok(host.run("config", "set", "backend.port", str(port)))
    assert "Warning: `pixsim-host plugins disable romance` (started " in changed.stderr
    assert "it was rolled back: pixsim-host.yaml and plugins/ are as before it" in changed.stderr
    assert "romance" not in config_file.read_text()  # the set was made on the config from before
    assert host.run("config", "get", "backend.port").stdout.strip() == str(port)
    assert_rendered_from_config(host)
