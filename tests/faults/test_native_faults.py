"""Faults on the native runtime that used to leave things behind or say too much.

* a full disk writing a pid file during ``up`` left a Redis running that the host no
  longer knew (status "missing", ``down`` left it, the next ``up`` blamed "another program");
* internal ports (PostgreSQL, Redis) taken by another program made ``up`` give up;
* a port clash made ``up`` stop a running service before it noticed the clash;
* ``db`` was healthy by ``pg_isready``, which does not authenticate;
* Redis's files, logs and pid files were readable by every local user, and pid files held
  an unsalted hash over the Redis password.

The commands run in this process (unit_helpers.run_cli), so a fault can be injected at the
write seam; every process they start is stopped by the fixture, by pid.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from pathlib import Path

import pytest
import yaml
from fault_helpers import error_lines
from native_support import Hosts, processes_under
from unit_helpers import run_cli

pytestmark = pytest.mark.native



def up(directory: Path) -> str:
    result = run_cli("up", "--dir", str(directory), "--timeout", "120")
    assert result.returncode == 0, str(result)
    return result.output


def config(directory: Path) -> dict[str, object]:
    data = yaml.safe_load((directory / "pixsim-host.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data



def redis_processes(base: Path) -> list[int]:
    return [pid for pid in processes_under(base)
            if b"redis" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_a_full_disk_writing_a_pid_file_leaves_no_unknown_process(
        hosts: Hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    from pixsim_host.runtime import procs

    host = hosts.init()
    pid_file = host.dir / ".pixsim-host" / "run" / "redis.pid"
    real_write = procs.write_record

    def full_disk(path: Path, record: procs.PidRecord) -> None:
        if path == pid_file:
            from pixsim_host.fsutil import WriteError

            raise WriteError(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        real_write(path, record)

    monkeypatch.setattr(procs, "write_record", full_disk)
    result = run_cli("up", "--dir", str(host.dir), "--timeout", "120")
    monkeypatch.setattr(procs, "write_record", real_write)
    assert result.returncode == 1, str(result)
    assert error_lines(result.stderr) == [f"Error: cannot write {pid_file}: No space left on device; "
                                          "free some space there and retry"], str(result)
    assert not pid_file.exists()
    assert redis_processes(hosts.base) == [], "a Redis runs that the host does not know"
    # The next up starts cleanly: nothing holds the host's Redis port.
    output = up(host.dir)
    assert "another program" not in output


def test_internal_ports_taken_by_another_program_are_rechosen_by_up(hosts: Hosts) -> None:
    host = hosts.init()
    assert run_cli("up", "--dir", str(host.dir), "--timeout", "120").returncode == 0
    assert run_cli("down", "--dir", str(host.dir)).returncode == 0
    native = config(host.dir)["native"]
    assert isinstance(native, dict)
    old_pg, old_redis = int(native["postgres_port"]), int(native["redis_port"])
    squatters = []
    for port in (old_pg, old_redis):
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        squatter.bind(("127.0.0.1", port))
        squatter.listen(1)
        squatters.append(squatter)
    try:
        output = up(host.dir)
    finally:
        for squatter in squatters:
            squatter.close()
    native = config(host.dir)["native"]
    assert isinstance(native, dict)
    new_pg, new_redis = int(native["postgres_port"]), int(native["redis_port"])
    assert {new_pg, new_redis}.isdisjoint({old_pg, old_redis})
    assert f"port {old_pg} is taken by another program; moved to {new_pg}" in output
    assert f"port {old_redis} is taken by another program; moved to {new_redis}" in output
    status = json.loads(run_cli("status", "--json", "--dir", str(host.dir)).stdout)
    assert status["services"]["db"]["health"] == "healthy"
    assert status["services"]["redis"]["health"] == "healthy"


def test_a_backend_port_clash_is_found_before_anything_is_stopped(hosts: Hosts) -> None:
    host = hosts.init()
    up(host.dir)
    before = host.pids()
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    taken = squatter.getsockname()[1]
    try:
        data = config(host.dir)
        backend = data["backend"]
        assert isinstance(backend, dict)
        backend["port"] = taken
        (host.dir / "pixsim-host.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        result = run_cli("up", "--dir", str(host.dir), "--timeout", "60")
    finally:
        squatter.close()
    assert result.returncode == 1, str(result)
    [error] = error_lines(result.stderr)
    assert error.startswith(f"Error: port {taken} on 127.0.0.1 (backend) is already in use by "
                            "another program"), error
    assert host.pids() == before, f"a running service was stopped before the clash was noticed: {result}"


def test_db_is_healthy_only_when_the_hosts_role_can_log_in(hosts: Hosts) -> None:
    host = hosts.init()
    up(host.dir)
    env = host.dir / ".env"
    original = env.read_text(encoding="utf-8")
    password = host.secrets["POSTGRES_PASSWORD"]
    env.write_text(original.replace(f"POSTGRES_PASSWORD={password}", "POSTGRES_PASSWORD=not-the-password"),
                   encoding="utf-8")
    try:
        status = json.loads(run_cli("status", "--json", "--dir", str(host.dir)).stdout)
    finally:
        env.write_text(original, encoding="utf-8")
    assert status["services"]["db"]["state"] == "running"
    assert status["services"]["db"]["health"] != "healthy"
    status = json.loads(run_cli("status", "--json", "--dir", str(host.dir)).stdout)
    assert status["services"]["db"]["health"] == "healthy"


def test_private_data_at_rest(hosts: Hosts) -> None:
    host = hosts.init()
    up(host.dir)
    run_cli("down", "--dir", str(host.dir))  # Redis writes its files on the way down
    up(host.dir)
    for folder, mode in (("data/redis", 0o700), ("data/home", 0o700), ("logs", 0o700),
                         (".pixsim-host/run", 0o700)):
        path = host.dir / folder
        assert stat.S_IMODE(path.stat().st_mode) == mode, folder
        for item in path.iterdir():
            assert stat.S_IMODE(item.stat().st_mode) & 0o077 == 0, item
    assert stat.S_IMODE((host.dir / "data").stat().st_mode) in (0o700, 0o711)
    assert any((host.dir / "data" / "redis").iterdir())
    key = host.dir / ".pixsim-host" / "hash-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # The pid record's hash is keyed: recomputing it without the host's key gives nothing.
    from pixsim_host.runtime.native import _digest

    record = json.loads((host.dir / ".pixsim-host" / "run" / "redis.pid").read_text())
    assert record["config_hash"] and all(
        record["config_hash"] != _digest([record["command"], guess])
        for guess in (host.secrets["REDIS_PASSWORD"], ""))
    result = run_cli("doctor", "--json", "--dir", str(host.dir))
    checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    assert checks["permissions"]["status"] == "pass", checks["permissions"]
    os.chmod(host.dir / "logs", 0o755)
    result = run_cli("doctor", "--json", "--dir", str(host.dir))
    checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    assert checks["permissions"]["status"] == "fail"
    assert checks["permissions"]["message"] == "other users can read the host's private data: logs (0o755)"
