"""PIXSIM_HOME (media, uploads) travels in bundles, with the schema revisions and the build,
on Docker and on the native runtime; a dump holding a secret, and a newer schema, are refused.

Every command runs as a user runs it (``python -m pixsim_host ...``, output checked for the
hosts' secrets). Files are put into PIXSIM_HOME the two ways a backend's data gets there:
through the reference backend's upload API, and written straight into the home (nested,
binary, as media files are). After ``backup``, the origin is taken down with its data and
the bundle is restored (and cloned) elsewhere: every file must come back byte for byte,
read both through the API and from the new host's own PIXSIM_HOME.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from e2e_helpers import (
    Host,
    assert_clean_failure,
    assert_ok,
    cli,
    destroy_all,
    host_maker,
    registry_home,  # noqa: F401 (an autouse fixture: this module's own host registry)
)
from native_support import Hosts
from native_support import cli as native_cli

UPLOAD = ("notes.txt", "PIXSIM_HOME survives — ünïcode\n".encode())
MEDIA = {"media/deep/frame-0001.bin": bytes(range(256)) * 2048,  # 512 KiB, incompressible-ish
         "media/deep/empty": b"", "exports/world.json": b'{"exported": true}'}


# ---- helpers -----------------------------------------------------------------------------------


def upload(url: str) -> None:
    with httpx.Client(base_url=url, timeout=10.0, trust_env=False) as http:
        put = http.put(f"/api/v1/uploads/{UPLOAD[0]}", content=UPLOAD[1])
    assert put.status_code == 201, put.text


def assert_upload_served(url: str) -> None:
    with httpx.Client(base_url=url, timeout=10.0, trust_env=False) as http:
        got = http.get(f"/api/v1/uploads/{UPLOAD[0]}")
    assert got.status_code == 200, got.text
    assert got.content == UPLOAD[1]


def expected_home() -> dict[str, bytes]:
    return {**MEDIA, f"uploads/{UPLOAD[0]}": UPLOAD[1]}


def home_tar_files(bundle: Path) -> dict[str, bytes]:
    """The files of the bundle's home.tar, checked against the manifest's digest and size."""
    with tarfile.open(bundle, "r:gz") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        handle = archive.extractfile("home.tar")
        assert handle is not None, "the bundle has no home.tar"
        data = handle.read()
    spec = manifest["members"]["home.tar"]
    assert (hashlib.sha256(data).hexdigest(), len(data)) == (spec["sha256"], spec["size"])
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as home:
        for member in home.getmembers():
            assert not member.name.startswith(("/", "data/")), member.name  # relative to the home
            if member.isfile():
                extracted = home.extractfile(member)
                assert extracted is not None
                files[member.name] = extracted.read()
    return files


def manifest_of(bundle: Path) -> dict[str, Any]:
    with tarfile.open(bundle, "r:gz") as archive:
        manifest: dict[str, Any] = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    return manifest


def assert_manifest_records_schema_and_build(manifest: dict[str, Any]) -> None:
    # The reference backend's two chains, recorded like alembic's (what PixSim7 has five of).
    revisions = manifest["schema_revisions"]
    assert set(revisions) >= {"alembic_version", "alembic_version_game"}, revisions
    assert all(isinstance(r, list) and r for r in revisions.values()), revisions
    assert set(manifest["backend_build"]) == {"build_sha", "build_time"}
    assert manifest["secrets_in_database"] == []
    assert manifest["plugins_enabled_from"] == "backend"


def with_newer_schema(bundle: Path, target: Path) -> Path:
    """The same bundle, its manifest saying the main chain is at a revision nobody has."""
    with tarfile.open(bundle, "r:gz") as source, tarfile.open(target, "w:gz") as out:
        for member in source.getmembers():
            handle = source.extractfile(member)
            data = handle.read() if handle else b""
            if member.name == "manifest.json":
                manifest = json.loads(data)
                manifest["schema_revisions"]["alembic_version"] = ["9999_from_the_future"]
                data = json.dumps(manifest).encode()
                member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    return target


def assert_newer_schema_refused(run: Any, target: Path) -> None:
    assert_clean_failure(run)
    assert "9999_from_the_future" in run.stderr and "newer backend" in run.stderr, run.stderr
    assert not target.exists() or not any(target.iterdir()), "a refused restore wrote files"


# ---- native ------------------------------------------------------------------------------------




def write_native_home(home: Path) -> None:
    for name, data in MEDIA.items():
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_bytes(data)


def native_home_files(host_dir: Path) -> dict[str, bytes]:
    home = host_dir / "data" / "home"
    return {p.relative_to(home).as_posix(): p.read_bytes()
            for p in home.rglob("*") if p.is_file() and p.relative_to(home).as_posix() in expected_home()}


def test_native_pixsim_home_survives_backup_restore_and_clone(hosts: Hosts) -> None:
    origin = hosts.init()
    origin.up()
    upload(origin.url)
    write_native_home(origin.dir / "data" / "home")
    bundle = hosts.base / "origin.tar.gz"
    assert_ok(origin.run("backup", "-o", bundle))
    assert home_tar_files(bundle).items() >= expected_home().items()
    assert_manifest_records_schema_and_build(manifest_of(bundle))

    # The origin is lost with its data; the bundle alone brings the home back.
    assert_ok(origin.run("down", "--volumes", "--yes"))
    assert not (origin.dir / "data").exists()
    refused_target = hosts.base / "refused"
    assert_newer_schema_refused(
        native_cli("restore", with_newer_schema(bundle, hosts.base / "newer.tar.gz"),
                   "--dir", refused_target), refused_target)
    restored_dir = hosts.base / "restored"
    assert_ok(native_cli("restore", bundle, "--dir", restored_dir))
    restored = hosts.adopt(restored_dir)
    assert restored.host_id == origin.host_id
    assert native_home_files(restored.dir) == expected_home()
    assert_upload_served(restored.url)

    clone_dir = hosts.base / "clone"
    assert_ok(native_cli("clone", bundle, "--dir", clone_dir, "--name", f"{origin.name}-clone"))
    clone = hosts.adopt(clone_dir)
    assert clone.host_id != origin.host_id
    assert native_home_files(clone.dir) == expected_home()
    assert_upload_served(clone.url)


def test_native_backup_of_a_database_holding_a_secret(hosts: Hosts) -> None:
    """PixSim7 logs REDIS_URL, password included, into its database: the dump then holds it."""
    host = hosts.init()
    host.up()
    password = host.secrets["REDIS_PASSWORD"]
    with host.http() as http:
        logged = http.post("/api/v1/worlds", json={
            "name": f"redis_url=redis://:{password}@127.0.0.1:6379/0", "meta": {}})
    assert logged.status_code == 201, logged.text
    bundle = hosts.base / "leaky.tar.gz"
    refused = host.run("backup", "-o", bundle)
    assert_clean_failure(refused)
    assert "REDIS_PASSWORD" in refused.stderr and "--include-secrets" in refused.stderr
    assert not bundle.exists()
    assert not [p for p in hosts.base.iterdir() if p.name.startswith((".backup-", ".leaky"))]

    assert_ok(host.run("backup", "-o", bundle, "--include-secrets"))
    manifest = manifest_of(bundle)
    assert manifest["secrets_in_database"] == ["REDIS_PASSWORD"]
    assert manifest["includes_secrets"] is True
    assert oct(os.stat(bundle).st_mode & 0o777) == oct(0o600)


# ---- Docker ------------------------------------------------------------------------------------


@pytest.fixture
def make_host(docker_client: docker.DockerClient, require_images: Callable[..., None],
              tmp_path: Path) -> Iterator[Callable[..., Host]]:
    yield from host_maker(docker_client, require_images, tmp_path, Host, prefix="e2e-home")


def backend_container(client: docker.DockerClient, host: Host) -> Any:
    found = client.containers.list(filters={"label": [
        f"com.docker.compose.project={host.project}", "com.docker.compose.service=backend"]})
    assert len(found) == 1, [c.name for c in found]
    return found[0]


def write_docker_home(client: docker.DockerClient, host: Host) -> None:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as archive:
        for name, data in MEDIA.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    assert backend_container(client, host).put_archive("/data", stream.getvalue())


def docker_home_files(client: docker.DockerClient, host: Host) -> dict[str, bytes]:
    chunks, _ = backend_container(client, host).get_archive("/data")
    files = {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
        for member in archive.getmembers():
            name = member.name.removeprefix("data/")
            if member.isfile() and name in expected_home():
                extracted = archive.extractfile(member)
                assert extracted is not None
                files[name] = extracted.read()
    return files


def test_docker_pixsim_home_survives_backup_restore_and_clone(
        docker_client: docker.DockerClient, make_host: Callable[..., Host], tmp_path: Path) -> None:
    origin = make_host()
    origin.up_ok()
    upload(origin.url)
    write_docker_home(docker_client, origin)
    bundle = tmp_path / "origin.tar.gz"
    assert_ok(origin.run("backup", "-o", bundle))
    assert home_tar_files(bundle).items() >= expected_home().items()
    assert_manifest_records_schema_and_build(manifest_of(bundle))

    # The origin is gone, volumes and all; restore and clone bring the home back.
    assert_ok(origin.run("down", "--volumes", "--yes"))
    refused_target = tmp_path / "refused"
    assert_newer_schema_refused(
        cli("restore", with_newer_schema(bundle, tmp_path / "newer.tar.gz"), "--dir", refused_target),
        refused_target)
    made: list[Host] = []
    try:
        assert_ok(cli("restore", bundle, "--dir", tmp_path / "restored"))
        restored = Host.load(tmp_path / "restored")
        made.append(restored)
        assert restored.host_id == origin.host_id
        assert docker_home_files(docker_client, restored) == expected_home()
        assert_upload_served(restored.url)

        assert_ok(cli("clone", bundle, "--dir", tmp_path / "clone", "--name", f"{origin.name}-c"))
        clone = Host.load(tmp_path / "clone")
        made.append(clone)
        assert clone.host_id != origin.host_id
        assert docker_home_files(docker_client, clone) == expected_home()
        assert_upload_served(clone.url)
    finally:
        destroy_all(docker_client, made)
