"""HTTP server and start-up sequence of the reference backend.

Start-up follows upstream's order and finishes before the socket listens, so "connection
refused" always means "still starting or crashed": settings, database (with a bounded
wait), the check that its schema is migrated (it never creates it: ``migrate`` does) and
that it belongs to this host, plugins, Redis (optional), then listen.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import API_VERSION, __version__, websocket
from .jobs import (
    JOB_COLUMNS,
    QUEUE_KEY,
    WORKER_KEY_PREFIX,
    JobRejected,
    job_json,
    media_dir,
    safe_child,
    uploads_dir,
    validate_request,
    write_atomically,
)
from .pg import Connection, PgConnectionError, PgError, mask_url, parse_pg_url
from .plugins import PluginDependencyError, PluginSet, load_plugins
from .redis_client import Redis, RedisConnectionError, RedisError, parse_redis_url
from .settings import Settings
from .startup import (
    EXIT_LISTEN,
    EXIT_OK,
    EXIT_PLUGINS,
    EXIT_RUNTIME,
    StartupFailed,
    StopRequested,
    describe_error,
    fail,
    log,
    open_checked_database,
    settings_or_fail,
    short_error,
)

MAX_BODY = 1024 * 1024
# How long a stop waits for requests in progress (within the 10 s pixsim-host gives a stop).
STOP_GRACE = 8.0
KV_PREFIX = "pixsim:kv:"
ADMIN_PLUGINS = "admin_plugins"  # the plugin that provides the list and details endpoints


# --- connection holders ---------------------------------------------------------------


class Database:
    """Small pool of connections; a dead one is replaced on the next call."""

    def __init__(self, url: str, timeout: float = 5.0, max_idle: int = 4) -> None:
        self._url = parse_pg_url(url)
        self._timeout = timeout
        self._max_idle = max_idle
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def add(self, conn: Connection) -> None:
        self._release(conn)

    def _acquire(self) -> tuple[Connection, bool]:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn, True
        return Connection(self._url, timeout=self._timeout), False

    def _release(self, conn: Connection) -> None:
        with self._lock:
            if not conn.closed and not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[str | None, ...]]:
        while True:
            conn, reused = self._acquire()
            try:
                rows = conn.execute(sql, params)
            except (PgConnectionError, PgError):
                if conn.closed and reused:
                    continue  # a stale pooled connection; retry on a fresh one
                self._release(conn)
                raise
            self._release(conn)
            return rows

    def check(self) -> str:
        try:
            self.execute("SELECT 1")
        except Exception as exc:  # every failure is reported, none is fatal here
            return f"error: {describe_error(exc)}"
        return "connected"

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class RedisHolder:
    """One shared Redis connection, reopened on demand after a failure."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self._url = parse_redis_url(url)
        self._timeout = timeout
        self._conn: Redis | None = None
        self._lock = threading.Lock()

    def _get(self) -> tuple[Redis, bool]:
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                return self._conn, True
            self._conn = Redis(self._url, timeout=self._timeout)
            return self._conn, False

    def command(self, *args: Any) -> Any:
        while True:
            conn, reused = self._get()
            try:
                return conn.command(*args)
            except RedisConnectionError:
                if reused:
                    continue
                raise

    def check(self) -> str:
        try:
            self.command("PING")
        except (OSError, RedisConnectionError, RedisError):
            return "disconnected"
        return "connected"

    def close(self) -> None:
        conn = self._conn
        if conn is not None:
            conn._abort()  # no lock: a request thread may be blocked on it


# --- application ----------------------------------------------------------------------


class App:
    def __init__(self, settings: Settings, db: Database, redis: RedisHolder,
                 plugins: PluginSet) -> None:
        self.settings = settings
        self.db = db
        self.redis = redis
        self.plugins = plugins

    # Each handler returns (status, body) or (status, body, extra_headers).

    def root(self) -> tuple[int, Any]:
        return 200, {"name": "PixSim7 reference backend", "version": __version__,
                     "status": "running"}

    def health(self) -> tuple[int, Any]:
        database = self.db.check()
        redis = self.redis.check()
        status = "healthy" if database == "connected" else "degraded"
        return 200, {"status": status, "database": database, "redis": redis, "providers": []}

    def ready(self) -> tuple[int, Any]:
        database = self.db.check()
        redis = self.redis.check()
        # As upstream: true when both the feature and the route plugins were loaded.
        listing = self.plugins.listing()
        loaded = bool(listing["feature_plugins"]) and bool(listing["route_plugins"])
        if database != "connected":
            return 503, {"status": "unavailable", "database": database, "redis": redis,
                         "plugins_loaded": loaded}
        degraded = redis != "connected" or bool(self.plugins.failed)
        return 200, {"status": "degraded" if degraded else "ready", "database": database,
                     "redis": redis, "plugins_loaded": loaded}

    def version(self) -> tuple[int, Any]:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        # As upstream's: "api_version" here is the application's version (upstream's
        # settings.api_version, "0.1.0"), not the API generation server info names ("v1").
        return 200, {"api_version": __version__, "build_sha": self.settings.build_sha,
                     "build_time": self.settings.build_time, "server_time": now}

    def server_info(self) -> tuple[int, Any]:
        s = self.settings
        return 200, {"server_id": s.server_id, "server_name": s.server_name,
                     "server_description": s.server_description, "version": __version__,
                     "api_version": API_VERSION}

    def plugin_list(self) -> tuple[int, Any]:
        if not self.plugins.is_enabled(ADMIN_PLUGINS):
            return 404, {"detail": "Not Found"}
        return 200, self.plugins.listing()

    def plugin_details(self, plugin_id: str) -> tuple[int, Any]:
        if not self.plugins.is_enabled(ADMIN_PLUGINS):
            return 404, {"detail": "Not Found"}
        plugin = self.plugins.by_id(plugin_id)
        if plugin is None:
            return 404, {"detail": f"Plugin '{plugin_id}' not found"}
        return 200, plugin.details()

    # -- jobs, done by workers ---------------------------------------------------------

    def create_job(self, body: Any) -> tuple[int, Any]:
        try:
            kind, payload = validate_request(body)
        except JobRejected as exc:
            return 422, {"detail": str(exc)}
        rows = self.db.execute(
            f"INSERT INTO jobs (kind, payload) VALUES ($1, $2::jsonb) RETURNING {JOB_COLUMNS}",
            (kind, json.dumps(payload)),
        )
        job = job_json(rows[0])
        try:
            self.redis.command("LPUSH", QUEUE_KEY, str(job["id"]))
        except (OSError, RedisConnectionError, RedisError) as exc:
            # Not queued means not accepted: leave no job that no worker will ever see.
            self.db.execute("DELETE FROM jobs WHERE id = $1", (job["id"],))
            return 503, {"detail": f"job queue unavailable: {describe_error(exc)}"}
        return 202, job

    def get_job(self, raw_id: str) -> tuple[int, Any]:
        if not raw_id.isdigit() or len(raw_id) > 18:
            return 404, {"detail": "job not found"}
        rows = self.db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1", (int(raw_id),))
        if not rows:
            return 404, {"detail": "job not found"}
        return 200, job_json(rows[0])

    def list_jobs(self) -> tuple[int, Any]:
        rows = self.db.execute(f"SELECT {JOB_COLUMNS} FROM jobs ORDER BY id DESC LIMIT 100")
        return 200, {"jobs": [job_json(r) for r in rows]}

    def workers(self) -> tuple[int, Any]:
        """Workers seen in the last heartbeat period (each refreshes its key)."""
        found: list[Any] = []
        cursor = "0"
        while True:
            cursor, keys = self.redis.command("SCAN", cursor, "MATCH", WORKER_KEY_PREFIX + "*",
                                              "COUNT", 100)
            for key in keys:
                value = self.redis.command("GET", key)
                if isinstance(value, str):
                    with contextlib.suppress(ValueError):
                        found.append(json.loads(value))
            if cursor == "0":
                break
        found.sort(key=lambda w: str(w.get("name")) if isinstance(w, dict) else "")
        return 200, {"workers": found}

    # -- files under PIXSIM_HOME -------------------------------------------------------

    def list_files(self, area: str) -> tuple[int, Any]:
        root = self._area_root(area)
        files = []
        if root.is_dir():
            for path in sorted(root.iterdir()):
                if path.is_file() and safe_child(root, path.name) is not None:
                    files.append({"name": path.name, "size": path.stat().st_size,
                                  "path": f"{area}/{path.name}"})
        return 200, {"files": files}

    def get_file(self, area: str, name: str) -> tuple[int, Any, dict[str, str]] | tuple[int, Any]:
        path = safe_child(self._area_root(area), name)
        if path is None or not path.is_file():
            return 404, {"detail": "file not found"}
        kind = "text/plain; charset=utf-8" if path.suffix == ".txt" else "application/octet-stream"
        return 200, RawBody(path.read_bytes(), kind)

    def put_upload(self, name: str, data: bytes) -> tuple[int, Any]:
        path = safe_child(uploads_dir(self.settings.pixsim_home), name)
        if path is None:
            return 422, {"detail": "file name must be letters, digits, '.', '_' or '-' "
                                   "(at most 128, not starting with '.')"}
        write_atomically(path, data)
        return 201, {"name": name, "path": f"uploads/{name}", "size": len(data)}

    def _area_root(self, area: str) -> Path:
        home = self.settings.pixsim_home
        return media_dir(home) if area == "media" else uploads_dir(home)

    @staticmethod
    def _world(row: tuple[str | None, ...]) -> dict[str, Any]:
        return {"id": int(row[0] or 0), "name": row[1], "meta": json.loads(row[2] or "{}")}

    def create_world(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return 422, {"detail": "body must be a JSON object"}
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            return 422, {"detail": "'name' must be a non-empty string"}
        meta = body.get("meta", {})
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            return 422, {"detail": "'meta' must be a JSON object"}
        rows = self.db.execute(
            "INSERT INTO worlds (name, meta) VALUES ($1, $2::jsonb) "
            "RETURNING id, name, meta::text",
            (name, json.dumps(meta)),
        )
        return 201, self._world(rows[0])

    def list_worlds(self) -> tuple[int, Any]:
        rows = self.db.execute("SELECT id, name, meta::text FROM worlds ORDER BY id")
        return 200, {"worlds": [self._world(r) for r in rows]}

    def get_world(self, raw_id: str) -> tuple[int, Any]:
        if not raw_id.isdigit() or len(raw_id) > 18:
            return 404, {"detail": "world not found"}
        rows = self.db.execute("SELECT id, name, meta::text FROM worlds WHERE id = $1",
                               (int(raw_id),))
        if not rows:
            return 404, {"detail": "world not found"}
        return 200, self._world(rows[0])

    def kv_get(self, key: str) -> tuple[int, Any]:
        value = self.redis.command("GET", KV_PREFIX + key)
        if value is None:
            return 404, {"detail": "key not found"}
        if isinstance(value, bytes):
            return 500, {"detail": "stored value is not UTF-8 text"}
        return 200, {"key": key, "value": value}

    def kv_put(self, key: str, body: bytes) -> tuple[int, Any]:
        try:
            value = body.decode("utf-8")
        except UnicodeDecodeError:
            return 400, {"detail": "body must be UTF-8 text"}
        self.redis.command("SET", KV_PREFIX + key, value)
        return 200, {"key": key, "value": value}

    def plugin_route(self, plugin_id: str, subpath: str, info: dict[str, Any]) -> tuple[int, Any]:
        fn = self.plugins.find_route(plugin_id, subpath)
        if fn is None:
            return 404, {"detail": "Not Found"}
        try:
            result = fn(info)
            status, body = result
            status = int(status)
            json.dumps(body)
            if not 100 <= status <= 599:
                raise ValueError("status out of range")
        except Exception as exc:  # a plugin bug is a 500, never a dead server
            log(f"plugin {plugin_id} route {subpath} failed: {type(exc).__name__}")
            return 500, {"detail": f"plugin route failed: {type(exc).__name__}"}
        return status, body


class RawBody:
    """A response body sent as is (a file), not as JSON."""

    def __init__(self, data: bytes, content_type: str) -> None:
        self.data = data
        self.content_type = content_type


class BadRequest(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pixsim-reference-backend/" + __version__
    sys_version = ""
    timeout = 60
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the
    # client's delayed ACK adds ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    app: App  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request is written by _dispatch instead

    def do_GET(self) -> None:
        if urlsplit(self.path).path.rstrip("/") == websocket.GENERATIONS_PATH:
            started = time.monotonic()
            status = websocket.serve_generations(self, self.app.settings.server_id)
            log(f"{self.client_address[0]} GET {websocket.GENERATIONS_PATH} {status} "
                f"{(time.monotonic() - started) * 1000:.1f}ms")
            return
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    # -- helpers -----------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise BadRequest(411, "chunked request bodies are not supported")
        raw = self.headers.get("Content-Length")
        if not raw:
            return b""
        try:
            length = int(raw)
        except ValueError as exc:
            raise BadRequest(400, "invalid Content-Length") from exc
        if length < 0:
            raise BadRequest(400, "invalid Content-Length")
        if length > MAX_BODY:
            raise BadRequest(413, "request body too large")
        return self.rfile.read(length)

    def _json_body(self) -> Any:
        data = self._read_body()
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(400, "invalid JSON body") from exc

    def _cors_headers(self) -> dict[str, str]:
        origins = self.app.settings.cors_origins
        origin = self.headers.get("Origin")
        if not origins or not origin:
            return {}
        if "*" in origins:
            return {"Access-Control-Allow-Origin": "*"}
        if origin in origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                    "Access-Control-Allow-Credentials": "true"}
        return {}

    def _send(self, method: str, status: int, body: Any,
              headers: dict[str, str] | None = None) -> None:
        if isinstance(body, RawBody):
            payload, content_type = body.data, body.content_type
        else:
            payload = b"" if status == 204 else json.dumps(body).encode("utf-8")
            content_type = "application/json"
        self.send_response(status)
        all_headers = {**self._cors_headers(), **(headers or {})}
        if status != 204:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in all_headers.items():
            self.send_header(key, value)
        if getattr(self.server, "stopping", False):
            self.close_connection = True  # a request that began before the stop: the last one
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if method != "HEAD" and payload:
            self.wfile.write(payload)

    # -- routing -----------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[Any, ...]:
        app = self.app
        get = method in ("GET", "HEAD")
        fixed = {
            "/": app.root,
            "/health": app.health,
            "/ready": app.ready,
            "/api/v1/version": app.version,
            "/api/v1/server/info": app.server_info,
            "/api/v1/admin/plugins/list": app.plugin_list,
        }
        if path in fixed:
            return fixed[path]() if get else _not_allowed("GET")
        if path == "/api/v1/jobs":
            if get:
                return app.list_jobs()
            if method == "POST":
                return app.create_job(self._json_body())
            return _not_allowed("GET, POST")
        if path == "/api/v1/workers":
            return app.workers() if get else _not_allowed("GET")
        if path in ("/api/v1/media", "/api/v1/uploads"):
            return app.list_files(path.rsplit("/", 1)[1]) if get else _not_allowed("GET")
        if path == "/api/v1/worlds":
            if get:
                return app.list_worlds()
            if method == "POST":
                return app.create_world(self._json_body())
            return _not_allowed("GET, POST")
        segments = path.split("/")
        # ["", "api", "v1", <area>, ...]
        if len(segments) >= 5 and segments[1:3] == ["api", "v1"]:
            area = segments[3]
            if area == "worlds" and len(segments) == 5:
                return app.get_world(segments[4]) if get else _not_allowed("GET")
            if area == "jobs" and len(segments) == 5:
                return app.get_job(segments[4]) if get else _not_allowed("GET")
            if area == "media" and len(segments) == 5:
                return app.get_file("media", unquote(segments[4])) if get \
                    else _not_allowed("GET")
            if area == "uploads" and len(segments) == 5:
                name = unquote(segments[4])
                if get:
                    return app.get_file("uploads", name)
                if method == "PUT":
                    return app.put_upload(name, self._read_body())
                return _not_allowed("GET, PUT")
            if path.startswith("/api/v1/admin/plugins/") and len(segments) == 7 \
                    and segments[6] == "details":
                return app.plugin_details(unquote(segments[5])) if get else _not_allowed("GET")
            if area == "kv" and len(segments) >= 5:
                key = unquote("/".join(segments[4:]))
                if not key:
                    return 404, {"detail": "Not Found"}
                if get:
                    return app.kv_get(key)
                if method == "PUT":
                    return app.kv_put(key, self._read_body())
                return _not_allowed("GET, PUT")
            if area == "plugins":
                plugin_id = segments[4]
                subpath = "/" + "/".join(segments[5:])
                if not get:
                    if app.plugins.find_route(plugin_id, subpath) is None:
                        return 404, {"detail": "Not Found"}
                    return _not_allowed("GET")
                info = {
                    "method": "GET",
                    "path": path,
                    "subpath": subpath,
                    "plugin_id": plugin_id,
                    "query": query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "server_id": app.settings.server_id,
                }
                return app.plugin_route(plugin_id, subpath, info)
        return 404, {"detail": "Not Found"}

    def _dispatch(self, method: str) -> None:
        server = self.server
        if not isinstance(server, Server):
            self._answer(method)
            return
        with server.answering():
            if server.stopping:
                # Stopping: this answer is the connection's last (the client opens its next
                # one elsewhere, to the backend that replaces this one).
                self.close_connection = True
            self._answer(method)

    def _answer(self, method: str) -> None:
        started = time.monotonic()
        parts = urlsplit(self.path)
        path = parts.path or "/"
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/") or "/"
        status = 500
        try:
            if method == "OPTIONS":
                status = 204
                self._send(method, 204, None, {
                    "Allow": "GET, HEAD, POST, PUT, OPTIONS",
                    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, OPTIONS",
                    "Access-Control-Allow-Headers":
                        self.headers.get("Access-Control-Request-Headers") or "Content-Type",
                    "Access-Control-Max-Age": "600",
                })
                return
            try:
                result = self._route(method, path, parse_qs(parts.query))
            except BadRequest as exc:
                result = (exc.status, {"detail": exc.detail})
            except (OSError, PgConnectionError, RedisConnectionError) as exc:
                result = (503, {"detail": f"backing service unavailable: {describe_error(exc)}"})
            except (PgError, RedisError) as exc:
                result = (500, {"detail": f"backing service error: {describe_error(exc)}"})
            status = result[0]
            self._send(method, *result)
        except Exception as exc:
            status = 500
            log(f"internal error on {method} {path}: {type(exc).__name__}")
            with contextlib.suppress(OSError):
                self._send(method, 500, {"detail": "Internal Server Error"})
        finally:
            elapsed = (time.monotonic() - started) * 1000
            log(f"{self.client_address[0]} {method} {path} {status} {elapsed:.1f}ms")


def _not_allowed(allow: str) -> tuple[int, Any, dict[str, str]]:
    return 405, {"detail": "Method Not Allowed"}, {"Allow": allow}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Requests being answered: a stop lets them finish (a rolling upgrade stops the old
        # backend only once the proxy sends new requests elsewhere, but some are still in it).
        self.in_flight = 0
        self.idle = threading.Condition()
        self.stopping = False

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        with self.idle:
            self.in_flight += 1
        try:
            yield
        finally:
            with self.idle:
                self.in_flight -= 1
                self.idle.notify_all()

    def drain(self, grace: float) -> int:
        """Wait up to ``grace`` seconds for the requests in progress; how many were left."""
        deadline = time.monotonic() + grace
        with self.idle:
            while self.in_flight and time.monotonic() < deadline:
                self.idle.wait(max(0.0, deadline - time.monotonic()))
            return self.in_flight


def make_server(app: App, host: str, port: int) -> Server:
    handler = type("BoundHandler", (Handler,), {"app": app})
    if ":" in host:
        server_cls: type[Server] = type("Server6", (Server,),
                                        {"address_family": socket.AF_INET6})
        return server_cls((host, port), handler)
    return Server((host, port), handler)


# --- start-up -------------------------------------------------------------------------


def run() -> int:
    stopping = {"flag": False}

    def on_signal(signum: int, frame: Any) -> None:
        if stopping["flag"]:
            return
        stopping["flag"] = True
        raise StopRequested()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    db: Database | None = None
    redis: RedisHolder | None = None
    server: Server | None = None
    serving = False
    try:
        settings = settings_or_fail()
        log(f"pixsim reference backend {__version__} starting: {settings.describe()}")
        first = open_checked_database(settings, "pixsim-reference-backend", record_identity=True)
        db = Database(settings.database_url)
        db.add(first)
        log(f"database ready; schema migrated; host identity {settings.server_id}")

        try:
            plugins = load_plugins(settings.feature_plugins_dir, settings.external_plugins_dir,
                                   settings.plugin_allowlist, settings.plugin_denylist)
        except PluginDependencyError as exc:
            for problem in exc.problems:
                fail(f"plugin error: {problem}")
            fail("refusing to start: plugin dependencies are not satisfied "
                 "(enable the dependency or remove the dependent plugin)")
            return EXIT_PLUGINS
        for warning in plugins.warnings:
            fail(f"plugin warning: {warning}")
        for failed in plugins.failed:
            fail(f"plugin warning: {failed.source} plugin folder '{failed.folder}' failed to "
                 f"load: {failed.error}")
        enabled = ", ".join(p.id for p in plugins.enabled) or "none"
        log(f"plugins: {len(plugins.plugins)} found, enabled: {enabled}")

        redis = RedisHolder(settings.redis_url)
        state = redis.check()
        if state != "connected":
            log(f"redis at {mask_url(settings.redis_url)} unavailable; running degraded")
        else:
            log("redis connected")

        app = App(settings, db, redis, plugins)
        try:
            server = make_server(app, settings.host, settings.port)
        except OSError as exc:
            fail(f"cannot listen on {settings.host}:{settings.port}: {short_error(exc)}")
            return EXIT_LISTEN

        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                  name="http", daemon=True)
        thread.start()
        serving = True
        log(f"listening on http://{settings.host}:{settings.port}")
        while thread.is_alive():
            time.sleep(0.2)
        fail("http server stopped unexpectedly")
        return EXIT_RUNTIME
    except StartupFailed as exc:
        return exc.exit_code
    except StopRequested:
        log("stop requested; shutting down")
        return EXIT_OK
    finally:
        # Further signals during cleanup must not interrupt it half-way.
        stopping["flag"] = True
        if server is not None:
            if serving:
                server.shutdown()
            server.server_close()  # no new connections; those in progress are answered
            server.stopping = True
            left = server.drain(STOP_GRACE) if serving else 0
            if left:
                log(f"{left} request(s) still in progress after {STOP_GRACE:.0f} s; stopping anyway")
        if redis is not None:
            redis.close()
        if db is not None:
            db.close()


def main() -> None:
    sys.exit(run())
