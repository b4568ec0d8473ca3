"""`upgrade` and `rollback` of a native host whose backend is the operator's checkout (a git
repository): a new revision with a new migration upgrades and rolls back (the database
restored from the safety backup once the checkout is back); a new revision whose migration
fails leaves the database as it was and the host stopped, with the way back spelled out.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from checkout_support import make_checkout
from native_support import Host, Hosts, assert_ok, cli

pytestmark = pytest.mark.native

MIGRATION = "pixsim_reference_backend/migrations/main/0099_next.sql"


def git(checkout: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


def commit(checkout: Path, message: str) -> str:
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "-m", message)
    return git(checkout, "rev-parse", "HEAD")


def post_job(host: Host, text: str) -> int:
    with host.http() as http:
        answer = http.post("/api/v1/jobs", json={"kind": "render", "text": text})
    assert answer.status_code in (200, 201, 202), answer.text
    return int(answer.json()["id"])


def job_exists(host: Host, job_id: int) -> bool:
    with host.http() as http:
        return http.get(f"/api/v1/jobs/{job_id}").status_code == 200


def tables(host: Host) -> set[str]:
    run = assert_ok(cli("exec", "--dir", host.dir, "db", "--", "psql", "-At", "-c",
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
    return {line.strip() for line in run.stdout.splitlines() if line.strip()}


@pytest.fixture
def checkout_host(hosts: Hosts, tmp_path: Path) -> tuple[Host, Path, str]:
    source = make_checkout(tmp_path / "pixsim7")
    git(source, "init", "-q")
    first = commit(source, "first")
    host = hosts.init(None, "--source", str(source), "--python", sys.executable)
    host.up()
    return host, source, first


def test_new_revision_upgrades_and_rolls_back(checkout_host: tuple[Host, Path, str]) -> None:
    host, source, first = checkout_host
    kept = post_job(host, "before the upgrade")
    (source / MIGRATION).write_text("CREATE TABLE upgrade_probe (id integer);\n")
    second = commit(source, "a new migration")
    plan = assert_ok(cli("upgrade", "--dir", host.dir, "--dry-run", "--json")).json()
    assert plan["migrations_would_run"] == "yes" and plan["before"]["code_revision"] == first
    done = assert_ok(cli("upgrade", "--dir", host.dir, "--yes", "--json")).json()
    assert done["migrated"] is True and done["after"]["code_revision"] == second
    assert "upgrade_probe" in tables(host)
    later = post_job(host, "after the upgrade")
    # Rollback needs the old code first: pixsim-host never moves the operator's checkout.
    refused = cli("rollback", "--dir", host.dir, "--yes")
    assert refused.code == 2 and f"checkout {first}" in refused.stderr, str(refused)
    git(source, "checkout", "-q", first)
    assert_ok(cli("rollback", "--dir", host.dir, "--yes"))
    assert "upgrade_probe" not in tables(host)
    assert job_exists(host, kept) and not job_exists(host, later)


def test_failing_migration_of_a_new_revision_leaves_the_database(
        checkout_host: tuple[Host, Path, str]) -> None:
    host, source, first = checkout_host
    kept = post_job(host, "before the upgrade")
    (source / MIGRATION).write_text("SELECT no_such_function_in_this_schema();\n")
    commit(source, "a broken migration")
    failed = cli("upgrade", "--dir", host.dir, "--yes")
    assert failed.code == 1, str(failed)
    line = next(line for line in failed.stderr.splitlines() if line.startswith("Error: "))
    assert "no_such_function_in_this_schema" in line, line
    assert "the database, Redis and PIXSIM_HOME were restored from the safety backup; the host is " \
           "stopped" in line, line
    assert f"git -C {source} checkout {first}" in line and "safety backup " in line, line
    git(source, "checkout", "-q", first)
    host.up()
    assert job_exists(host, kept)
