"""A full disk is one line naming the path, and the old file stays as it was.

The disk is really full: a small tmpfs (mounting one needs root; elsewhere these tests are
skipped) filled to the last block. The pid-file case of ``up`` is in test_native_faults.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_helpers import error_lines
from native_support import Hosts
from unit_helpers import run_cli, snapshot

NO_SPACE = "No space left on device; free some space there and retry"


@contextlib.contextmanager
def tiny_disk(size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = Path(tempfile.mkdtemp(prefix="pixsim-full-disk-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` up to its last block (less ``leave`` bytes)."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    with contextlib.suppress(OSError):
        while True:
            os.write(fd, b"\0" * 4096)
    os.close(fd)
    if leave:
        os.truncate(disk / "filler", max(0, os.path.getsize(disk / "filler") - leave))


def test_config_set_on_a_full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    with tiny_disk("1m") as disk:
        monkeypatch.setenv("PIXSIM_HOST_HOME", str(disk / "home"))
        host = disk / "host"
        made = run_cli("init", str(host), "--yes", "--name", "full-disk", "--port", "18960",
                       "--runtime", "docker")
        assert made.returncode == 0, str(made)
        fill(disk)
        before = snapshot(host)
        result = run_cli("config", "set", "name", "renamed", "--dir", str(host))
        assert result.returncode == 1, str(result)
        assert result.stderr == f"Error: cannot write {host / 'pixsim-host.yaml'}: {NO_SPACE}\n"
        after = snapshot(host)
        assert after.pop(".pixsim-host/lock")[0] == b""  # the (empty) lock file config set takes
        assert after == before  # the old config, and no temporary file left behind


@pytest.mark.native
def test_a_backup_onto_a_full_disk(hosts: Hosts) -> None:
    host = hosts.init()
    assert run_cli("up", "--dir", str(host.dir), "--timeout", "120").returncode == 0
    with tiny_disk("1m") as disk:
        fill(disk)
        bundle = disk / "host.tar.gz"
        result = run_cli("backup", "--dir", str(host.dir), "-o", str(bundle))
        assert result.returncode == 1, str(result)
        assert error_lines(result.stderr) == [f"Error: cannot write {bundle}: {NO_SPACE}"], str(result)
        assert sorted(p.name for p in disk.iterdir()) == ["filler"], "a partial bundle was left"
