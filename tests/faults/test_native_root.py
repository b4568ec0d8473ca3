"""As root, each native host's PostgreSQL runs under a system account of its own that owns
that host's data (one host's PostgreSQL cannot read another's files), and a host works from
any directory, a 0700 one from mktemp -d included (its cluster then lives under
/var/lib/pixsim-host/postgres, recorded in the host, removed by ``down --volumes``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
import yaml
from native_support import Hosts, free_port, processes_under, require_native
from unit_helpers import run_cli

pytestmark = pytest.mark.native


def owner(path: Path) -> str:
    return pwd.getpwuid(path.stat().st_uid).pw_name


def account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_each_host_has_its_own_account_and_a_private_directory_works() -> None:
    if os.geteuid() != 0:
        pytest.skip("only root runs PostgreSQL under another account")
    require_native()
    from pixsim_host.runtime.native import EXTERNAL_DATA_ROOT, host_account_name

    hosts = Hosts()  # a searchable base: the first host keeps its data inside its directory
    private = Path(tempfile.mkdtemp())  # 0700, root's: no other account may enter
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    hidden = private / "host"
    try:
        first = hosts.init()
        made = run_cli("init", str(hidden), "--yes", "--name", "hidden-host", "--runtime", "native",
                       "--port", str(free_port()))
        assert made.returncode == 0, str(made)
        second = hosts.adopt(hidden)
        for host in (first, second):
            result = run_cli("up", "--dir", str(host.dir), "--timeout", "120")
            assert result.returncode == 0, str(result)
        first_data = first.dir / "data" / "postgres"
        second_data = EXTERNAL_DATA_ROOT / second.host_id
        assert (second.dir / ".pixsim-host" / "postgres-data-dir").read_text().strip() == str(second_data)
        assert not (second.dir / "data" / "postgres").exists()
        assert owner(first_data) == host_account_name(first.host_id)
        assert owner(second_data) == host_account_name(second.host_id)
        assert owner(first_data) != owner(second_data)
        for data in (first_data, second_data):
            assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE(EXTERNAL_DATA_ROOT.stat().st_mode) == 0o711
        status = yaml.safe_load(run_cli("status", "--json", "--dir", str(hidden)).stdout)
        assert status["services"]["db"]["health"] == "healthy"
        assert run_cli("down", "--dir", str(hidden)).returncode == 0
        gone = run_cli("down", "--volumes", "--yes", "--dir", str(hidden))
        assert gone.returncode == 0, str(gone)
        assert not second_data.exists()
        assert not account_exists(host_account_name(second.host_id))
    finally:
        with_processes = processes_under(private)
        for pid in with_processes:
            os.kill(pid, 9)
        leftovers = hosts.cleanup()
        shutil.rmtree(private, ignore_errors=True)
        from pixsim_host.runtime.native import remove_own_account

        for host in hosts.hosts:
            shutil.rmtree(EXTERNAL_DATA_ROOT / host.host_id, ignore_errors=True)
            remove_own_account(host.host_id)
    assert not leftovers and not with_processes
