"""``backup``, ``restore`` and ``clone`` end to end, on a real Docker engine.

The story the issue asks for, as a user runs it (``python -m pixsim_host ...`` in a
subprocess, no stdin, every output checked for secrets): write worlds (Postgres) and keys
(Redis) through a host, back it up, destroy the host with its volumes, restore the bundle
into a new directory and find the same host_id and the data; clone the same bundle and run
clone and origin side by side, each answering as itself. Along the way: a restore while the
origin's Docker project still exists is refused and writes nothing, a backup of a host that
is down is refused, restoring over an existing host needs ``--yes`` and takes a safety
backup first, and ``--include-secrets`` makes a private bundle whose restore keeps the .env.

One module-scoped story (``moved``) is built once; the tests read what it recorded, and the
ones that change it run in file order (the clone, then restoring over the restored host).
Every host is torn down with ``down --volumes --yes``, after which nothing labelled with its
Docker project may remain. The hostile-bundle refusals that need no engine are in
``tests/unit/test_bundle_safety.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import stat
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest
from e2e_helpers import (
    IMAGES,
    SECRET_NAMES,
    Host,
    Run,
    assert_answers_as,
    assert_clean_failure,
    assert_ok,
    cli,
    containers,
    destroy,
    destroy_all,
    project_resources,
    registry_home,  # noqa: F401 (an autouse fixture: this module's own host registry)
    unique_name,
)

from pixsim_host import __version__

# The reference backend's built-in plugins (game_npcs is both a feature and a route plugin).
BUILTIN_PLUGINS = ["admin_plugins", "dialogue_extras", "game_npcs", "game_stealth", "romance", "stats_basic"]
NAME_PREFIX = "e2e-bk"


# ---- hosts ----------------------------------------------------------------------------------


def container_state(client: docker.DockerClient, host: Host) -> dict[str, tuple[str, str, str]]:
    """(id, status, start time) per service: equal before and after means nothing touched them."""
    return {service: (c.id, c.status, c.attrs["State"]["StartedAt"])
            for service, c in containers(client, host).items()}


def psql(client: docker.DockerClient, host: Host, sql: str,
         env: dict[str, str] | None = None, dsn: str | None = None) -> tuple[int, str]:
    """Run one statement with psql inside the host's own db container."""
    db = containers(client, host)["db"]
    target = ["-d", dsn] if dsn else ["-U", "pixsim", "-d", "pixsim"]
    code, out = db.exec_run(["psql", "-X", "-tA", *target, "-c", sql], environment=env or {})
    return int(code), out.decode("utf-8", "replace").strip()


# ---- data written through the backend -------------------------------------------------------


@dataclass
class Data:
    """Worlds (Postgres) and keys (Redis) written through a host's backend."""

    worlds: list[dict[str, Any]]
    keys: dict[str, str]


def write_data(host: Host, tag: str, count: int = 2) -> Data:
    worlds, keys = [], {}
    with host.http() as http:
        for n in range(count):
            created = http.post("/api/v1/worlds", json={
                "name": f"world {tag} {n} {uuid.uuid4().hex[:8]}",
                "meta": {"tag": tag, "n": n, "stats_config": {"hp": {"max": 10 + n}}},
            })
            assert created.status_code == 201, created.text
            worlds.append(created.json())
            # Short keys: Redis stores them uncompressed in its dump, so they can be looked for.
            key, value = f"{tag[:3]}{uuid.uuid4().hex[:8]}", f"{tag} value {n} — ünïcode {uuid.uuid4().hex}"
            put = http.put(f"/api/v1/kv/{key}", content=value.encode())
            assert put.status_code == 200, put.text
            keys[key] = value
    return Data(worlds, keys)


def world_names(host: Host) -> list[str]:
    with host.http() as http:
        listed = http.get("/api/v1/worlds")
    assert listed.status_code == 200, listed.text
    return [str(w["name"]) for w in listed.json()["worlds"]]


def assert_has(host: Host, data: Data) -> None:
    names = world_names(host)
    with host.http() as http:
        for world in data.worlds:
            assert world["name"] in names, f"{world['name']!r} missing on {host.name}: {names}"
            got = http.get(f"/api/v1/worlds/{world['id']}")
            assert got.status_code == 200, got.text
            assert got.json() == world
        for key, value in data.keys.items():
            kv = http.get(f"/api/v1/kv/{key}")
            assert kv.status_code == 200, f"{key} missing on {host.name}: {kv.text}"
            assert kv.json() == {"key": key, "value": value}


def assert_lacks(host: Host, data: Data) -> None:
    names = world_names(host)
    with host.http() as http:
        for world in data.worlds:
            assert world["name"] not in names, f"{world['name']!r} leaked into {host.name}"
        for key in data.keys:
            assert http.get(f"/api/v1/kv/{key}").status_code == 404, f"{key} leaked into {host.name}"


# ---- bundles --------------------------------------------------------------------------------


def bundle_members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    """Every member of a bundle, in order, with its bytes (test bundles are small)."""
    out = []
    with tarfile.open(path, "r:gz") as archive:
        for member in archive.getmembers():
            handle = archive.extractfile(member) if member.isfile() else None
            out.append((member, handle.read() if handle else b""))
    return out


def bundle_manifest(path: Path) -> dict[str, Any]:
    first, data = bundle_members(path)[0]
    assert first.name == "manifest.json", first.name
    manifest: dict[str, Any] = json.loads(data)
    return manifest


def new_files(directory: Path, before: set[str]) -> list[str]:
    return sorted(set(os.listdir(directory)) - before) if directory.is_dir() else []


# ---- the story ------------------------------------------------------------------------------


@dataclass(repr=False)
class Moved:
    """A host backed up, destroyed with its volumes and restored elsewhere, and what was seen."""

    root: Path
    bundle: Path
    origin: Host  # the host as it was before (its directory is gone from Docker)
    restored: Host  # the same host_id, restored into another directory, running
    data: Data  # written before the backup
    version: dict[str, Any]  # /api/v1/version before the backup
    plugins: dict[str, Any]  # /api/v1/admin/plugins/list before the backup
    started: datetime
    backup_run: Run
    restore_run: Run
    refused_restore: Run
    refused_target: Path
    refused_tmp: Path
    origin_before_refusal: dict[str, Any]
    origin_after_refusal: dict[str, Any]
    resources_before_refusal: dict[str, list[str]]
    resources_after_refusal: dict[str, list[str]]
    down_backup: Run
    down_backup_output: Path
    root_before_down_backup: set[str]
    root_after_down_backup: set[str]
    owned: dict[str, Host]  # Docker project -> the host directory that owns it now


@pytest.fixture(scope="module")
def moved(docker_client: docker.DockerClient, require_images: Callable[..., None],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moved]:
    require_images(*IMAGES)
    root = tmp_path_factory.mktemp("backup")
    owned: dict[str, Host] = {}
    try:
        origin = Host.init(root, prefix=NAME_PREFIX, dirname="origin")
        owned[origin.project] = origin
        origin.up_ok()
        data = write_data(origin, "before-backup")
        with origin.http() as http:
            version = http.get("/api/v1/version").json()
            plugins = http.get("/api/v1/admin/plugins/list").json()
        started = datetime.now(UTC).replace(microsecond=0)
        bundle = root / "b.tar.gz"
        backup_run = assert_ok(origin.run("backup", "-o", bundle, "--json"))

        # The origin's Docker project still exists here: a restore must not adopt it.
        refused_target, refused_tmp = root / "restore-while-origin-exists", root / "tmp-refused"
        refused_tmp.mkdir()
        origin_before = container_state(docker_client, origin)
        resources_before = project_resources(docker_client, origin.project)
        refused = cli("restore", bundle, "--dir", refused_target, tmpdir=refused_tmp)
        origin_after = container_state(docker_client, origin)
        resources_after = project_resources(docker_client, origin.project)

        # A host that is down has no database to dump.
        assert_ok(origin.run("down"))
        down_output = root / "down.tar.gz"
        root_before = set(os.listdir(root))
        down_backup = origin.run("backup", "-o", down_output)
        root_after = set(os.listdir(root))

        destroy(docker_client, origin)
        del owned[origin.project]

        restore_run = cli("restore", bundle, "--dir", root / "restored")
        if (root / "restored" / "pixsim-host.yaml").is_file():
            restored = Host.load(root / "restored")
            owned[restored.project] = restored
        assert_ok(restore_run)
        yield Moved(
            root=root, bundle=bundle, origin=origin, restored=restored, data=data,
            version=version, plugins=plugins, started=started, backup_run=backup_run,
            restore_run=restore_run, refused_restore=refused, refused_target=refused_target,
            refused_tmp=refused_tmp, origin_before_refusal=origin_before,
            origin_after_refusal=origin_after, resources_before_refusal=resources_before,
            resources_after_refusal=resources_after, down_backup=down_backup,
            down_backup_output=down_output, root_before_down_backup=root_before,
            root_after_down_backup=root_after, owned=owned,
        )
    finally:
        destroy_all(docker_client, list(owned.values()))


# ---- backup ---------------------------------------------------------------------------------


@pytest.mark.engine
def test_backup_manifest_records_origin_versions_plugins_and_checksums(moved: Moved) -> None:
    origin, bundle = moved.origin, moved.bundle
    report = moved.backup_run.json()
    assert report["path"] == str(bundle)
    assert report["size_bytes"] == bundle.stat().st_size
    manifest = report["manifest"]
    assert manifest == bundle_manifest(bundle), "--json and the bundle's manifest.json differ"

    assert manifest["format"] == "pixsim-host-bundle"
    assert manifest["format_version"] == 1
    assert manifest["pixsim_host_version"] == __version__
    assert manifest["origin"] == {"host_id": origin.host_id, "name": origin.name,
                                  "model": "self", "project": origin.project}
    created = datetime.fromisoformat(manifest["created_at"])
    assert moved.started <= created <= datetime.now(UTC), manifest["created_at"]
    # The backend's own /api/v1/version answer (server_time is the moment it was asked).
    assert {k: v for k, v in manifest["backend_version"].items() if k != "server_time"} == {
        k: v for k, v in moved.version.items() if k != "server_time"}
    assert manifest["backend_version"]["api_version"] == "0.1.0"  # the application's version
    assert manifest["server_info"]["server_id"] == origin.host_id
    enabled = sorted({p["id"] for p in [*moved.plugins["feature_plugins"], *moved.plugins["route_plugins"]]
                      if p["enabled"]})
    assert enabled == BUILTIN_PLUGINS
    assert manifest["plugins_enabled"] == enabled
    assert manifest["includes_secrets"] is False

    # A sha256 and size for every member, and no member the manifest does not list.
    members = bundle_members(bundle)
    assert members[0][0].name == "manifest.json"
    files = {info.name: data for info, data in members[1:] if info.isfile()}
    assert all(info.isfile() or info.isdir() for info, _ in members), "links or devices in a bundle"
    assert sorted(files) == sorted(manifest["members"])
    assert set(files) >= {"database.dump", "redis/dump.rdb", "pixsim-host.yaml"}
    for name, data in files.items():
        assert manifest["members"][name] == {"sha256": hashlib.sha256(data).hexdigest(),
                                             "size": len(data)}, name
    assert files["database.dump"].startswith(b"PGDMP"), "not a pg_dump custom-format archive"
    assert files["redis/dump.rdb"].startswith(b"REDIS"), "not a Redis RDB file"
    assert files["pixsim-host.yaml"] == (origin.dir / "pixsim-host.yaml").read_bytes()
    for key in moved.data.keys:
        assert key.encode() in files["redis/dump.rdb"], f"{key} not in the Redis dump"


@pytest.mark.engine
def test_backup_without_include_secrets_holds_no_secret(moved: Moved) -> None:
    names = [info.name for info, _ in bundle_members(moved.bundle)]
    assert not any(n.endswith(".env") or n == "secrets.env" for n in names), names
    blobs = [data for _, data in bundle_members(moved.bundle)]
    blobs.append(gzip.decompress(moved.bundle.read_bytes()))  # headers and padding too
    for secret_name in SECRET_NAMES:
        value = moved.origin.secrets[secret_name]
        assert len(value) >= 20
        assert not any(value.encode() in blob for blob in blobs), f"{secret_name} is in the bundle"
    text = moved.backup_run.output
    assert "Traceback" not in text


@pytest.mark.engine
def test_backup_of_a_host_that_is_down_is_refused(moved: Moved) -> None:
    run = moved.down_backup
    assert_clean_failure(run)
    assert "not running" in run.stderr and "pixsim-host up" in run.stderr, str(run)
    assert not moved.down_backup_output.exists()
    assert moved.root_after_down_backup == moved.root_before_down_backup, "a refused backup wrote files"


# ---- restore --------------------------------------------------------------------------------


@pytest.mark.engine
def test_restore_while_the_origin_project_exists_is_refused(moved: Moved) -> None:
    run = moved.refused_restore
    assert_clean_failure(run)
    # Checked before any data is loaded: the origin, still running, holds the port; the
    # message names it and both ways on (stop it there, or clone a second host).
    assert "held by this same host" in run.stderr and str(moved.origin.dir) in run.stderr, str(run)
    assert f"pixsim-host down --dir {moved.origin.dir}" in run.stderr, str(run)
    assert "pixsim-host clone" in run.stderr, str(run)
    assert not moved.refused_target.exists(), "a refused restore created its directory"
    assert os.listdir(moved.refused_tmp) == [], "a refused restore left its staging directory"
    # The origin's containers and volumes were not touched.
    assert moved.origin_after_refusal == moved.origin_before_refusal
    assert all(status == "running" for _, status, _ in moved.origin_after_refusal.values())
    assert moved.resources_after_refusal == moved.resources_before_refusal


@pytest.mark.engine
def test_restore_brings_back_the_same_host_and_its_data(moved: Moved,
                                                        docker_client: docker.DockerClient) -> None:
    origin, restored = moved.origin, moved.restored
    assert f"Restored host {origin.name!r} ({origin.host_id})" in moved.restore_run.stdout
    assert "verified" in moved.restore_run.stdout
    # The same host: host_id in its config and in what the backend says at its URL.
    assert restored.host_id == origin.host_id
    assert restored.config["lineage"] == []
    assert (restored.name, restored.project, restored.port) == (origin.name, origin.project, origin.port)
    assert_answers_as(restored)
    assert_has(restored, moved.data)
    code, stored = psql(docker_client, restored, "SELECT host_id FROM pixsim_host_identity")
    assert (code, stored) == (0, origin.host_id)
    status = restored.run("status")
    assert status.code == 0, str(status)


@pytest.mark.engine
def test_restore_without_secrets_makes_new_ones_that_the_database_accepts(
        moved: Moved, docker_client: docker.DockerClient) -> None:
    old, new = moved.origin.secrets, moved.restored.secrets
    for name in SECRET_NAMES:
        assert new[name] and new[name] != old[name], f"{name} was not regenerated"
    assert stat.S_IMODE((moved.restored.dir / ".env").stat().st_mode) == 0o600
    # The backend connects with the new password (health says so). And over the host's own
    # network (loopback inside the container is trust), the role takes the new password and
    # no longer the old one.
    assert_answers_as(moved.restored)
    db = containers(docker_client, moved.restored)["db"]
    address = next(n["IPAddress"] for n in db.attrs["NetworkSettings"]["Networks"].values()
                   if n.get("IPAddress"))
    dsn = f"postgresql://pixsim@{address}:5432/pixsim"
    ok = psql(docker_client, moved.restored, "SELECT 1", {"PGPASSWORD": new["POSTGRES_PASSWORD"]}, dsn)
    assert ok == (0, "1"), ok
    code, out = psql(docker_client, moved.restored, "SELECT 1", {"PGPASSWORD": old["POSTGRES_PASSWORD"]},
                     dsn)
    assert code != 0 and "password authentication failed" in out, (code, out)


# ---- clone ----------------------------------------------------------------------------------


@pytest.mark.engine
def test_clone_runs_beside_its_origin_with_its_own_identity(moved: Moved,
                                                            docker_client: docker.DockerClient) -> None:
    origin = moved.restored
    origin_state = container_state(docker_client, origin)
    name = unique_name(NAME_PREFIX)
    target = moved.root / "clone"
    run = cli("clone", moved.bundle, "--dir", target, "--name", name)
    clone = Host.load(target) if (target / "pixsim-host.yaml").is_file() else None
    try:
        if clone is not None:
            moved.owned[clone.project] = clone
        assert_ok(run)
        assert clone is not None
        assert f"into new host {name!r} ({clone.host_id})" in run.stdout, str(run)
        # A new host: its own host_id, name, Docker project, port and secrets.
        assert uuid.UUID(clone.host_id).version == 4
        assert clone.host_id != origin.host_id
        assert clone.name == name and clone.project != origin.project
        assert clone.port != origin.port
        for secret in SECRET_NAMES:
            assert clone.secrets[secret] not in (origin.secrets[secret], moved.origin.secrets[secret])
        # Lineage: the origin it was cloned from.
        lineage = clone.config["lineage"]
        assert len(lineage) == 1, lineage
        assert lineage[0]["host_id"] == origin.host_id
        assert lineage[0]["name"] == origin.name
        assert lineage[0]["relation"] == "cloned-from"

        # Both up side by side, each answering as itself at its own URL.
        assert_answers_as(clone)
        assert_answers_as(origin)
        assert container_state(docker_client, origin) == origin_state, "cloning touched the origin"
        assert psql(docker_client, clone, "SELECT host_id FROM pixsim_host_identity") == (0, clone.host_id)
        assert psql(docker_client, origin, "SELECT host_id FROM pixsim_host_identity") == (0, origin.host_id)

        # The clone starts with the bundle's data, and from then on the two are separate.
        assert_has(clone, moved.data)
        on_clone, on_origin = write_data(clone, "clone-only"), write_data(origin, "origin-only")
        assert_has(clone, on_clone)
        assert_lacks(origin, on_clone)
        assert_has(origin, on_origin)
        assert_lacks(clone, on_origin)
        assert_has(origin, moved.data)
    finally:
        if clone is not None:
            destroy(docker_client, clone)
            del moved.owned[clone.project]
    # The origin is unaffected by the clone's removal.
    assert_answers_as(origin)


# ---- restore over an existing host (runs last: it replaces the restored host's data) --------


@pytest.mark.engine
def test_restore_over_the_existing_host_needs_yes_and_takes_a_safety_backup(
        moved: Moved, docker_client: docker.DockerClient) -> None:
    host = moved.restored
    later = write_data(host, "after-backup")
    backups = host.dir / "backups"
    before = set(os.listdir(backups)) if backups.is_dir() else set()
    env_before = (host.dir / ".env").read_bytes()

    refused = cli("restore", moved.bundle, "--dir", host.dir)
    assert_clean_failure(refused)
    assert "--yes" in refused.stderr and "safety backup" in refused.stderr, str(refused)
    assert new_files(backups, before) == [], "a refused restore took a backup"
    assert_has(host, later)

    run = assert_ok(cli("restore", moved.bundle, "--dir", host.dir, "--yes"))
    assert f"Restored host {host.name!r} ({host.host_id})" in run.stdout, str(run)
    assert "safety backup" in run.stderr, str(run)
    made = new_files(backups, before)
    assert len(made) == 1 and re.fullmatch(r"safety-before-restore-.+\.tar\.gz", made[0]), made
    safety = backups / made[0]
    assert stat.S_IMODE(safety.stat().st_mode) == 0o600  # it holds the host's secrets
    manifest = bundle_manifest(safety)
    assert manifest["origin"]["host_id"] == host.host_id
    assert manifest["includes_secrets"] is True
    # The safety backup holds the state being replaced, including what came after the bundle.
    redis_dump = dict((i.name, d) for i, d in bundle_members(safety))["redis/dump.rdb"]
    for key in later.keys:
        assert key.encode() in redis_dump, f"{key} not in the safety backup"

    # The data was replaced by the bundle's; the host is the same, with the same secrets.
    assert Host.load(host.dir).host_id == host.host_id
    assert (host.dir / ".env").read_bytes() == env_before
    assert_answers_as(host)
    assert_has(host, moved.data)
    assert_lacks(host, later)
    status = host.run("status")
    assert status.code == 0, str(status)


# ---- secrets in the bundle ------------------------------------------------------------------


@pytest.mark.engine
def test_include_secrets_bundle_is_private_and_restore_keeps_the_secrets(
        docker_client: docker.DockerClient, require_images: Callable[..., None], tmp_path: Path) -> None:
    require_images(*IMAGES)
    owned: dict[str, Host] = {}
    try:
        origin = Host.init(tmp_path, prefix=NAME_PREFIX, dirname="origin")
        owned[origin.project] = origin
        origin.up_ok()
        data = write_data(origin, "secret-bundle", count=1)
        bundle = tmp_path / "private.tar.gz"

        run = assert_ok(origin.run("backup", "-o", bundle, "--include-secrets"))
        assert "0600" in run.stdout and "secrets" in run.stdout, str(run)
        assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
        manifest = bundle_manifest(bundle)
        assert manifest["includes_secrets"] is True
        files = {i.name: d for i, d in bundle_members(bundle) if i.isfile()}
        assert "secrets.env" in manifest["members"]
        assert files["secrets.env"] == (origin.dir / ".env").read_bytes()

        destroy(docker_client, origin)
        del owned[origin.project]
        target = tmp_path / "restored"
        restore = cli("restore", bundle, "--dir", target)
        if (target / "pixsim-host.yaml").is_file():
            restored = Host.load(target)
            owned[restored.project] = restored
        assert_ok(restore)
        assert restored.host_id == origin.host_id
        assert {k: restored.secrets[k] for k in SECRET_NAMES} == {k: origin.secrets[k] for k in SECRET_NAMES}
        assert stat.S_IMODE((target / ".env").stat().st_mode) == 0o600
        assert_answers_as(restored)
        assert_has(restored, data)
    finally:
        destroy_all(docker_client, list(owned.values()))
