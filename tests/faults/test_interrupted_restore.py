"""A restore interrupted at any moment leaves the old state, the new one, or a state the next
command detects and can undo; "nothing is lost" is said only after the old state was put back
and verified, and the safety backup is named whenever there is one.

Interruptions in this process are injected where the data is being replaced (a Ctrl-C, then
a second one during the roll-back); a SIGKILL is sent to a real ``restore`` process once it
has begun replacing the data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import error_lines
from native_support import Host, Hosts
from unit_helpers import clean_env, run_cli

pytestmark = pytest.mark.native



@pytest.fixture
def host_with_bundle(hosts: Hosts, tmp_path: Path) -> tuple[Host, Path]:
    """A running host whose data says "now", and a bundle of it when it said "then"."""
    host = hosts.init()
    assert run_cli("up", "--dir", str(host.dir), "--timeout", "120").returncode == 0
    host.put_kv("moment", "then")
    bundle = tmp_path / "then.tar.gz"
    assert run_cli("backup", "--dir", str(host.dir), "-o", str(bundle)).returncode == 0
    host.put_kv("moment", "now")
    return host, bundle


def journal(host: Host) -> Path:
    return host.dir / ".pixsim-host" / "restore-in-progress.json"


def safety_backups(host: Host) -> list[Path]:
    return sorted((host.dir / "backups").glob("safety-before-restore-*.tar.gz"))



def interrupt_load(monkeypatch: pytest.MonkeyPatch, times: int) -> None:
    """The next ``times`` data loads are interrupted by Ctrl-C (after wiping has happened)."""
    from pixsim_host import backup

    real = backup._load_into
    calls = {"n": 0}

    def load(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] <= times:
            raise KeyboardInterrupt
        real(*args, **kwargs)

    monkeypatch.setattr(backup, "_load_into", load)


def test_ctrl_c_while_replacing_puts_the_old_state_back_and_says_so(
        host_with_bundle: tuple[Host, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    host, bundle = host_with_bundle
    interrupt_load(monkeypatch, times=1)
    result = run_cli("restore", str(bundle), "--dir", str(host.dir), "--yes")
    assert result.returncode == 130, str(result)
    [safety] = safety_backups(host)
    assert error_lines(result.stderr) == [
        f"Error: interrupted: the host was put back as it was and verified, nothing is lost "
        f"(safety backup {safety})"], str(result)
    assert not journal(host).exists()
    assert host.get_kv("moment") == "now"


def test_a_second_ctrl_c_during_the_roll_back_is_detected_and_undone(
        host_with_bundle: tuple[Host, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    host, bundle = host_with_bundle
    interrupt_load(monkeypatch, times=2)
    result = run_cli("restore", str(bundle), "--dir", str(host.dir), "--yes")
    monkeypatch.undo()
    assert result.returncode == 130, str(result)
    [safety] = safety_backups(host)
    [error] = error_lines(result.stderr)
    assert error == (f"Error: the restore was interrupted and putting the previous state back did not "
                     f"finish (it was interrupted too); the data from before is in the safety backup "
                     f"{safety}: put it back with `pixsim-host restore {safety} --dir {host.dir} --yes`")
    assert "nothing is lost" not in result.output.lower()
    assert json.loads(journal(host).read_text())["safety_backup"] == str(safety)
    # up does not call the half-replaced host verified, and says how to finish.
    refused = run_cli("up", "--dir", str(host.dir), "--timeout", "60")
    assert refused.returncode == 1, str(refused)
    [error] = error_lines(refused.stderr)
    assert error.startswith("Error: a restore of this host did not finish (started ")
    assert f"put it back with `pixsim-host restore {safety} --dir {host.dir} --yes`" in error
    assert f"finish the restore with `pixsim-host restore {bundle.resolve()} --dir {host.dir} --yes`" in error
    # Doing what it says puts the old state back; no second safety backup of the broken state.
    back = run_cli("restore", str(safety), "--dir", str(host.dir), "--yes")
    assert back.returncode == 0, str(back)
    assert f"its safety backup {safety} stays the way back" in back.stderr
    assert safety_backups(host) == [safety]
    assert not journal(host).exists()
    assert host.get_kv("moment") == "now"
    assert run_cli("up", "--dir", str(host.dir), "--timeout", "60").returncode == 0


def test_sigkill_while_replacing_is_detected_and_undone(host_with_bundle: tuple[Host, Path]) -> None:
    host, bundle = host_with_bundle
    proc = subprocess.Popen([sys.executable, "-m", "pixsim_host", "restore", str(bundle), "--dir",
                             str(host.dir), "--yes"], env=clean_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not journal(host).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert journal(host).exists(), "the restore never began replacing the data"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    [safety] = safety_backups(host)
    refused = run_cli("up", "--dir", str(host.dir), "--timeout", "60")
    assert refused.returncode == 1, str(refused)
    assert f"the safety backup {safety}" in refused.stderr
    back = run_cli("restore", str(safety), "--dir", str(host.dir), "--yes")
    assert back.returncode == 0, str(back)
    assert host.get_kv("moment") == "now"
    assert not journal(host).exists()


def test_sigterm_while_replacing_puts_the_old_state_back(host_with_bundle: tuple[Host, Path]) -> None:
    host, bundle = host_with_bundle
    proc = subprocess.Popen([sys.executable, "-m", "pixsim_host", "restore", str(bundle), "--dir",
                             str(host.dir), "--yes"], env=clean_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not journal(host).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert journal(host).exists(), "the restore never began replacing the data"
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stderr
    [safety] = safety_backups(host)
    assert error_lines(stderr) == [f"Error: interrupted: the host was put back as it was and verified, "
                                   f"nothing is lost (safety backup {safety})"], stderr
    assert not journal(host).exists()
    assert host.get_kv("moment") == "now"


def test_sigkill_during_a_clone_leaves_a_host_that_says_it_is_half_made(
        hosts: Hosts, host_with_bundle: tuple[Host, Path]) -> None:
    from native_support import processes_under

    _, bundle = host_with_bundle
    target = hosts.base / "half-made"
    proc = subprocess.Popen([sys.executable, "-m", "pixsim_host", "clone", str(bundle), "--dir",
                             str(target)], env=clean_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = target / ".pixsim-host" / "run" / "db.pid"
    deadline = time.monotonic() + 120
    while not pid_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pid_file.exists(), "the clone never started its database"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    hosts.adopt(target)
    refused = run_cli("up", "--dir", str(target), "--timeout", "60")
    assert refused.returncode == 1, str(refused)
    [error] = error_lines(refused.stderr)
    assert error.startswith(f"Error: {target} holds a restore that did not finish (started "), error
    removed = run_cli("down", "--volumes", "--yes", "--dir", str(target))
    assert removed.returncode == 0, str(removed)
    assert processes_under(target) == []
    assert not (target / "data").exists()
