"""Schema migrations and the check the backend makes before it starts.

Migrations are SQL files in chains, like upstream's alembic chains:
``<MIGRATIONS_DIR>/<chain>/<revision>.sql``, applied in file-name order, chain ``main``
first and the others alphabetically. Each chain records its head revision the way alembic
does, in ``alembic_version`` (chain ``main``) or ``alembic_version_<chain>``, one column
``version_num``, so a tool reads every chain's revision the same way here and upstream.

One migrate run is one transaction: when any file fails, nothing of the run stays, not
even the extensions it created.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

from .pg import Connection, PgConnectionError, PgError

MAIN_CHAIN = "main"
VALID_CHAIN = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
VALID_REVISION = re.compile(r"^[A-Za-z0-9_]{1,32}$")  # alembic's version_num is varchar(32)
# Taken for the whole run, so two migrate commands on one database run one after the other.
MIGRATE_LOCK_KEY = 7_306_021_001
# The tables this code reads and writes; probing them first gives PostgreSQL's own words
# ('relation "jobs" does not exist') for an unmigrated database, as upstream shows them.
REQUIRED_TABLES = ("pixsim_host_identity", "worlds", "jobs")


class MigrationsDirError(Exception):
    """The migrations folder itself is unusable (bad names, unreadable files)."""


class MigrationFailed(Exception):
    def __init__(self, chain: str, revision: str, error: PgError | str, sql: str = "") -> None:
        super().__init__(f"{chain}/{revision}")
        self.chain = chain
        self.revision = revision
        self.error = error
        self.sql = sql

    def report(self) -> list[str]:
        """psql-style lines: the server's own message, then its detail, hint and line."""
        head = f"migrate: {self.chain}/{self.revision} failed; nothing was changed " \
               "(the whole run was rolled back)"
        if isinstance(self.error, str):
            return [head, f"ERROR:  {self.error}"]
        lines = [head, f"ERROR:  {self.error.message} (SQLSTATE {self.error.code})"]
        fields = self.error.fields
        position = fields.get("P")
        if position and position.isdigit() and self.sql:
            line_no = self.sql[: int(position)].count("\n") + 1
            lines.append(f"LINE {line_no}: {self.sql.splitlines()[line_no - 1].strip()}")
        if fields.get("D"):
            lines.append(f"DETAIL:  {fields['D']}")
        if fields.get("H"):
            lines.append(f"HINT:  {fields['H']}")
        return lines


@dataclass(frozen=True)
class Chain:
    name: str
    revisions: tuple[str, ...]
    files: tuple[Path, ...]

    @property
    def head(self) -> str:
        return self.revisions[-1]

    @property
    def version_table(self) -> str:
        return version_table(self.name)


def version_table(chain: str) -> str:
    return "alembic_version" if chain == MAIN_CHAIN else f"alembic_version_{chain}"


def read_chains(root: Path) -> list[Chain]:
    """Every chain under ``root`` with at least one migration, ``main`` first."""
    try:
        entries = sorted(root.iterdir(), key=lambda p: (p.name != MAIN_CHAIN, p.name))
    except OSError as exc:
        raise MigrationsDirError(f"cannot read {root}: {exc.strerror or exc}") from exc
    chains: list[Chain] = []
    for entry in entries:
        if not entry.is_dir() or entry.name.startswith((".", "_")):
            continue
        if not VALID_CHAIN.match(entry.name):
            raise MigrationsDirError(
                f"{entry}: a chain's folder name must match {VALID_CHAIN.pattern}")
        files = sorted(p for p in entry.iterdir() if p.suffix == ".sql" and p.is_file())
        for path in files:
            if not VALID_REVISION.match(path.stem):
                raise MigrationsDirError(
                    f"{path}: a revision's file name must match {VALID_REVISION.pattern}.sql")
        if files:
            chains.append(Chain(entry.name, tuple(p.stem for p in files), tuple(files)))
    if not chains:
        raise MigrationsDirError(f"{root} holds no migrations (<chain>/<revision>.sql)")
    return chains


def _recorded_revisions(conn: Connection, table: str) -> list[str]:
    # The table name comes from a validated chain name, never from the database or a user.
    return [row[0] or "" for row in conn.execute(f"SELECT version_num FROM {table}")]


def migrate(conn: Connection, chains: list[Chain], report: list[str]) -> dict[str, str]:
    """Apply every pending migration of every chain in one transaction; return the heads.

    ``report`` receives one line per applied file. Raises MigrationFailed (after rolling
    back) when a file fails or a recorded revision is unknown here.
    """
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock($1)", (MIGRATE_LOCK_KEY,))
        heads: dict[str, str] = {}
        for chain in chains:
            table = chain.version_table
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (version_num varchar(32) NOT NULL, "
                         f"CONSTRAINT {table}_pkc PRIMARY KEY (version_num))")
            recorded = _recorded_revisions(conn, table)
            if len(recorded) > 1:
                raise MigrationFailed(chain.name, "-", f"{table} holds {len(recorded)} "
                                      "revisions; alembic-style tables hold one")
            current = recorded[0] if recorded else None
            if current is not None and current not in chain.revisions:
                raise MigrationFailed(
                    chain.name, current,
                    f"Can't locate revision identified by '{current}' in chain {chain.name} "
                    "(the database was migrated by a newer backend)")
            start = 0 if current is None else chain.revisions.index(current) + 1
            for revision, path in zip(chain.revisions[start:], chain.files[start:], strict=True):
                try:
                    sql = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise MigrationFailed(chain.name, revision, f"cannot read {path}: {exc}") \
                        from exc
                try:
                    conn.script(sql)
                except PgError as exc:
                    raise MigrationFailed(chain.name, revision, exc, sql) from exc
                report.append(f"migrate: {chain.name}/{revision} applied")
            if start < len(chain.revisions):
                conn.execute(f"DELETE FROM {table}")
                conn.execute(f"INSERT INTO {table} (version_num) VALUES ($1)", (chain.head,))
            heads[chain.name] = chain.head
        conn.execute("COMMIT")
        return heads
    except BaseException:
        if not conn.closed:
            with contextlib.suppress(PgError, PgConnectionError, OSError):
                conn.execute("ROLLBACK")
        raise


def schema_problem(conn: Connection, chains: list[Chain]) -> str | None:
    """Why this database cannot serve this code yet (None when it is migrated to the heads)."""
    for table in REQUIRED_TABLES:
        try:
            conn.execute(f"SELECT 1 FROM {table} LIMIT 0")
        except PgError as exc:
            if exc.code == "42P01":
                return exc.message
            raise
    for chain in chains:
        try:
            recorded = _recorded_revisions(conn, chain.version_table)
        except PgError as exc:
            if exc.code == "42P01":
                return exc.message
            raise
        current = recorded[0] if len(recorded) == 1 else None
        if current != chain.head:
            at = f"revision {current}" if current else "no revision"
            return (f"the schema of chain {chain.name} is at {at}; this backend needs "
                    f"revision {chain.head}")
    return None
