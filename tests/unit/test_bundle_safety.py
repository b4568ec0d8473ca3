"""A backup bundle is untrusted input: hostile or damaged bundles are refused, nothing written.

No Docker engine is needed. Every bundle is built here with ``tarfile``: a correct one (the
positive control) and ones that are corrupted, truncated, not gzip, of another format, or
hostile (absolute paths, ``..``, links, devices, sizes beyond the manifest, members the
manifest does not list, ...). Each is given to ``backup.verified_bundle`` and to
``backup.restore`` (restore into a new directory, clone into a new directory, and restore
over an existing host of the same host_id with confirmation, the most dangerous path).

``DOCKER_HOST`` points at a socket that does not exist, so a restore that got past
verification would fail with "no Docker Engine answers" instead: the correct bundle proves
that, and every hostile bundle must fail with its own message first. ``tempfile``'s
directory is redirected into the test's tmp_path, and the whole tmp_path tree (target,
existing host, temp dir, places a ``..`` member would reach) is compared before and after:
nothing may be written, and no staging directory may be left behind.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from unit_helpers import Result, clean_env, run_cli

from pixsim_host import backup
from pixsim_host.errors import HostError

NO_ENGINE = "unix:///nonexistent/pixsim-host-test.sock"
ENGINE_ERROR = "no Docker Engine answers"
PLUGIN_FILE = "plugins/extra_plugin/backend/manifest.py"  # a package as `plugins install` takes it


# ---- building bundles -----------------------------------------------------------------------


@dataclass
class Entry:
    info: tarfile.TarInfo
    data: bytes | None = None


def file_entry(name: str, data: bytes) -> Entry:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
    return Entry(info, data)


def link_entry(name: str, target: str, kind: bytes) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, 0o777
    return Entry(info)


def special_entry(name: str, kind: bytes) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, 0o666
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return Entry(info)


def dir_entry(name: str) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return Entry(info)


def spec(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


@dataclass
class Parts:
    """The pieces of a correct bundle, to be altered by a case before it is packed."""

    host_id: str
    files: dict[str, bytes]  # member name -> bytes, in bundle order
    manifest: dict[str, Any]

    def entries(self) -> list[Entry]:
        return [manifest_entry(self.manifest), *(file_entry(n, d) for n, d in self.files.items())]


def manifest_entry(manifest: Any, raw: bytes | None = None) -> Entry:
    return file_entry(backup.MANIFEST, raw if raw is not None else json.dumps(manifest).encode())


def correct_parts(config: bytes) -> Parts:
    host_id = str(yaml.safe_load(config)["host_id"])
    files = {
        # Random, so it does not compress: cutting the .tar.gz in half lands inside it.
        backup.DATABASE_MEMBER: b"PGDMP" + os.urandom(64 * 1024),
        backup.REDIS_MEMBER: b"REDIS0011" + os.urandom(2048),
        backup.CONFIG_MEMBER: config,
        PLUGIN_FILE: b"manifest = {'id': 'extra_plugin'}\n",
    }
    manifest = {
        "format": backup.FORMAT,
        "format_version": backup.FORMAT_VERSION,
        "pixsim_host_version": "0.0.0-test",
        "created_at": "2026-01-01T00:00:00+00:00",
        "origin": {"host_id": host_id, "name": "bundle-safety", "model": "self",
                   "project": "pixsim-bundle-safety"},
        "lineage": [],
        "backend_version": {"api_version": "v1"},
        "plugins_enabled": ["extra_plugin"],
        "includes_secrets": False,
        "members": {name: spec(data) for name, data in files.items()},
    }
    return Parts(host_id, files, manifest)


def tar_bytes(entries: list[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            archive.addfile(entry.info, io.BytesIO(entry.data) if entry.data is not None else None)
    return buffer.getvalue()


def gz(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


def flip_inside(raw: bytes, member: str, at: int) -> bytes:
    """``raw`` (a plain tar) with one byte of ``member``'s data inverted; headers untouched."""
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
        offset = archive.getmember(member).offset_data
    data = bytearray(raw)
    data[offset + at] ^= 0xFF
    return bytes(data)


# ---- the cases ------------------------------------------------------------------------------

# Each case turns the parts of a correct bundle into the bytes of a bad bundle file.
Build = Callable[[Parts, Path], bytes]


def _with_manifest(change: Callable[[dict[str, Any]], None]) -> Build:
    def build(parts: Parts, _root: Path) -> bytes:
        change(parts.manifest)
        return gz(tar_bytes(parts.entries()))
    return build


def _with_entries(change: Callable[[Parts, Path], list[Entry]]) -> Build:
    def build(parts: Parts, root: Path) -> bytes:
        return gz(tar_bytes(change(parts, root)))
    return build


def _flipped(member: str, at: int) -> Build:
    def build(parts: Parts, _root: Path) -> bytes:
        return gz(flip_inside(tar_bytes(parts.entries()), member, at))
    return build


def _truncated_half(parts: Parts, _root: Path) -> bytes:
    whole = gz(tar_bytes(parts.entries()))
    return whole[: len(whole) // 2]


def _corrupt_gzip_stream(parts: Parts, _root: Path) -> bytes:
    data = bytearray(gz(tar_bytes(parts.entries())))
    data[len(data) // 2] ^= 0xFF  # inside the compressed data, far from header and trailer
    return bytes(data)


def _extra(entry_of: Callable[[Path], Entry], *, listed: bool = False) -> Build:
    """The correct members plus one more (listed in the manifest or not)."""
    def change(parts: Parts, root: Path) -> list[Entry]:
        entry = entry_of(root)
        if listed:
            parts.manifest["members"][entry.info.name] = spec(entry.data or b"")
        return [*parts.entries(), entry]
    return _with_entries(change)


def _replace(member: str, entry_of: Callable[[Path], Entry]) -> Build:
    """``member`` (which the manifest lists) replaced in the archive by another kind of entry."""
    def change(parts: Parts, root: Path) -> list[Entry]:
        entries = parts.entries()
        index = next(i for i, e in enumerate(entries) if e.info.name == member)
        entries[index] = entry_of(root)
        return entries
    return _with_entries(change)


def _manifest_not_first(parts: Parts, _root: Path) -> list[Entry]:
    entries = parts.entries()
    return [entries[1], entries[0], *entries[2:]]


def _member_missing(parts: Parts, _root: Path) -> list[Entry]:
    return [e for e in parts.entries() if e.info.name != PLUGIN_FILE]


def _required_member_missing(parts: Parts, _root: Path) -> list[Entry]:
    del parts.manifest["members"][backup.REDIS_MEMBER]
    return [e for e in parts.entries() if e.info.name != backup.REDIS_MEMBER]


def _duplicate(parts: Parts, _root: Path) -> list[Entry]:
    entries = parts.entries()
    return [*entries, file_entry(backup.DATABASE_MEMBER, parts.files[backup.DATABASE_MEMBER])]


def _larger_than_manifest(parts: Parts, _root: Path) -> list[Entry]:
    # The manifest's checksum and size describe the first half; the archive holds it all.
    data = parts.files[backup.DATABASE_MEMBER]
    parts.manifest["members"][backup.DATABASE_MEMBER] = spec(data[: len(data) // 2])
    return parts.entries()


def _config(text: bytes) -> Build:
    """A pixsim-host.yaml the manifest vouches for (checksum correct) but that is invalid."""
    def change(parts: Parts, _root: Path) -> list[Entry]:
        parts.files[backup.CONFIG_MEMBER] = text
        parts.manifest["members"][backup.CONFIG_MEMBER] = spec(text)
        return parts.entries()
    return _with_entries(change)


def _config_of_another_host(parts: Parts, _root: Path) -> list[Entry]:
    data = yaml.safe_load(parts.files[backup.CONFIG_MEMBER])
    data["host_id"] = str(uuid.uuid4())
    text = yaml.safe_dump(data).encode()
    parts.files[backup.CONFIG_MEMBER] = text
    parts.manifest["members"][backup.CONFIG_MEMBER] = spec(text)
    return parts.entries()


def _raw_manifest(raw: bytes) -> Build:
    def change(parts: Parts, _root: Path) -> list[Entry]:
        return [manifest_entry(None, raw), *parts.entries()[1:]]
    return _with_entries(change)


def _plain(data: bytes) -> Build:
    return lambda _parts, _root: data


def _uncompressed_tar(parts: Parts, _root: Path) -> bytes:
    return tar_bytes(parts.entries())


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda manifest: manifest.__setitem__(key, value)


def _list_member(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda manifest: manifest["members"].__setitem__(name, spec(b"x"))


def _origin_host(manifest: dict[str, Any]) -> None:
    manifest["origin"]["host_id"] = str(uuid.uuid4())


def _negative_size(manifest: dict[str, Any]) -> None:
    manifest["members"][backup.REDIS_MEMBER]["size"] = -1


def _abs(root: Path) -> str:
    return str(root / "escaped-absolute.txt")


CORRUPT = "checksum mismatch"
TRUNCATED = "truncated or corrupt"
UNEXPECTED = "unexpected member"
LINK = "link or special file"
INVALID_LIST = "invalid member list"

CASES: dict[str, tuple[Build, tuple[str, ...]]] = {
    # Damage.
    "flipped-byte-in-database": (_flipped(backup.DATABASE_MEMBER, 1000), (f"{CORRUPT} for database.dump",)),
    "flipped-byte-in-config": (_flipped(backup.CONFIG_MEMBER, 10), (f"{CORRUPT} for pixsim-host.yaml",)),
    "flipped-byte-in-plugin": (_flipped(PLUGIN_FILE, 0), (f"{CORRUPT} for {PLUGIN_FILE}",)),
    "corrupt-gzip-stream": (_corrupt_gzip_stream, (CORRUPT, TRUNCATED)),
    "truncated-half": (_truncated_half, (TRUNCATED,)),
    "truncated-to-gzip-header": (lambda p, r: gz(tar_bytes(p.entries()))[:12], (TRUNCATED,)),
    "empty-file": (_plain(b""), (TRUNCATED,)),
    "not-gzip": (_plain(b"this is a shopping list, not a bundle\n" * 50), (TRUNCATED,)),
    "uncompressed-tar": (_uncompressed_tar, (TRUNCATED,)),
    "zip-file": (_plain(b"PK\x03\x04" + bytes(200)), (TRUNCATED,)),
    # Another format, or no manifest first.
    "wrong-format": (_with_manifest(_set("format", "some-other-bundle")), ("unknown format",)),
    "no-format": (_with_manifest(lambda m: m.pop("format")), ("unknown format",)),
    "wrong-version": (_with_manifest(_set("format_version", backup.FORMAT_VERSION + 1)),
                      (f"uses bundle format {backup.FORMAT_VERSION + 1}",)),
    "manifest-not-first": (_with_entries(_manifest_not_first), ("no manifest.json first",)),
    "manifest-not-json": (_raw_manifest(b"{not json"), ("not valid JSON",)),
    "manifest-not-an-object": (_raw_manifest(b"[1, 2, 3]"), ("unknown format",)),
    "manifest-too-large": (_raw_manifest(b" " * (backup.MAX_MANIFEST_BYTES + 1)), ("implausibly large",)),
    "members-not-a-mapping": (_with_manifest(_set("members", ["database.dump"])), (INVALID_LIST,)),
    "member-size-negative": (_with_manifest(_negative_size), (INVALID_LIST,)),
    "required-member-missing": (_with_entries(_required_member_missing), ("lists no redis/dump.rdb",)),
    # Hostile names, in the archive and in the manifest.
    "absolute-path": (_extra(lambda r: file_entry(_abs(r), b"pwned\n")), (UNEXPECTED,)),
    "absolute-path-listed": (_extra(lambda r: file_entry(_abs(r), b"pwned\n"), listed=True),
                             (INVALID_LIST,)),
    "dotdot-in-plugins": (_extra(lambda r: file_entry("plugins/../../escaped.txt", b"pwned\n")),
                          (UNEXPECTED,)),
    "dotdot-first": (_extra(lambda r: file_entry("../escaped.txt", b"pwned\n")), (UNEXPECTED,)),
    "dotdot-listed": (_extra(lambda r: file_entry("plugins/x/../../../escaped.txt", b"pwned\n"),
                             listed=True), (INVALID_LIST,)),
    "dotdot-as-config": (_replace(backup.CONFIG_MEMBER, lambda r: file_entry(
        "plugins/../pixsim-host.yaml", b"pwned\n")), (UNEXPECTED,)),
    "backslash-name": (_extra(lambda r: file_entry("plugins\\..\\escaped.txt", b"pwned\n")),
                       (UNEXPECTED,)),
    "unknown-top-level-name": (_extra(lambda r: file_entry(".env", b"SECRET_KEY=x\n"), listed=True),
                               (INVALID_LIST,)),
    # Links and special files, under names the manifest lists.
    "symlink-as-redis-dump": (_replace(backup.REDIS_MEMBER, lambda r: link_entry(
        backup.REDIS_MEMBER, "/etc/passwd", tarfile.SYMTYPE)), (LINK,)),
    "symlink-in-plugins": (_extra(lambda r: link_entry("plugins/evil/up", "../../../..",
                                                       tarfile.SYMTYPE)), (LINK,)),
    "hardlink-as-database": (_replace(backup.DATABASE_MEMBER, lambda r: link_entry(
        backup.DATABASE_MEMBER, "/etc/shadow", tarfile.LNKTYPE)), (LINK,)),
    "hardlink-in-plugins": (_extra(lambda r: link_entry("plugins/evil/hard", backup.CONFIG_MEMBER,
                                                        tarfile.LNKTYPE)), (LINK,)),
    "char-device": (_extra(lambda r: special_entry("plugins/evil/null", tarfile.CHRTYPE)), (LINK,)),
    "block-device": (_replace(backup.DATABASE_MEMBER, lambda r: special_entry(
        backup.DATABASE_MEMBER, tarfile.BLKTYPE)), (LINK,)),
    "fifo": (_extra(lambda r: special_entry("plugins/evil/pipe", tarfile.FIFOTYPE)), (LINK,)),
    # Members and the manifest disagree.
    "larger-than-manifest": (_with_entries(_larger_than_manifest),
                             (f"database.dump is {64 * 1024 + 5} bytes, the manifest says",)),
    "member-not-in-manifest": (_extra(lambda r: file_entry("plugins/stowaway/manifest.py",
                                                           b"import os\n")), ("does not list",)),
    "listed-member-missing": (_with_entries(_member_missing), (f"lacks {PLUGIN_FILE}",)),
    "listed-but-not-in-archive": (_with_manifest(_list_member("plugins/ghost/manifest.py")),
                                  ("lacks plugins/ghost/manifest.py",)),
    "duplicate-member": (_with_entries(_duplicate), ("database.dump twice",)),
    # The config inside.
    "manifest-names-another-host": (_with_manifest(_origin_host), ("name different hosts",)),
    "config-of-another-host": (_with_entries(_config_of_another_host), ("name different hosts",)),
    "config-invalid-yaml": (_config(b"host_id: [unclosed\nname: x\n"), ("pixsim-host.yaml is not valid",)),
    "config-invalid-schema": (_config(b"version: 1\nhost_id: not-a-uuid\nname: x\n"),
                              ("pixsim-host.yaml is not valid",)),
    "config-not-a-mapping": (_config(b"- just\n- a list\n"), ("pixsim-host.yaml is not valid",)),
    "config-not-utf8": (_config(b"name: \xff\xfe\n"), ("pixsim-host.yaml is not valid",)),
}


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template_host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host made once by the real ``init``; tests copy it (modes kept) when they need one."""
    base = tmp_path_factory.mktemp("template")
    root = base / "host"
    # Its own host registry, never the user's; a unique name all the same.
    env = clean_env(PIXSIM_HOST_HOME=str(base / "home"))
    result = run_cli("init", str(root), "--yes", "--name", f"bundle-safety-{uuid.uuid4().hex[:8]}",
                     "--port", "18777", env=env)
    assert result.returncode == 0, str(result)
    return root


@dataclass
class World:
    root: Path  # the test's tmp_path: every byte written anywhere by the code lands under it
    temp: Path  # tempfile's directory for the test
    parts: Parts
    existing: Path  # a copy of the template host (same host_id as the bundle)

    def bundle(self, data: bytes, name: str = "bundle.tar.gz") -> Path:
        path = self.root / "bundles" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        return path


@pytest.fixture
def world(tmp_path: Path, template_host: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    for name in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "PIXSIM_HOST_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    # The host registry too lives under tmp_path, so the tree comparison covers it.
    monkeypatch.setenv("PIXSIM_HOST_HOME", str(tmp_path / "home"))
    existing = tmp_path / "existing-host"
    shutil.copytree(template_host, existing, symlinks=True)
    parts = correct_parts((existing / "pixsim-host.yaml").read_bytes())
    yield World(tmp_path, temp, parts, existing)


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under ``root``: kind, mode, and for files their bytes and mtime."""
    found: dict[str, tuple[Any, ...]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        key = str(path.relative_to(root))
        if stat.S_ISLNK(info.st_mode):
            found[key] = ("link", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            found[key] = ("dir", stat.S_IMODE(info.st_mode))
        else:
            found[key] = ("file", stat.S_IMODE(info.st_mode), info.st_mtime_ns, path.read_bytes())
    return found


MODES = ("verify", "restore-new", "clone-new", "restore-existing")


def attempt(world: World, bundle: Path, mode: str) -> tuple[HostError, list[tuple[str, str]]]:
    """Run ``mode`` on ``bundle``; it must raise HostError. Returns it and the progress seen."""
    progress: list[tuple[str, str]] = []

    def record(service: str, message: str) -> None:
        progress.append((service, message))

    with pytest.raises(HostError) as caught:
        if mode == "verify":
            with backup.verified_bundle(bundle):
                pass
        elif mode == "restore-existing":
            backup.restore(bundle, world.existing, port=None, name=None, clone=False,
                           progress=record, confirm_existing=True)
        else:
            backup.restore(bundle, world.root / "target", port=None, name=None,
                           clone=mode == "clone-new", progress=record)
    return caught.value, progress


# ---- tests ----------------------------------------------------------------------------------


def test_the_correct_bundle_verifies(world: World) -> None:
    """Positive control: the builder makes bundles the verifier accepts, byte for byte."""
    path = world.bundle(gz(tar_bytes(world.parts.entries())))
    with backup.verified_bundle(path) as verified:
        assert verified.config.host_id == world.parts.host_id
        assert verified.origin["host_id"] == world.parts.host_id
        assert verified.manifest["members"] == world.parts.manifest["members"]
        staged = {str(p.relative_to(verified.staging)): p.read_bytes()
                  for p in verified.staging.rglob("*") if p.is_file()}
        assert staged == world.parts.files
        assert verified.staging.parent == world.temp
        assert stat.S_IMODE(verified.staging.stat().st_mode) == 0o700
    assert list(world.temp.iterdir()) == [], "the staging directory was left behind"


def test_a_bundle_with_directory_entries_verifies(world: World) -> None:
    entries = world.parts.entries()
    path = world.bundle(gz(tar_bytes([entries[0], dir_entry("redis"), dir_entry("plugins"),
                                      dir_entry("plugins/extra_plugin"), *entries[1:]])))
    with backup.verified_bundle(path) as verified:
        assert (verified.staging / PLUGIN_FILE).read_bytes() == world.parts.files[PLUGIN_FILE]


@pytest.mark.parametrize("mode", MODES)
def test_the_correct_bundle_gets_as_far_as_the_engine(world: World, mode: str) -> None:
    """Positive control for the refusals below: past verification, a restore needs the engine,
    and with DOCKER_HOST pointing nowhere that is the error it stops at, having written nothing."""
    path = world.bundle(gz(tar_bytes(world.parts.entries())))
    before = tree(world.root)
    if mode == "verify":
        with backup.verified_bundle(path):
            pass
        assert tree(world.root) == before
        return
    error, progress = attempt(world, path, mode)
    assert ENGINE_ERROR in error.message and NO_ENGINE in error.message, error.message
    assert [service for service, _ in progress][:1] == ["host"]
    assert "bundle verified" in progress[0][1]
    after = tree(world.root)
    if mode == "restore-existing":
        # A verified bundle takes the host's lock, and opening the existing host's runtime
        # (for its safety backup) refreshes the render bookkeeping every command keeps; the
        # host's own files must not change.
        for state in (before, after):
            for bookkeeping in ("rendered.json", "lock", "lock.owner"):
                state.pop(f"existing-host/.pixsim-host/{bookkeeping}", None)
    assert after == before, "a restore that could not reach the engine wrote files"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_bundle_is_refused_and_nothing_is_written(world: World, case: str, mode: str) -> None:
    build, expected = CASES[case]
    path = world.bundle(build(world.parts, world.root))
    before = tree(world.root)

    error, progress = attempt(world, path, mode)

    message = error.message
    assert any(fragment in message for fragment in expected), f"{case}: {message!r}"
    assert ENGINE_ERROR not in message, f"{case} reached the engine: {message!r}"
    assert "\n" not in message and path.name in message, message
    assert progress == [], f"{case}: restore went on after a failed verification: {progress}"
    assert tree(world.root) == before, f"{case}: files changed on disk"
    assert not (world.root / "target").exists()
    assert list(world.temp.iterdir()) == [], f"{case}: a staging directory was left behind"


def test_a_missing_bundle_is_refused(world: World) -> None:
    for path in (world.root / "nope.tar.gz", world.root):
        error, progress = attempt(world, path, "restore-new")
        assert "does not exist or is not a file" in error.message
        assert progress == []
    assert not (world.root / "target").exists()


# ---- correct bundles, wrong targets: refused before the engine, nothing written -------------


def test_restore_over_a_host_without_yes_is_refused(world: World) -> None:
    path = world.bundle(gz(tar_bytes(world.parts.entries())))
    before = tree(world.root)
    with pytest.raises(HostError) as caught:
        backup.restore(path, world.existing, port=None, name=None, clone=False,
                       progress=lambda s, m: None)
    assert "pass --yes" in caught.value.message and "safety backup" in caught.value.message
    assert tree(world.root) == before


def test_restore_over_another_host_is_refused(world: World) -> None:
    other = correct_parts(_other_host_config(world))
    path = world.bundle(gz(tar_bytes(other.entries())))
    before = tree(world.root)
    with pytest.raises(HostError) as caught:
        backup.restore(path, world.existing, port=None, name=None, clone=False,
                       progress=lambda s, m: None, confirm_existing=True)
    assert f"holds host {world.parts.host_id}" in caught.value.message
    assert other.host_id in caught.value.message and "clone" in caught.value.message
    assert tree(world.root) == before


def test_clone_into_an_existing_host_is_refused(world: World) -> None:
    path = world.bundle(gz(tar_bytes(world.parts.entries())))
    before = tree(world.root)
    with pytest.raises(HostError) as caught:
        backup.restore(path, world.existing, port=None, name=None, clone=True,
                       progress=lambda s, m: None)
    assert "already holds a host" in caught.value.message
    assert tree(world.root) == before


@pytest.mark.parametrize("clone", [False, True], ids=["restore", "clone"])
def test_a_non_empty_directory_or_a_file_is_not_a_target(world: World, clone: bool) -> None:
    path = world.bundle(gz(tar_bytes(world.parts.entries())))
    busy = world.root / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine\n")
    plain = world.root / "plain-file"
    plain.write_text("not a directory\n")
    before = tree(world.root)
    for target in (busy, plain):
        with pytest.raises(HostError) as caught:
            backup.restore(path, target, port=None, name=None, clone=clone,
                           progress=lambda s, m: None)
        assert str(target) in caught.value.message and "new directory" in caught.value.message
        assert ENGINE_ERROR not in caught.value.message
    assert tree(world.root) == before


def _other_host_config(world: World) -> bytes:
    data = yaml.safe_load((world.existing / "pixsim-host.yaml").read_text())
    data["host_id"] = str(uuid.uuid4())
    return yaml.safe_dump(data).encode()


# ---- the real CLI ---------------------------------------------------------------------------


def cli(world: World, *args: str) -> Result:
    env = clean_env(DOCKER_HOST=NO_ENGINE, TMPDIR=str(world.temp))
    env.pop("DOCKER_CONTEXT", None)
    return run_cli(*args, env=env)


def assert_one_line_error(proc: Result, fragment: str) -> None:
    shown = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
    assert proc.returncode != 0, shown
    assert "Traceback" not in proc.stdout + proc.stderr, shown
    assert proc.stdout == "", shown
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), shown
    assert fragment in lines[0], shown


@pytest.mark.parametrize(("command", "case", "fragment"), [
    ("restore", "flipped-byte-in-database", "checksum mismatch for database.dump"),
    ("clone", "truncated-half", "is truncated or corrupt"),
    ("restore-existing", "symlink-as-redis-dump", "link or special file (redis/dump.rdb)"),
    ("restore", "dotdot-in-plugins", "unexpected member 'plugins/../../escaped.txt'"),
])
def test_cli_refuses_with_one_error_line(world: World, command: str, case: str, fragment: str) -> None:
    build, _ = CASES[case]
    path = world.bundle(build(world.parts, world.root))
    before = tree(world.root)
    if command == "restore-existing":
        proc = cli(world, "restore", str(path), "--dir", str(world.existing), "--yes")
    else:
        proc = cli(world, command, str(path), "--dir", str(world.root / "target"))
    assert_one_line_error(proc, fragment)
    assert tree(world.root) == before
    assert not (world.root / "target").exists()


def test_cli_with_a_correct_bundle_reaches_the_engine(world: World) -> None:
    """Control for the CLI refusals: the same command with a correct bundle stops at Docker."""
    path = world.bundle(gz(tar_bytes(world.parts.entries())))
    proc = cli(world, "restore", str(path), "--dir", str(world.root / "target"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"Error: {ENGINE_ERROR}"), proc.stderr
    assert "bundle verified" in proc.stderr
    assert not (world.root / "target").exists()
    assert list(world.temp.iterdir()) == []
