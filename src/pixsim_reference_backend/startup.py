"""What every command (serve, migrate, worker) does before its own work: logging, signals,
settings and a bounded wait for the database."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

from .pg import Connection, PgAuthError, PgConnectionError, PgError, parse_pg_url
from .settings import Settings, SettingsError, load_settings

EXIT_OK = 0
EXIT_RUNTIME = 1  # database unreachable or rejected us, a failed migration, an unexpected crash
EXIT_SETTINGS = 2
# Upstream's start-up failures (schema, plugins) all end its process with uvicorn's 3.
EXIT_SCHEMA = 3  # not migrated, or another host's database
EXIT_PLUGINS = 3  # plugin dependencies not satisfied
EXIT_LISTEN = 5

# SQLSTATEs that mean "the server exists but is not ready for us yet": keep waiting.
RETRYABLE_SQLSTATES = {"57P03", "53300", "57P01"}


def log(message: str) -> None:
    sys.stdout.write(f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')} {message}\n")
    sys.stdout.flush()


def fail(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def describe_error(exc: BaseException) -> str:
    # Class name only, as upstream reports it: never a message that could echo a URL.
    if isinstance(exc, PgError) and exc.code:
        return f"{type(exc).__name__} {exc.code}"
    return type(exc).__name__


def short_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, PgError):
        return exc.message
    return str(exc) or type(exc).__name__


class StopRequested(BaseException):
    """Raised from a signal handler so a blocking step is abandoned."""


class DatabaseRejected(Exception):
    pass


def connect_database(settings: Settings, application_name: str) -> Connection:
    """Wait for the database like an orchestrated service must: bounded, then give up."""
    url = parse_pg_url(settings.database_url)
    where = f"{url.host}:{url.port}/{url.database}"
    deadline = time.monotonic() + settings.database_wait_seconds
    announced = False
    while True:
        try:
            return Connection(url, timeout=5.0, application_name=application_name)
        except PgError as exc:
            if exc.code not in RETRYABLE_SQLSTATES:
                raise DatabaseRejected(
                    f"database at {where} refused the connection: {exc.code} {exc.message}"
                ) from exc
            last: BaseException = exc
        except PgAuthError as exc:
            raise DatabaseRejected(f"database at {where}: {exc}") from exc
        except (OSError, PgConnectionError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise DatabaseRejected(
                f"database at {where} unreachable after {settings.database_wait_seconds:g} s "
                f"({describe_error(last)}: {short_error(last)})"
            )
        if not announced:
            log(f"waiting for database at {where} ({describe_error(last)})")
            announced = True
        time.sleep(0.5)


def check_database(conn: Connection, settings: Settings, *, record_identity: bool) -> str | None:
    """Why this process must not run on this database (None when it may).

    The schema must be migrated to this code's heads (this code never creates it), and the
    database must belong to this host: the backend records SERVER_ID on its first start
    (``record_identity``) and everyone refuses a database recorded for another host.
    Raises MigrationsDirError for an unusable migrations folder.
    """
    from .schema import read_chains, schema_problem

    problem = schema_problem(conn, read_chains(settings.migrations_dir))
    if problem is not None:
        return (f"the database schema is not migrated: {problem}; run "
                "`python -m pixsim_reference_backend migrate` (same environment) first")
    if record_identity:
        conn.execute(
            "INSERT INTO pixsim_host_identity (singleton, host_id) VALUES (true, $1) "
            "ON CONFLICT (singleton) DO NOTHING",
            (settings.server_id,),
        )
    rows = conn.execute("SELECT host_id FROM pixsim_host_identity WHERE singleton")
    stored = (rows[0][0] or "") if rows else ""
    if stored and stored != settings.server_id:
        return (f"this database belongs to host {stored}, but SERVER_ID is "
                f"{settings.server_id}")
    return None


class StartupFailed(Exception):
    """Start-up must end with ``exit_code``; the reason was already written to stderr."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


def settings_or_fail() -> Settings:
    """The settings from the environment; every problem on stderr, then StartupFailed."""
    try:
        return load_settings()
    except SettingsError as exc:
        for problem in exc.problems:
            fail(f"settings error: {problem}")
        raise StartupFailed(EXIT_SETTINGS) from exc


def open_checked_database(settings: Settings, application_name: str, *,
                          record_identity: bool) -> Connection:
    """A connection to a database this process may run on (see check_database), or the
    reason on stderr and StartupFailed with the exit code that says it."""
    from .schema import MigrationsDirError

    try:
        conn = connect_database(settings, application_name)
    except DatabaseRejected as exc:
        fail(f"cannot start: {exc}")
        raise StartupFailed(EXIT_RUNTIME) from exc
    try:
        refusal = check_database(conn, settings, record_identity=record_identity)
    except MigrationsDirError as exc:
        conn.close()
        fail(f"settings error: MIGRATIONS_DIR: {exc}")
        raise StartupFailed(EXIT_SETTINGS) from exc
    except (PgError, PgConnectionError, OSError) as exc:
        conn.close()
        fail(f"cannot start: database check failed: {describe_error(exc)}: {short_error(exc)}")
        raise StartupFailed(EXIT_RUNTIME) from exc
    if refusal is not None:
        conn.close()
        fail(f"refusing to start: {refusal}")
        raise StartupFailed(EXIT_SCHEMA)
    return conn
