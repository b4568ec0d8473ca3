"""Command line: ``python -m pixsim_reference_backend [serve|serve-generation|migrate|worker]``.

``serve`` (the default, so the image's CMD and older callers keep working) runs the HTTP
backend; ``migrate`` creates or upgrades the schema and exits; ``worker`` does background
jobs; ``serve-generation`` runs the second HTTP service (see generation.py). All read the
same environment.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from . import generation, server, worker
from .pg import PgConnectionError
from .schema import MigrationFailed, MigrationsDirError, migrate, read_chains
from .startup import (
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_SETTINGS,
    DatabaseRejected,
    StartupFailed,
    StopRequested,
    connect_database,
    describe_error,
    fail,
    log,
    settings_or_fail,
)

USAGE = "usage: python -m pixsim_reference_backend [serve|serve-generation|migrate|worker]"


def run_migrate() -> int:
    def on_signal(signum: int, frame: Any) -> None:
        raise StopRequested()  # the open transaction is rolled back on the way out

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        settings = settings_or_fail()
        log(f"migrate: starting: {settings.describe()}")
        try:
            chains = read_chains(settings.migrations_dir)
        except MigrationsDirError as exc:
            fail(f"settings error: MIGRATIONS_DIR: {exc}")
            return EXIT_SETTINGS
        try:
            conn = connect_database(settings, "pixsim-reference-migrate")
        except DatabaseRejected as exc:
            fail(f"migrate: cannot connect: {exc}")
            return EXIT_RUNTIME
        applied: list[str] = []
        try:
            heads = migrate(conn, chains, applied)
        except MigrationFailed as exc:
            for line in exc.report():
                fail(line)
            return EXIT_RUNTIME
        except (PgConnectionError, OSError) as exc:
            fail(f"migrate: database connection lost ({describe_error(exc)}); nothing was "
                 "changed (the whole run is one transaction)")
            return EXIT_RUNTIME
        finally:
            conn.close()
        for line in applied:
            log(line)
        at = " ".join(f"{chain}={head}" for chain, head in heads.items())
        log(f"migrate: {'done' if applied else 'already up to date'}: {at}")
        return EXIT_OK
    except StartupFailed as exc:
        return exc.exit_code
    except StopRequested:
        fail("migrate: interrupted; nothing was changed")
        return EXIT_RUNTIME


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "serve"
    if command in ("-h", "--help"):
        print(USAGE)
        sys.exit(EXIT_OK)
    if len(args) > 1 or command not in ("serve", "serve-generation", "migrate", "worker"):
        fail(f"{USAGE}\nunknown arguments: {' '.join(args)}")
        sys.exit(EXIT_SETTINGS)
    if command == "migrate":
        sys.exit(run_migrate())
    if command == "worker":
        sys.exit(worker.run())
    if command == "serve-generation":
        sys.exit(generation.run())
    sys.exit(server.run())
