"""A plugin change interrupted at any step (SIGKILL, SIGTERM, a second Ctrl-C) leaves the old
plugin set, the new one, or a journal the next command rolls back (or finishes) and names in
one line; nothing of plugins/ is lost on the way.

Each test runs the real command in a subprocess on a running native host and stops it at a
named step with ``PIXSIM_HOST_FAULT_POINT`` (the process signals itself there).
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
import yaml
from fault_helpers import error_lines
from native_support import FIXTURES, Host, Hosts, assert_ok

pytestmark = pytest.mark.native

FAULT = "PIXSIM_HOST_FAULT_POINT"
WHEN = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"


@pytest.fixture
def host(hosts: Hosts) -> Host:
    made = hosts.init()
    made.up("--timeout", "120")
    return made


def journal(host: Host) -> Path:
    return host.dir / ".pixsim-host" / "plugins-change-in-progress.json"


def plugins_config(host: Host) -> dict[str, list[str]]:
    data = yaml.safe_load((host.dir / "pixsim-host.yaml").read_text())
    return {key: list(value) for key, value in data["plugins"].items()}


def leftovers(host: Host) -> list[str]:
    """Staging and parked directories plugin changes leave in the state directory."""
    state = host.dir / ".pixsim-host"
    return sorted(p.name for p in state.iterdir() if p.name.startswith(("install-", "removed-")))


def rolled_back_line(command: str, *, then_up: bool) -> str:
    rest = "" if then_up else "; run `pixsim-host up` to apply that to a running backend"
    return (f"Warning: `pixsim-host {command}` \\(started {WHEN}\\) was interrupted before it "
            f"finished; it was rolled back: pixsim-host.yaml and plugins/ are as before it{re.escape(rest)}")


def test_sigkill_after_the_config_is_written_is_rolled_back_by_status_then_applied_by_up(
        host: Host) -> None:
    before = plugins_config(host)
    killed = host.run("plugins", "disable", "game_stealth",
                      env={FAULT: "plugins.config-written"})
    assert killed.code == -signal.SIGKILL, str(killed)
    assert "game_stealth" in plugins_config(host)["disabled"]  # the new set, not yet applied
    record = json.loads(journal(host).read_text())
    assert record["command"] == "plugins disable game_stealth" and record["phase"] == "applying"
    assert "game_stealth" in record["plugins_after"]["disabled"]  # what was being applied
    assert "game_stealth" not in yaml.safe_load(record["config_before"])["plugins"]["disabled"]
    assert journal(host).stat().st_mode & 0o777 == 0o600

    status = host.run("status", "--json")
    assert status.code == 4, str(status)  # not verified: the backend may run either set
    [line] = [x for x in status.stderr.splitlines() if x.startswith("Warning: `pixsim-host plugins")]
    assert re.fullmatch(rolled_back_line("plugins disable game_stealth", then_up=False), line), line
    document = status.json()
    assert document["backend"]["verified"] is False
    assert document["backend"]["problem"] == line.removeprefix("Warning: ")
    assert not journal(host).exists()
    assert plugins_config(host) == before
    rendered = host.run("render", "--check")
    assert rendered.code == 0, str(rendered)  # the rendered files agree with the config

    host.up()
    assert host.plugins_enabled()["game_stealth"] is True


def test_sigkill_before_the_restart_of_an_install_is_undone_by_the_next_up(host: Host) -> None:
    killed = host.run("plugins", "install", FIXTURES / "hello_external",
                      env={FAULT: "plugins.restarting"})
    assert killed.code == -signal.SIGKILL, str(killed)
    assert (host.dir / "plugins" / "hello_external").is_dir()
    up = assert_ok(host.run("up", "--json"))
    [line] = [x for x in up.stderr.splitlines() if x.startswith("Warning: `pixsim-host plugins")]
    command = f"plugins install {FIXTURES / 'hello_external'}"
    assert re.fullmatch(rolled_back_line(command, then_up=True), line), line
    assert not (host.dir / "plugins" / "hello_external").exists()
    assert leftovers(host) == [] and not journal(host).exists()
    assert "hello_external" not in up.json()["plugins_enabled"]
    assert "hello_external" not in host.plugins_enabled()


def test_sigkill_between_journal_and_move_keeps_the_package(host: Host) -> None:
    assert_ok(host.run("plugins", "install", FIXTURES / "hello_external"))
    killed = host.run("plugins", "remove", "hello_external", env={FAULT: "plugins.parking"})
    assert killed.code == -signal.SIGKILL, str(killed)
    listed = assert_ok(host.run("plugins", "list", "--json"))
    assert re.search(rolled_back_line("plugins remove hello_external", then_up=False),
                     listed.stderr), listed.stderr
    assert (host.dir / "plugins" / "hello_external" / "backend").is_dir()
    assert leftovers(host) == [] and not journal(host).exists()
    assert host.plugins_enabled()["hello_external"] is True


def test_sigkill_of_a_remove_after_it_was_verified_is_finished(host: Host) -> None:
    assert_ok(host.run("plugins", "install", FIXTURES / "hello_external"))
    killed = host.run("plugins", "remove", "hello_external", env={FAULT: "plugins.verified"})
    assert killed.code == -signal.SIGKILL, str(killed)
    assert not (host.dir / "plugins" / "hello_external").exists()
    assert leftovers(host)  # the parked folder waits for the journal's owner
    status = host.run("status", "--json")
    assert status.code == 0, str(status)  # finished: nothing stops it counting as verified
    assert re.search(f"Warning: `pixsim-host plugins remove hello_external` \\(started {WHEN}\\) "
                     "was interrupted after its change was verified; it was finished \\(what it "
                     "removed is deleted\\)", status.stderr), status.stderr
    assert leftovers(host) == [] and not journal(host).exists()
    assert "hello_external" not in host.plugins_enabled()


def test_sigterm_during_the_restart_rolls_back_and_verifies(host: Host) -> None:
    before = plugins_config(host)
    stopped = host.run("plugins", "disable", "game_stealth",
                       env={FAULT: "plugins.restarting:TERM"})
    assert stopped.code == 130, str(stopped)
    assert error_lines(stopped.stderr) == [
        "Error: interrupted: the plugin change was rolled back and the host verified with its "
        "previous plugin set (pixsim-host.yaml and plugins/ are as before it)"]
    assert plugins_config(host) == before and not journal(host).exists()
    assert host.plugins_enabled()["game_stealth"] is True
    assert assert_ok(host.run("status")).code == 0


def test_a_second_ctrl_c_during_the_rollback_leaves_the_old_files_and_up_finishes(
        host: Host) -> None:
    before = plugins_config(host)
    stopped = host.run("plugins", "disable", "game_stealth",
                       env={FAULT: "plugins.restarting:INT,plugins.rolling-back:INT"})
    assert stopped.code == 130, str(stopped)
    assert error_lines(stopped.stderr) == [
        "Error: interrupted, and interrupted again while the previous plugin set was being "
        "restarted: the change was undone on disk (pixsim-host.yaml and plugins/ are as before it) "
        "but the backend may still run the new set; run `pixsim-host up` to apply the previous one "
        "and verify it"]
    assert plugins_config(host) == before
    assert json.loads(journal(host).read_text())["phase"] == "rolled-back"
    up = assert_ok(host.run("up"))
    assert re.search(rolled_back_line("plugins disable game_stealth", then_up=True), up.stderr)
    assert not journal(host).exists()
    assert host.plugins_enabled()["game_stealth"] is True


def test_sigkill_while_a_package_is_placed_leaves_no_half_install(host: Host) -> None:
    killed = host.run("plugins", "install", FIXTURES / "hello_external",
                      env={FAULT: "plugins.installing"})
    assert killed.code == -signal.SIGKILL, str(killed)
    assert not (host.dir / "plugins" / "hello_external").exists()  # renamed in whole, or not
    assert leftovers(host)  # its staging directory
    again = assert_ok(host.run("plugins", "install", FIXTURES / "hello_external"))
    assert re.search(rolled_back_line(f"plugins install {FIXTURES / 'hello_external'}",
                                      then_up=False), again.stderr), again.stderr
    assert leftovers(host) == [] and not journal(host).exists()
    assert host.plugins_enabled()["hello_external"] is True
