"""``serve-generation``: a second HTTP service beside the backend, as PixSim7's
``generation-api`` is (its own process and port, the backend's database and identity).

It reads the backend's settings and listens on ``GENERATION_API_PORT`` (default 8001) at
``HOST``; it answers ``/health``, the identity endpoint and ``GET
/api/v1/generation/status`` (the host's jobs by status). Like the backend, it refuses an
unmigrated database or another host's (exit 3), and never records an identity itself.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from typing import Any

from .plugins import PluginSet
from .server import App, Database, Handler, RedisHolder, Server, _not_allowed, make_server
from .settings import Settings
from .startup import (
    EXIT_LISTEN,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_SETTINGS,
    StartupFailed,
    StopRequested,
    fail,
    log,
    open_checked_database,
    settings_or_fail,
    short_error,
)

SERVICE_ID = "generation-api"
PORT_VARIABLE = "GENERATION_API_PORT"
DEFAULT_PORT = 8001


def generation_port(environ: dict[str, str] | None = None) -> int:
    """The port from ``GENERATION_API_PORT`` (any case, as the settings read), else 8001."""
    env = {key.lower(): value for key, value in (os.environ if environ is None else environ).items()}
    raw = env.get(PORT_VARIABLE.lower())
    if raw is None or raw == "":
        return DEFAULT_PORT
    port = int(raw)  # ValueError: the caller reports it
    if not 0 < port < 65536:
        raise ValueError(raw)
    return port


class GenerationApp(App):
    """The backend's health and identity, plus the service's own status."""

    def generation_status(self) -> tuple[int, Any]:
        rows = self.db.execute("SELECT status, count(*) FROM jobs GROUP BY status ORDER BY status")
        return 200, {"service": SERVICE_ID, "server_id": self.settings.server_id,
                     "port": self.settings.port,
                     "jobs": {str(status): int(count or 0) for status, count in rows}}


class GenerationHandler(Handler):
    app: GenerationApp

    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[Any, ...]:
        app = self.app
        fixed = {
            "/health": app.health,
            "/api/v1/server/info": app.server_info,
            "/api/v1/version": app.version,
            "/api/v1/generation/status": app.generation_status,
        }
        if path in fixed:
            return fixed[path]() if method in ("GET", "HEAD") else _not_allowed("GET")
        return 404, {"detail": "Not Found"}


def _listen(app: GenerationApp, settings: Settings) -> Server:
    server = make_server(app, settings.host, settings.port)
    server.RequestHandlerClass = type("BoundGenerationHandler", (GenerationHandler,), {"app": app})
    return server


def run() -> int:
    def on_signal(signum: int, frame: Any) -> None:
        raise StopRequested()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    db: Database | None = None
    redis: RedisHolder | None = None
    server: Server | None = None
    serving = False
    try:
        settings = settings_or_fail()
        try:
            settings = dataclasses.replace(settings, port=generation_port())
        except ValueError:
            fail(f"settings error: {PORT_VARIABLE}: must be an integer between 1 and 65535")
            return EXIT_SETTINGS
        log(f"{SERVICE_ID} starting: {settings.describe()}")
        first = open_checked_database(settings, f"pixsim-reference-{SERVICE_ID}", record_identity=False)
        db = Database(settings.database_url)
        db.add(first)
        redis = RedisHolder(settings.redis_url)
        app = GenerationApp(settings, db, redis, PluginSet([]))
        try:
            server = _listen(app, settings)
        except OSError as exc:
            fail(f"cannot listen on {settings.host}:{settings.port}: {short_error(exc)}")
            return EXIT_LISTEN
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                  name="http", daemon=True)
        thread.start()
        serving = True
        log(f"{SERVICE_ID} listening on http://{settings.host}:{settings.port}")
        while thread.is_alive():
            time.sleep(0.2)
        fail("http server stopped unexpectedly")
        return EXIT_RUNTIME
    except StartupFailed as exc:
        return exc.exit_code
    except StopRequested:
        log(f"{SERVICE_ID}: stop requested; shutting down")
        return EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if server is not None:
            if serving:
                server.shutdown()
            server.server_close()
        if redis is not None:
            redis.close()
        if db is not None:
            db.close()
