"""`boot install|remove`: the systemd unit that brings a host up at boot.

The unit is checked by the real ``systemd-analyze verify`` (no running systemd needed: it
verifies a file), including for a host directory whose path needs systemd's quoting and
escaping. Without systemd-analyze these tests skip, unless PIXSIM_HOST_E2E=required.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from unit_helpers import run_cli

from pixsim_host import boot
from pixsim_host.config import load_config
from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir


def require_systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        reason = "systemd-analyze is not installed (Debian: apt-get install systemd)"
        if os.environ.get("PIXSIM_HOST_E2E", "").strip().lower() == "required":
            pytest.fail(f"{reason}, and PIXSIM_HOST_E2E=required", pytrace=False)
        pytest.skip(reason)
    return found


def check_schema(name: str, document: Any) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
    from cli_helpers import check_schema as check

    check(name, document)


def make_host(root: Path, name: str, *args: str) -> Path:
    made = run_cli("init", str(root), "--yes", "--name", name, *args)
    assert made.returncode == 0, str(made)
    return root


def exec_words(line: str) -> list[str]:
    """An Exec line's words as systemd reads them (its quoting is shell-like here)."""
    return [word.replace("%%", "%").replace("$$", "$") for word in shlex.split(line.split("=", 1)[1])]


@pytest.fixture
def user_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "config-home"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(where))
    return where / "systemd" / "user"


def test_the_unit_runs_up_and_down_for_its_directory_and_verifies(tmp_path: Path) -> None:
    analyze = require_systemd_analyze()
    root = make_host(tmp_path / 'odd dir 100% $HOME "q"', "boot-odd", "--runtime", "native")
    host = HostDir(root.resolve())
    config = load_config(host.config_file)
    for user in (False, True):
        text = boot.render_unit(host, config, user=user)
        lines = dict(line.split("=", 1) for line in text.splitlines()
                     if "=" in line and not line.startswith("#"))
        assert lines["Type"] == "oneshot" and lines["RemainAfterExit"] == "yes"
        assert "network-online.target" in lines["After"]
        assert lines["WantedBy"] == ("default.target" if user else "multi-user.target")
        start = exec_words("ExecStart=" + lines["ExecStart"])
        stop = exec_words("ExecStop=" + lines["ExecStop"])
        assert start[-3:] == ["up", "--dir", str(host.root)], start
        assert stop[-3:] == ["down", "--dir", str(host.root)], stop
        assert Path(start[0]).is_file() and os.access(start[0], os.X_OK)
        # No secret of the host in the unit.
        secrets = [line.split("=", 1)[1] for line in (root / ".env").read_text().splitlines() if "=" in line]
        assert not [value for value in secrets if len(value) > 8 and value in text]
        unit = tmp_path / boot.unit_name(host)
        unit.write_text(text)
        env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)} if user else None
        argv = [analyze, *(["--user"] if user else []), "verify", str(unit)]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done


def test_the_unit_is_named_after_the_directory(tmp_path: Path) -> None:
    one = HostDir((tmp_path / "a" / "my-host").resolve())
    two = HostDir((tmp_path / "b" / "my-host").resolve())
    assert boot.unit_name(one).startswith("pixsim-host-my-host-")
    assert boot.unit_name(one).endswith(".service")
    assert boot.unit_name(one) != boot.unit_name(two)
    assert boot.unit_name(one) == boot.unit_name(HostDir((tmp_path / "a" / "my-host").resolve()))


def test_install_print_writes_nothing_and_install_remove_round_trip(tmp_path: Path,
                                                                    user_units: Path) -> None:
    require_systemd_analyze()
    root = make_host(tmp_path / "boot-host", "boot-roundtrip", "--runtime", "native")
    printed = run_cli("boot", "install", "--dir", str(root), "--user", "--print", "--json")
    assert printed.returncode == 0, str(printed)
    document = json.loads(printed.stdout)
    check_schema("boot-install", document)
    assert document["written"] is False and document["verified"] is True
    assert "[Service]" in document["text"] and not user_units.exists()

    installed = run_cli("boot", "install", "--dir", str(root), "--user", "--json")
    assert installed.returncode == 0, str(installed)
    document = json.loads(installed.stdout)
    check_schema("boot-install", document)
    unit = Path(document["path"])
    assert unit.parent == user_units and unit.is_file()
    assert document["scope"] == "user" and document["verified"] is True
    assert any("loginctl enable-linger" in step for step in document["next_steps"])
    if not boot.systemd_running():
        # Never a failure for a machine without systemd as PID 1: it says what to run.
        assert any("systemctl --user enable" in step for step in document["next_steps"])
    assert any("supervisor" in note for note in document["notes"])
    assert unit.read_text() == boot.render_unit(HostDir(root.resolve()),
                                                load_config(root / "pixsim-host.yaml"), user=True)

    human = run_cli("boot", "remove", "--dir", str(root), "--user")
    assert human.returncode == 0, str(human)
    assert "Removed" in human.stdout and not unit.exists()
    again = run_cli("boot", "remove", "--dir", str(root), "--user", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["removed"] is False
    check_schema("boot-remove", json.loads(again.stdout))


def test_a_docker_host_gets_the_same_unit_and_a_note_about_the_engine(tmp_path: Path,
                                                                     user_units: Path) -> None:
    require_systemd_analyze()
    root = make_host(tmp_path / "docker-host", "boot-docker", "--runtime", "docker")
    installed = run_cli("boot", "install", "--dir", str(root), "--user", "--json")
    assert installed.returncode == 0, str(installed)
    document = json.loads(installed.stdout)
    assert any("Docker engine" in note for note in document["notes"]), document["notes"]
    assert "docker.service" in Path(document["path"]).read_text()


def test_a_unit_systemd_rejects_is_never_written(tmp_path: Path, user_units: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    require_systemd_analyze()
    root = make_host(tmp_path / "bad-host", "boot-bad", "--runtime", "native")
    # An entry point that does not exist: systemd-analyze says the command is not executable.
    monkeypatch.setattr(boot, "entry_point", lambda: [str(tmp_path / "no-such-pixsim-host")])
    with pytest.raises(HostError, match="systemd-analyze verify rejects the unit"):
        boot.install(HostDir(root.resolve()), load_config(root / "pixsim-host.yaml"), user=True, write=True)
    assert not user_units.exists()
    failed = run_cli("boot", "install", "--dir", str(root), "--user")
    assert failed.returncode == 1 and failed.stderr.startswith("Error: systemd-analyze verify rejects")
    assert failed.stderr.count("\n") == 1, failed.stderr


def test_root_gets_a_system_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_systemd_analyze()
    if os.geteuid() != 0:
        pytest.skip("a system unit is for root; other users always get a user unit")
    system_dir = tmp_path / "etc-systemd-system"  # not this machine's /etc/systemd/system
    monkeypatch.setattr(boot, "SYSTEM_UNIT_DIR", system_dir)
    root = make_host(tmp_path / "system-host", "boot-system", "--runtime", "native")
    installed = run_cli("boot", "install", "--dir", str(root), "--json")
    assert installed.returncode == 0, str(installed)
    document = json.loads(installed.stdout)
    assert document["scope"] == "system" and Path(document["path"]).parent == system_dir
    assert "WantedBy=multi-user.target" in Path(document["path"]).read_text()
    assert not any("enable-linger" in step for step in document["next_steps"])
    removed = run_cli("boot", "remove", "--dir", str(root), "--json")
    assert json.loads(removed.stdout)["removed"] is True and not any(system_dir.iterdir())
