"""`upgrade` without an engine: PostgreSQL major versions from tags and server versions, the
refusal of a major change with its supported path, what a dry run leaves (nothing), and the
history a rollback reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from unit_helpers import MakeHost, run_cli

from pixsim_host.config import HostConfig, load_config
from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.upgrade import (
    major_from_image,
    major_from_version,
    plan_rollback,
    postgres_majors,
)


@pytest.mark.parametrize(("image", "major"), [
    ("pgvector/pgvector:pg16", "16"),
    ("pgvector/pgvector:0.8.0-pg17", "17"),  # the pgvector release leads, the pg part tells
    ("my/pg:0.8.0", None),
    ("postgres:16-alpine", "16"),
    ("postgres:16.3", "16"),
    ("postgres:16.3-bookworm", "16"),
    ("postgres:17", "17"),
    ("postgres:9.6", "9.6"),
    ("postgres:9.6.24-alpine", "9.6"),
    ("postgres:9", None),
    ("postgres:latest", None),
    ("postgres", None),
    ("registry.example:5000/team/postgres:15", "15"),
    ("postgres:16@sha256:" + "0" * 64, "16"),
])
def test_major_from_image_tag(image: str, major: str | None) -> None:
    assert major_from_image(image) == major


def test_major_from_server_version() -> None:
    assert major_from_version("16.4 (Debian 16.4-1.pgdg120+2)") == "16"
    assert major_from_version("18.1") == "18"
    assert major_from_version("9.6.24") == "9.6"
    assert major_from_version("") is None


def test_the_running_server_is_believed_before_the_tag() -> None:
    majors = postgres_majors("my/postgres:custom", "postgres:17.2", "16.4 (Debian)")
    assert (majors.old, majors.new) == ("16", "17")
    assert "SHOW server_version" in majors.old_source and "17.2" in majors.new_source
    unknown = postgres_majors("my/postgres:custom", "my/postgres:next", None)
    assert (unknown.old, unknown.new, unknown.old_source) == (None, None, "unknown")


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != "lock"}


def test_a_major_change_is_refused_with_the_path(make_host: MakeHost) -> None:
    host = make_host("--runtime", "docker")
    before = _snapshot(host)
    result = run_cli("upgrade", "--dir", str(host), "--postgres-image", "postgres:17", "--yes")
    assert result.returncode == 2, str(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: postgres:17 is PostgreSQL 17 and this "
                                                   "host's database is PostgreSQL 16"), str(result)
    for step in ("pixsim-host backup", "down", "--volumes", "config set database.image postgres:17",
                 "pixsim-host up", "pixsim-host restore"):
        assert step in lines[0], step
    assert "nothing was changed" in lines[0]
    assert _snapshot(host) == before


def test_dry_run_changes_nothing(make_host: MakeHost) -> None:
    host = make_host("--runtime", "docker")
    before = _snapshot(host)
    result = run_cli("upgrade", "--dir", str(host), "--redis-image", "redis:7.4-alpine", "--dry-run",
                     "--json")
    assert result.returncode == 0, str(result)
    plan = json.loads(result.stdout)
    assert plan["dry_run"] is True
    assert plan["changes"] == {"redis.image": {"old": "redis:7-alpine", "new": "redis:7.4-alpine"}}
    assert _snapshot(host) == before
    assert not (host / ".pixsim-host" / "upgrades").exists()
    assert not (host / ".pixsim-host" / "upgrades.json").exists()


def test_without_yes_or_a_change_nothing_runs(make_host: MakeHost) -> None:
    host = make_host("--runtime", "docker")
    same = run_cli("upgrade", "--dir", str(host), "--yes")
    assert same.returncode == 2 and "nothing to upgrade" in same.stderr, str(same)
    unconfirmed = run_cli("upgrade", "--dir", str(host), "--image", "my/backend:2")
    assert unconfirmed.returncode == 2 and "pass --yes" in unconfirmed.stderr, str(unconfirmed)
    assert not (host / ".pixsim-host" / "upgrades").exists()


def test_native_hosts_take_no_image_options(make_host: MakeHost) -> None:
    host = make_host("--runtime", "native")
    result = run_cli("upgrade", "--dir", str(host), "--image", "my/backend:2", "--dry-run")
    assert result.returncode == 2 and "runs no images" in result.stderr, str(result)


def test_rollback_needs_a_successful_upgrade(make_host: MakeHost) -> None:
    host = make_host("--runtime", "docker")
    none = run_cli("rollback", "--dir", str(host), "--yes")
    assert none.returncode == 2 and "no successful upgrade to roll back" in none.stderr, str(none)
    # A failed upgrade is not one to roll back; a succeeded one is, once.
    config = (host / "pixsim-host.yaml").read_text()
    current = "pixsim-host/reference-backend:"
    assert current in config
    history = {"upgrades": [
        {"id": "1", "kind": "upgrade", "outcome": "failed", "migrated": True,
         "changes": {"backend.image": {"old": "a:1", "new": "b:2"}}},
    ]}
    (host / ".pixsim-host" / "upgrades.json").write_text(json.dumps(history))
    with pytest.raises(HostError, match="no successful upgrade"):
        plan_rollback(HostDir(host), _config(host))
    history["upgrades"].append({"id": "2", "kind": "upgrade", "outcome": "succeeded", "migrated": False,
                                "changes": {"redis.image": {"old": "redis:7.2-alpine",
                                                            "new": "redis:7-alpine"}}})
    (host / ".pixsim-host" / "upgrades.json").write_text(json.dumps(history))
    plan = plan_rollback(HostDir(host), _config(host))
    assert plan.config.redis.image == "redis:7.2-alpine" and not plan.restore_database
    # Changed since the upgrade: rollback would undo more than it, so it refuses.
    run_cli("config", "set", "redis.image", "redis:7.4-alpine", "--dir", str(host))
    with pytest.raises(HostError, match="changed since"):
        plan_rollback(HostDir(host), _config(host))
    # Migrated, and the safety backup is gone: the old schema cannot come back.
    run_cli("config", "set", "redis.image", "redis:7-alpine", "--dir", str(host))
    history["upgrades"][-1].update(migrated=True, safety_backup=str(host / "gone.tar.gz"))
    (host / ".pixsim-host" / "upgrades.json").write_text(json.dumps(history))
    with pytest.raises(HostError, match="safety backup .* is gone"):
        plan_rollback(HostDir(host), _config(host))


def _config(host: Path) -> HostConfig:
    return load_config(host / "pixsim-host.yaml")


def test_an_unfinished_upgrade_blocks_the_next_and_rollback_finishes_it(make_host: MakeHost) -> None:
    host = make_host("--runtime", "docker")
    safety = host / ".pixsim-host" / "upgrades" / "20260101T000000Z.tar.gz"
    safety.parent.mkdir(parents=True)
    safety.write_bytes(b"")
    # Killed after the new config was saved (the redis image is the new one now).
    history = {"upgrades": [{"id": "1", "kind": "upgrade", "outcome": "running",
                             "safety_backup": str(safety), "migrations_state_before": None,
                             "changes": {"redis.image": {"old": "redis:7.2-alpine",
                                                         "new": "redis:7-alpine"}}}]}
    (host / ".pixsim-host" / "upgrades.json").write_text(json.dumps(history))
    refused = run_cli("upgrade", "--dir", str(host), "--image", "my/backend:2", "--yes")
    assert refused.returncode == 1, str(refused)
    assert "did not finish" in refused.stderr and "pixsim-host rollback" in refused.stderr
    assert str(safety) in refused.stderr
    plan = run_cli("rollback", "--dir", str(host), "--dry-run", "--json")
    assert plan.returncode == 0, str(plan)
    document = json.loads(plan.stdout)
    # Whether it migrated is unknown: the database comes back from the safety backup.
    assert document["unfinished"] is True and document["restores_database"] is True
    assert document["changes"] == {"redis.image": {"old": "redis:7-alpine", "new": "redis:7.2-alpine"}}


def test_a_kubernetes_host_is_pointed_to_its_rollout(make_host: MakeHost) -> None:
    host = make_host("--runtime", "kubernetes")
    result = run_cli("upgrade", "--dir", str(host), "--image", "my/backend:2", "--dry-run")
    assert result.returncode == 2 and "safety backup" in result.stderr, str(result)
    assert "pixsim-host up" in result.stderr
