"""``up`` on a host whose restore did not finish refuses to call it verified and says how to
finish (before anything is started); the journal is private. The interruptions themselves
are in test_interrupted_restore.py (native)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from fault_helpers import error_lines
from native_support import Hosts
from unit_helpers import MakeHost, run_cli

from pixsim_host.hostdir import HostDir
from pixsim_host.restore_journal import release, write_journal


def test_up_refuses_an_unfinished_restore_and_says_how_to_put_it_back(make_host: MakeHost,
                                                                      tmp_path: Path) -> None:
    host = make_host()
    safety = host / "backups" / "safety-before-restore-20260101T000000Z.tar.gz"
    bundle = tmp_path / "moved.tar.gz"
    write_journal(HostDir(host), "over-existing", safety, bundle)
    journal = host / ".pixsim-host" / "restore-in-progress.json"
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    release(HostDir(host))  # as after the restoring process ended
    result = run_cli("up", "--dir", str(host))
    assert result.returncode == 1, str(result)
    [error] = error_lines(result.stderr)
    started = json.loads(journal.read_text())["started_at"]
    assert error == (
        f"Error: a restore of this host did not finish (started {started}), so its data may be "
        f"incomplete and it is not verified; the data from before the restore is in the safety "
        f"backup {safety}: put it back with `pixsim-host restore {safety} --dir {host} --yes`; or "
        f"finish the restore with `pixsim-host restore {bundle} --dir {host} --yes`")


def test_a_half_made_host_is_not_taken_for_a_complete_one(make_host: MakeHost, tmp_path: Path) -> None:
    host = make_host()
    write_journal(HostDir(host), "new", None, tmp_path / "b.tar.gz")
    release(HostDir(host))
    result = run_cli("up", "--dir", str(host))
    assert result.returncode == 1, str(result)
    [error] = error_lines(result.stderr)
    assert error.startswith(f"Error: {host} holds a restore that did not finish (started ")
    assert f"`pixsim-host down --volumes --yes --dir {host}`" in error


def test_a_damaged_journal_still_stops_up(make_host: MakeHost) -> None:
    host = make_host()
    journal = host / ".pixsim-host" / "restore-in-progress.json"
    journal.write_bytes(b"\xff not json")
    result = run_cli("up", "--dir", str(host))
    assert result.returncode == 1, str(result)
    [error] = error_lines(result.stderr)
    assert error.startswith("Error: the restore journal ") and "is not UTF-8 text" in error


def test_status_never_verifies_a_host_whose_restore_did_not_finish(hosts: Hosts) -> None:
    host = hosts.init()
    host.up("--timeout", "120")
    safety = host.dir / "backups" / "safety-before-restore-20260101T000000Z.tar.gz"
    write_journal(HostDir(host.dir), "over-existing", safety, None)
    release(HostDir(host.dir))
    status = host.run("status", "--json")
    assert status.code == 4, str(status)  # the backend answers, on data that may be half replaced
    backend = status.json()["backend"]
    assert backend["verified"] is False
    started = json.loads((host.dir / ".pixsim-host" / "restore-in-progress.json").read_text())[
        "started_at"]
    assert backend["problem"] == (
        f"a restore of this host did not finish (started {started}), so its data may be incomplete "
        f"and it is not verified; the data from before the restore is in the safety backup "
        f"{safety}: put it back with `pixsim-host restore {safety} --dir {host.dir} --yes`")
