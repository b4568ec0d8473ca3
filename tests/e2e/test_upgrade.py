"""`upgrade` and `rollback` on a real engine: new backend versions built locally (never
pulled) from the reference backend's image, one that works, one that carries a broken
migration, one whose backend exits; the host's data is checked through its own API after
each, and the database's schema through psql.

The tests share one host and run in order: each starts from the state the previous left
(that is what an operator's host goes through).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from e2e_helpers import (
    Host,
    Run,
    assert_answers_as,
    assert_ok,
    cli,
    containers,
    host_maker,
    registry_home,  # noqa: F401 (an autouse fixture: this module's own host registry)
)

from pixsim_host.config import REFERENCE_BACKEND_IMAGE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from cli_helpers import check_schema  # noqa: E402

PROBE_TABLE = "upgrade_probe"
# A new migration of the "next version": it leaves a table behind, so a restore shows.
GOOD_MIGRATION = f"CREATE TABLE {PROBE_TABLE} (id integer);"
BROKEN_MIGRATION = "SELECT no_such_function_in_this_schema();"
TRACE = "left-by-the-failed-version"
LEAVE_TRACES = "; ".join([
    "import os, pathlib",
    "from pixsim_reference_backend.redis_client import Redis",
    f"pathlib.Path(os.environ['PIXSIM_HOME'], 'uploads', '{TRACE}.txt').write_text('x')",
    f"Redis(os.environ['REDIS_URL']).command('SET', '{TRACE}', 'x')",
    "raise SystemExit(1)",
])


def _build(client: docker.DockerClient, tag: str, *, migration: str | None = None,
           failing_backend: bool = False) -> str:
    """A "next version" of the reference backend: its image plus a label, maybe a migration
    (a file in the package's migrations/main/), maybe a backend that exits at once."""
    lines = [f"FROM {REFERENCE_BACKEND_IMAGE}", f'LABEL org.pixsim-host.test.version="{tag}"']
    if migration is not None:
        lines += ["USER root",
                  f"RUN printf '%s\\n' '{migration}' > "
                  "/app/pixsim_reference_backend/migrations/main/0099_next.sql",
                  "USER pixsim"]
    if failing_backend:
        # Before it dies it leaves a file in PIXSIM_HOME and a key in Redis: the way back
        # must take those away with the database.
        lines.append(f'CMD ["python", "-c", "{LEAVE_TRACES}"]')
    image, _ = client.images.build(fileobj=io.BytesIO("\n".join(lines).encode()), tag=tag, rm=True,
                                   pull=False)
    return str(image.id)


@pytest.fixture(scope="module")
def images(docker_client: docker.DockerClient) -> Iterator[dict[str, tuple[str, str]]]:
    """tag and id of each "next version", removed at the end."""
    suffix = uuid.uuid4().hex[:8]
    built: dict[str, tuple[str, str]] = {}
    try:
        for name, options in (("good", {"migration": GOOD_MIGRATION}),
                              ("broken-migration", {"migration": BROKEN_MIGRATION}),
                              ("failing-backend", {"migration": GOOD_MIGRATION, "failing_backend": True})):
            tag = f"pixsim-host/reference-backend:next-{name}-{suffix}"
            built[name] = (tag, _build(docker_client, tag, **options))  # type: ignore[arg-type]
        yield built
    finally:
        for tag, _ in built.values():
            with contextlib.suppress(docker.errors.DockerException):
                docker_client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def host(docker_client: docker.DockerClient, require_images: Callable[..., None],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    maker = host_maker(docker_client, require_images, tmp_path_factory.mktemp("upgrade"), Host)
    make = next(maker)
    made = make()
    made.up_ok()
    yield made
    next(maker, None)  # tears the host down and checks nothing is left


def backend_image(client: docker.DockerClient, host: Host) -> str:
    return str(containers(client, host)["backend"].attrs["Image"])


def config_image(host: Host) -> str:
    return str(yaml.safe_load(host.config_file.read_text())["backend"]["image"])


def tables(host: Host) -> set[str]:
    run = cli("exec", "--dir", host.dir, "db", "--", "psql", "-At", "-c",
              "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", home=host.home)
    assert_ok(run)
    return {line.strip() for line in run.stdout.splitlines() if line.strip()}


def put_upload(host: Host, name: str, body: bytes) -> None:
    with host.http() as http:
        answer = http.put(f"/api/v1/uploads/{name}", content=body)
    assert answer.status_code in (200, 201), answer.text


def post_job(host: Host, text: str) -> str:
    with host.http() as http:
        answer = http.post("/api/v1/jobs", json={"kind": "render", "text": text})
    assert answer.status_code in (200, 201, 202), answer.text
    return str(answer.json()["id"])


def assert_data_kept(host: Host, job_id: str, upload: str, body: bytes) -> None:
    with host.http() as http:
        job = http.get(f"/api/v1/jobs/{job_id}")
        stored = http.get(f"/api/v1/uploads/{upload}")
    assert job.status_code == 200, job.text
    assert str(job.json()["id"]) == job_id
    assert stored.status_code == 200 and stored.content == body, stored.text


def history(host: Host) -> list[dict[str, Any]]:


    entries: list[dict[str, Any]] = json.loads((host.dir / ".pixsim-host" / "upgrades.json")
                                               .read_text())["upgrades"]
    return entries


def registry_versions(host: Host) -> dict[str, Any]:
    """The versions the host registry records for the host (its last upgrade or rollback)."""
    listed = assert_ok(cli("hosts", "list", "--json", home=host.home)).json()
    check_schema("hosts-list", listed)
    entry = next(h for h in listed["hosts"] if h["host_id"] == host.host_id)
    versions: dict[str, Any] = entry["versions"]
    return versions


def error_line(run: Run) -> str:
    lines = [line for line in run.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, run.stderr
    return lines[0]


def timed(run: Callable[[], Run]) -> tuple[Run, float]:
    started = time.monotonic()
    result = run()
    return result, time.monotonic() - started


@pytest.fixture(scope="module")
def data(host: Host) -> dict[str, str]:
    body = b"kept across versions"
    put_upload(host, "before-upgrade.txt", body)
    return {"job": post_job(host, "made before any upgrade"), "upload": "before-upgrade.txt",
            "body": body.decode()}


def test_dry_run_names_the_change_and_changes_nothing(docker_client: docker.DockerClient, host: Host,
                                                       images: dict[str, tuple[str, str]],
                                                       data: dict[str, str]) -> None:
    tag, image_id = images["good"]
    config_before = host.config_file.read_bytes()
    running = backend_image(docker_client, host)
    plan = assert_ok(host.run("upgrade", "--image", tag, "--dry-run", "--json")).json()
    check_schema("upgrade", plan)
    assert plan["dry_run"] is True
    assert plan["changes"]["backend.image"] == {"old": REFERENCE_BACKEND_IMAGE, "new": tag}
    assert plan["new_image_ids"]["backend.image"] == image_id
    assert plan["before"]["image_ids"]["backend.image"] == running
    assert plan["migrations_would_run"] == "yes"
    assert host.config_file.read_bytes() == config_before
    assert backend_image(docker_client, host) == running
    assert not (host.dir / ".pixsim-host" / "upgrades").exists()
    # A major PostgreSQL change: the running server says which major the data is.
    refused = host.run("upgrade", "--postgres-image", "postgres:99.1", "--yes")
    assert refused.code == 2, str(refused)
    line = error_line(refused)
    # (The stand-in for pgvector/pgvector:pg16 runs a newer PostgreSQL: the server is believed.)
    assert re.search(r"postgres:99\.1 is PostgreSQL 99 and this host's database is PostgreSQL "
                     r"(\d+) \(from SHOW server_version in the running database \(\1\.", line), line
    assert host.config_file.read_bytes() == config_before


def test_broken_migration_is_rolled_back(docker_client: docker.DockerClient, host: Host,
                                         images: dict[str, tuple[str, str]],
                                         data: dict[str, str]) -> None:
    tag, _ = images["broken-migration"]
    running = backend_image(docker_client, host)
    failed, seconds = timed(lambda: host.run("upgrade", "--image", tag, "--yes"))
    print(f"failed upgrade (broken migration) rolled back in {seconds:.1f} s")
    assert failed.code == 1, str(failed)
    line = error_line(failed)
    assert line.startswith("Error: migration `"), line
    assert "no_such_function_in_this_schema" in line, line
    assert "the previous version was put back; the database, Redis and PIXSIM_HOME were restored " \
           "from the safety backup and the host is verified healthy again (safety backup " in line, line
    assert config_image(host) == REFERENCE_BACKEND_IMAGE
    assert backend_image(docker_client, host) == running
    assert_answers_as(host)
    assert_data_kept(host, data["job"], data["upload"], data["body"].encode())
    entry = history(host)[-1]
    assert (entry["outcome"], entry["migrated"], entry["rolled_back"]) == ("failed", True, True)
    assert Path(entry["safety_backup"]).stat().st_mode & 0o777 == 0o600


def test_failing_backend_is_rolled_back_and_its_migration_undone(
        docker_client: docker.DockerClient, host: Host, images: dict[str, tuple[str, str]],
        data: dict[str, str]) -> None:
    tag, _ = images["failing-backend"]
    running = backend_image(docker_client, host)
    failed, seconds = timed(lambda: host.run("upgrade", "--image", tag, "--yes", "--timeout", "60"))
    print(f"failed upgrade (backend exits) rolled back in {seconds:.1f} s")
    assert failed.code == 1, str(failed)
    line = error_line(failed)
    assert "the previous version was put back; the database, Redis and PIXSIM_HOME were restored " \
           "from the safety backup" in line, line
    assert config_image(host) == REFERENCE_BACKEND_IMAGE
    assert backend_image(docker_client, host) == running
    # Its migration ran, and the restore took it away again; so went what it wrote elsewhere.
    assert PROBE_TABLE not in tables(host)
    home = assert_ok(cli("exec", "--dir", host.dir, "backend", "--", "ls", "/data/uploads", home=host.home))
    assert f"{TRACE}.txt" not in home.stdout and "before-upgrade.txt" in home.stdout, home.stdout
    key = assert_ok(cli("exec", "--dir", host.dir, "redis", "--", "redis-cli", "EXISTS", TRACE,
                        home=host.home))
    assert key.stdout.strip() == "0", key.stdout
    assert_answers_as(host)
    assert_data_kept(host, data["job"], data["upload"], data["body"].encode())


def test_upgrade_then_rollback(docker_client: docker.DockerClient, host: Host,
                               images: dict[str, tuple[str, str]], data: dict[str, str]) -> None:
    tag, image_id = images["good"]
    old_id = backend_image(docker_client, host)
    run, seconds = timed(lambda: host.run("upgrade", "--image", tag, "--yes", "--json"))
    print(f"upgrade (with a migration) done and verified in {seconds:.1f} s")
    done = assert_ok(run).json()
    check_schema("upgrade", done)
    assert done["outcome"] == "succeeded" and done["migrated"] is True
    safety = Path(done["safety_backup"])
    assert safety.parent == host.dir / ".pixsim-host" / "upgrades"
    assert safety.stat().st_mode & 0o777 == 0o600
    assert done["before"]["image_ids"]["backend.image"] == old_id
    assert done["after"]["image_ids"]["backend.image"] == image_id
    assert backend_image(docker_client, host) == image_id
    assert config_image(host) == tag
    assert PROBE_TABLE in tables(host)
    assert_answers_as(host)
    assert_data_kept(host, data["job"], data["upload"], data["body"].encode())
    last = history(host)[-1]
    assert registry_versions(host) == {
        "kind": "upgrade", "id": last["id"], "finished_at": last["finished_at"],
        "before": {"images": done["before"]["images"], "code_revision": None},
        "after": {"images": done["after"]["images"], "code_revision": None}}
    assert done["after"]["images"]["backend.image"] == tag

    plan = assert_ok(host.run("rollback", "--dry-run", "--json")).json()
    check_schema("rollback", plan)
    assert plan["restores_database"] is True and backend_image(docker_client, host) == image_id
    run, seconds = timed(lambda: host.run("rollback", "--yes", "--json"))
    print(f"rollback (database restored) done and verified in {seconds:.1f} s")
    back = assert_ok(run).json()
    check_schema("rollback", back)
    assert back["outcome"] == "succeeded"
    assert backend_image(docker_client, host) == old_id
    assert config_image(host) == REFERENCE_BACKEND_IMAGE
    assert PROBE_TABLE not in tables(host)
    # The defaults the upgrade wrote down for the new image are taken out again.
    backend = yaml.safe_load(host.config_file.read_text())["backend"]
    assert backend.get("workers") is None and backend.get("migrate") is None, backend
    assert_answers_as(host)
    assert_data_kept(host, data["job"], data["upload"], data["body"].encode())
    assert [e["kind"] for e in history(host)][-2:] == ["upgrade", "rollback"]
    recorded = registry_versions(host)
    assert (recorded["kind"], recorded["before"]["images"]["backend.image"],
            recorded["after"]["images"]["backend.image"]) == ("rollback", tag, REFERENCE_BACKEND_IMAGE)
    # A bundle carries the versions the host went through, without the safety backups' paths.
    bundle = host.dir.parent / f"after-rollback-{uuid.uuid4().hex[:6]}.tar.gz"
    assert_ok(host.run("backup", "-o", bundle))
    try:
        with tarfile.open(bundle) as archive:
            member = archive.extractfile("manifest.json")
            assert member is not None
            manifest = json.load(member)
    finally:
        bundle.unlink()
    assert [(u["kind"], u["after"]["images"]["backend.image"]) for u in manifest["upgrades"]][-2:] \
        == [("upgrade", tag), ("rollback", REFERENCE_BACKEND_IMAGE)]
    assert "upgrades" + "/" not in json.dumps(manifest["upgrades"]), manifest["upgrades"]
    # Nothing left to roll back.
    again = host.run("rollback", "--yes")
    assert again.code == 2 and "no successful upgrade to roll back" in again.stderr, str(again)


def test_an_upgrade_killed_halfway_is_finished_by_rollback(
        docker_client: docker.DockerClient, host: Host, images: dict[str, tuple[str, str]],
        data: dict[str, str]) -> None:


    tag, image_id = images["good"]
    old_id = backend_image(docker_client, host)
    assert_ok(host.run("upgrade", "--image", tag, "--yes"))
    assert backend_image(docker_client, host) == image_id and PROBE_TABLE in tables(host)
    # As if the process had been SIGKILLed after the new backend started: never recorded done.
    path = host.dir / ".pixsim-host" / "upgrades.json"
    recorded = json.loads(path.read_text())
    recorded["upgrades"][-1].update(outcome="running")
    recorded["upgrades"][-1].pop("migrated", None)
    path.write_text(json.dumps(recorded))
    refused = host.run("upgrade", "--image", images["failing-backend"][0], "--yes")
    assert refused.code == 1 and "did not finish" in error_line(refused), str(refused)
    back = assert_ok(host.run("rollback", "--yes", "--json")).json()
    assert back["outcome"] == "succeeded" and back["migrated"] is True
    assert backend_image(docker_client, host) == old_id
    assert config_image(host) == REFERENCE_BACKEND_IMAGE
    assert PROBE_TABLE not in tables(host)
    assert_answers_as(host)
    assert_data_kept(host, data["job"], data["upload"], data["body"].encode())
    assert history(host)[-2]["rolled_back"] is True
    # Finished: a new upgrade is possible again.
    assert_ok(host.run("upgrade", "--image", tag, "--dry-run"))
