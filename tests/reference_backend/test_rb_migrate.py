"""The schema comes only from the migrate command, as upstream's comes only from alembic."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from rb_support import (
    SRC,
    BackendFactory,
    Postgres,
    RedisServer,
    base_env,
    process_env,
    run_migrate,
)

PACKAGE_MIGRATIONS = SRC / "pixsim_reference_backend" / "migrations"
HEADS = {"alembic_version": "0002_jobs", "alembic_version_game": "0001_sessions"}


def public_tables(pg: Postgres, db: str) -> set[str]:
    rows = pg.admin("SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public'", database=db)
    return {str(r[0]) for r in rows}


def extensions(pg: Postgres, db: str) -> set[str]:
    return {str(r[0]) for r in pg.admin("SELECT extname FROM pg_extension", database=db)}


def revisions(pg: Postgres, db: str) -> dict[str, str]:
    found = {}
    for table in sorted(t for t in public_tables(pg, db) if t.startswith("alembic_version")):
        rows = pg.admin(f"SELECT version_num FROM {table}", database=db)
        assert len(rows) == 1, (table, rows)
        found[table] = str(rows[0][0])
    return found


def migrations_copy(tmp_path: Path, extra: dict[str, str] | None = None,
                    drop: tuple[str, ...] = ()) -> Path:
    """The package's migrations plus ``extra`` files (relative path -> SQL), minus ``drop``."""
    root = tmp_path / "migrations"
    shutil.copytree(PACKAGE_MIGRATIONS, root)
    for rel in drop:
        (root / rel).unlink()
    for rel, sql in (extra or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(sql)
    return root


def test_unmigrated_database_exits_3_before_listening(backends: BackendFactory) -> None:
    db = backends.postgres.new_database()
    env = backends.env(database=db)
    serve = backends.spawn(env)
    assert serve.wait_exit() == 3
    assert ('refusing to start: the database schema is not migrated: relation '
            '"pixsim_host_identity" does not exist') in serve.stderr
    assert "python -m pixsim_reference_backend migrate" in serve.stderr
    assert "listening" not in serve.stdout
    worker = backends.worker(env)
    assert worker.wait_exit() == 3
    assert 'relation "pixsim_host_identity" does not exist' in worker.stderr
    # Neither created anything: upstream's trap (a table made by the backend breaking the
    # first migration) cannot happen.
    assert public_tables(backends.postgres, db) == set()


def test_migrate_then_start(backends: BackendFactory) -> None:
    pg = backends.postgres
    db = pg.new_database()
    env = backends.env(database=db)
    first = backends.migrate(env)
    assert first.returncode == 0, first.stderr
    lines = [line.split(" ", 1)[1] for line in first.stdout.splitlines()]
    assert lines[0].startswith("migrate: starting: server_id=host-test database=postgresql://")
    assert lines[1:] == ["migrate: main/0001_base applied", "migrate: main/0002_jobs applied",
                     "migrate: game/0001_sessions applied",
                     "migrate: done: main=0002_jobs game=0001_sessions"]
    assert revisions(pg, db) == HEADS
    assert {"vector", "pg_trgm", "btree_gist"} <= extensions(pg, db)
    assert {"pixsim_host_identity", "worlds", "jobs", "game_sessions"} <= public_tables(pg, db)

    b = backends.run(env)
    assert b.request("POST", "/api/v1/worlds", body={"name": "Harbor"}).status == 201
    # Idempotent, also while the backend runs.
    again = backends.migrate(env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().endswith(
        "migrate: already up to date: main=0002_jobs game=0001_sessions")
    assert revisions(pg, db) == HEADS
    assert [w["name"] for w in b.get("/api/v1/worlds").body["worlds"]] == ["Harbor"]
    identity = pg.admin("SELECT host_id FROM pixsim_host_identity", database=db)
    assert identity == [("host-test",)]


def test_older_revision_is_refused_until_migrated(backends: BackendFactory,
                                                  tmp_path: Path) -> None:
    pg = backends.postgres
    db = pg.new_database()
    older = migrations_copy(tmp_path / "older", drop=("main/0002_jobs.sql",))
    assert backends.migrate(backends.env(database=db, MIGRATIONS_DIR=str(older))).returncode == 0
    assert revisions(pg, db) == {"alembic_version": "0001_base",
                                 "alembic_version_game": "0001_sessions"}
    env = backends.env(database=db)
    old = backends.spawn(env)
    assert old.wait_exit() == 3
    assert 'relation "jobs" does not exist' in old.stderr

    upgraded = backends.migrate(env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "migrate: main/0002_jobs applied" in upgraded.stdout
    assert "0001_base applied" not in upgraded.stdout
    backends.run(env).stop()

    # A revision that adds no table: the recorded revision alone tells it is behind.
    newer = migrations_copy(tmp_path / "newer", extra={
        "main/0003_world_notes.sql": "ALTER TABLE worlds ADD COLUMN notes text;\n"})
    behind = backends.spawn(backends.env(database=db, MIGRATIONS_DIR=str(newer)))
    assert behind.wait_exit() == 3
    assert ("the schema of chain main is at revision 0002_jobs; this backend needs revision "
            "0003_world_notes") in behind.stderr


def test_failing_migration_leaves_the_data_as_it_was(backends: BackendFactory,
                                                     tmp_path: Path) -> None:
    pg = backends.postgres
    db = pg.migrated_database()
    env = backends.env(database=db)
    b = backends.run(env)
    assert b.request("POST", "/api/v1/worlds", body={"name": "Harbor"}).status == 201
    assert b.stop() == 0

    broken = migrations_copy(tmp_path, extra={
        # A real migration that changes data and the schema, then fails half-way.
        "main/0003_rename.sql": "ALTER TABLE worlds ADD COLUMN slug text;\n"
                                "UPDATE worlds SET name = 'changed';\n"
                                "CREATE TABLE scratch (id int);\n"
                                "SELECT no_such_function(1);\n",
        "game/0002_never.sql": "CREATE TABLE never_applied (id int);\n",
    })
    failed = backends.migrate(backends.env(database=db, MIGRATIONS_DIR=str(broken)))
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert lines[0] == ("migrate: main/0003_rename failed; nothing was changed (the whole run "
                        "was rolled back)")
    assert lines[1] == "ERROR:  function no_such_function(integer) does not exist (SQLSTATE 42883)"
    assert lines[2] == "LINE 4: SELECT no_such_function(1);"
    assert any(line.startswith("HINT:  ") for line in lines)
    assert "Traceback" not in failed.stderr

    assert revisions(pg, db) == HEADS
    assert "scratch" not in public_tables(pg, db) and "never_applied" not in public_tables(pg, db)
    columns = pg.admin("SELECT column_name FROM information_schema.columns "
                       "WHERE table_name = 'worlds'", database=db)
    assert "slug" not in {r[0] for r in columns}
    again = backends.run(env)
    assert [w["name"] for w in again.get("/api/v1/worlds").body["worlds"]] == ["Harbor"]


def test_missing_extension_is_postgresql_s_own_error(postgres_without_trgm: Postgres,
                                                     redis_server: RedisServer,
                                                     tmp_path: Path) -> None:
    pg = postgres_without_trgm
    assert "pg_trgm" not in pg.extensions and "vector" in pg.extensions
    db = pg.new_database()
    env = {**base_env(pg.url(db), redis_server.url()), "PIXSIM_HOME": str(tmp_path / "home")}
    failed = run_migrate(env)
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert lines[0].startswith("migrate: main/0001_base failed; nothing was changed")
    assert lines[1] == 'ERROR:  extension "pg_trgm" is not available (SQLSTATE 0A000)'
    # PostgreSQL 18 gives a hint (16 a detail naming the missing control file): either way
    # the server's own words reach the operator.
    assert any(line.startswith(("HINT:  The extension must first be installed",
                                "DETAIL:  Could not open extension control file"))
               for line in lines[2:])
    # Nothing stayed: not even the version tables, nor vector (created later in the file).
    assert public_tables(pg, db) == set()
    assert extensions(pg, db) == {"plpgsql"}


def test_unknown_recorded_revision_is_refused(backends: BackendFactory) -> None:
    pg = backends.postgres
    db = pg.migrated_database()
    pg.admin("UPDATE alembic_version SET version_num = '0099_from_the_future'", database=db)
    env = backends.env(database=db)
    failed = backends.migrate(env)
    assert failed.returncode == 1
    assert ("ERROR:  Can't locate revision identified by '0099_from_the_future' in chain main"
            in failed.stderr)
    serve = backends.spawn(env)
    assert serve.wait_exit() == 3
    assert "chain main is at revision 0099_from_the_future" in serve.stderr


def test_concurrent_migrations_take_turns(backends: BackendFactory) -> None:
    pg = backends.postgres
    db = pg.new_database()
    env = process_env(backends.env(database=db))
    argv = [sys.executable, "-m", "pixsim_reference_backend", "migrate"]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    results = [(p.wait(60), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0, 0], results
    applied = sum(out.count("main/0001_base applied") for _, out, _ in results)
    assert applied == 1
    assert revisions(pg, db) == HEADS


def test_database_made_before_migrations_is_adopted(backends: BackendFactory) -> None:
    pg = backends.postgres
    db = pg.new_database()
    # What the backend used to create itself on its first start.
    pg.admin("CREATE TABLE pixsim_host_identity (singleton boolean PRIMARY KEY DEFAULT true "
             "CHECK (singleton), host_id text NOT NULL, created_at timestamptz NOT NULL "
             "DEFAULT now())", database=db)
    pg.admin("CREATE TABLE worlds (id bigserial PRIMARY KEY, name text NOT NULL, meta jsonb "
             "NOT NULL DEFAULT '{}', created_at timestamptz DEFAULT now())", database=db)
    pg.admin("INSERT INTO pixsim_host_identity (host_id) VALUES ('host-test')", database=db)
    pg.admin("INSERT INTO worlds (name) VALUES ('Old Town')", database=db)
    env = backends.env(database=db)
    assert backends.migrate(env).returncode == 0
    b = backends.run(env)
    assert [w["name"] for w in b.get("/api/v1/worlds").body["worlds"]] == ["Old Town"]


def test_unusable_migrations_folder(backends: BackendFactory, tmp_path: Path) -> None:
    bad = migrations_copy(tmp_path, extra={"main/0003 has spaces.sql": "SELECT 1;\n"})
    env = backends.env(database="postgres", MIGRATIONS_DIR=str(bad))
    done = backends.migrate(env)
    assert done.returncode == 2
    assert "settings error: MIGRATIONS_DIR:" in done.stderr and "0003 has spaces.sql" in done.stderr
    missing = backends.migrate(backends.env(database="postgres",
                                            MIGRATIONS_DIR=str(tmp_path / "nowhere")))
    assert missing.returncode == 2
    assert "MIGRATIONS_DIR:" in missing.stderr and "is not a directory" in missing.stderr
