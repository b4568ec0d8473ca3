"""Backup bundles: take one from a running host, restore or clone a host from one.

A bundle is a ``.tar.gz`` whose first member, ``manifest.json``, records where it came
from (origin host_id, name, model, versions, plugin set) and a sha256 and size for every
other member. A bundle is untrusted input: it is fully verified into a private staging
directory before anything on disk or in a volume is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pixsim_host import __version__, safeload
from pixsim_host.bundle_data import HOME_MEMBER
from pixsim_host.config import HostConfig, load_config, parse_config, slugify
from pixsim_host.envfile import generate_secrets, read_secrets, write_secrets
from pixsim_host.errors import HostError
from pixsim_host.fsutil import atomic_write, write_error
from pixsim_host.hostdir import HostDir
from pixsim_host.progress import Progress
from pixsim_host.restore_journal import (
    clear_journal,
    release,
    terminate_as_interrupt,
    unfinished_message,
    unfinished_restore,
    write_journal,
)
from pixsim_host.schema import forget_migrations
from pixsim_host.services import migrate_lines
from pixsim_host.upgrade_history import finished_changes

FORMAT = "pixsim-host-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE_MEMBER = "database.dump"
REDIS_MEMBER = "redis/dump.rdb"
CONFIG_MEMBER = "pixsim-host.yaml"
SECRETS_MEMBER = "secrets.env"
PLUGINS_PREFIX = "plugins/"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024



@dataclass
class BackupResult:
    path: Path
    size: int
    manifest: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- backup -----------------------------------------------------------------------------


def backup(host: HostDir, config: HostConfig, *, output: Path | None, include_secrets: bool,
           progress: Progress) -> BackupResult:
    from pixsim_host import stack
    from pixsim_host.health import get_json, make_client, probe_status

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = (output or host.root / "backups" / f"{config.project}-{stamp}.tar.gz").expanduser().resolve()
    _check_target(target)
    runtime = stack.open_data_runtime(host, config)
    report, why = probe_status(config.local_url, config.host_id)
    if report is None:
        raise HostError(f"host {config.name!r} is not running and healthy ({why}); a backup needs "
                        "its database: start it with `pixsim-host up` and retry")
    with make_client() as client:
        version = get_json(client, config.local_url, "/api/v1/version")
    enabled, enabled_from = _enabled_plugins(host, config)
    _prepare_target_dir(target)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".backup-") as tmp, \
            _disk_full_named(target):
        staging = Path(tmp)
        runtime.dump_database(staging / DATABASE_MEMBER, progress)
        leaked = _secrets_in_dump(host, staging / DATABASE_MEMBER, include_secrets, progress)
        schema = runtime.schema_revisions()
        runtime.dump_home(staging / HOME_MEMBER, progress)
        (staging / "redis").mkdir()
        runtime.dump_redis(staging / REDIS_MEMBER, progress)
        shutil.copyfile(host.config_file, staging / CONFIG_MEMBER)
        if include_secrets:
            shutil.copyfile(host.secrets_file, staging / SECRETS_MEMBER)
        if host.plugins_dir.is_dir():
            shutil.copytree(host.plugins_dir, staging / "plugins", symlinks=True)
        members = {
            str(path.relative_to(staging)): {"sha256": _sha256(path), "size": path.stat().st_size}
            for path in sorted(staging.rglob("*")) if path.is_file()
        }
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "pixsim_host_version": __version__,
            # The project's one time format (docs/json.md): ISO 8601 UTC to the second, with Z.
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "origin": {"host_id": config.host_id, "name": config.name, "model": config.model,
                       "project": config.project},
            "lineage": [entry.model_dump() for entry in config.lineage],
            "backend_version": version,
            # The build, as the backend reports it (PixSim7 reports null for both today).
            "backend_build": {"build_sha": version.get("build_sha"),
                              "build_time": version.get("build_time")},
            # Each migration chain's recorded revisions, by alembic version table: restore
            # refuses a target whose backend does not know them (a newer schema).
            "schema_revisions": schema,
            "server_info": report.info,
            # What the origin ran beside the backend (by name; their commands are settings a
            # restore takes only when trusted) and which migrations built its schema.
            "services": sorted(runtime.service_names()),
            "migrations": migrate_lines(config),
            # Every upgrade and rollback the origin went through: versions before and after.
            "upgrades": finished_changes(host),
            "plugins_enabled": enabled,
            "plugins_enabled_from": enabled_from,
            "includes_secrets": include_secrets,
            # Secrets of the origin's .env found in the database dump (logged by the backend).
            "secrets_in_database": leaked,
            "members": members,
        }
        progress("host", f"writing {target.name}")
        # 0600 with or without secrets: the database alone is the players' private data.
        mode = 0o600
        partial = target.with_name(f".{target.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
                data = json.dumps(manifest, indent=2, sort_keys=True).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
                archive.addfile(info, _BytesReader(data))
                for name in members:
                    archive.add(staging / name, arcname=name, recursive=False, filter=_normalize)
            os.chmod(partial, mode)
            os.replace(partial, target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise write_error(target, exc) from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return BackupResult(target, target.stat().st_size, manifest)


def _enabled_plugins(host: HostDir, config: HostConfig) -> tuple[list[str], str]:
    """The enabled plugin ids and where they were read: the backend, or (when it serves no
    list: admin_plugins disabled) the catalog saved at the last verified ``up``."""
    from pixsim_host.plugins import PluginListUnavailable, fetch_catalog, load_catalog

    try:
        catalog = fetch_catalog(config.local_url, list(config.plugins.disabled))
        source = "backend"
    except PluginListUnavailable:
        saved = load_catalog(host)
        if saved is None:
            return [], "unknown"
        catalog, source = saved, "saved-catalog"
    return sorted(p.id for p in catalog.plugins.values() if p.enabled), source


def _secrets_in_dump(host: HostDir, dump: Path, include_secrets: bool,
                     progress: Progress) -> list[str]:
    """The host's secrets the database dump holds (PixSim7 logs REDIS_URL, password and all,
    into log_entries); refused unless the bundle is one that carries secrets anyway."""
    from pixsim_host.bundle_data import secrets_in_file

    found = secrets_in_file(dump, read_secrets(host.secrets_file))
    if not found:
        return []
    names = ", ".join(found)
    if not include_secrets:
        raise HostError(
            f"the database holds this host's {names} (the backend wrote it into its data, e.g. "
            "a log table), so a bundle of it would carry that secret; nothing was written: pass "
            "--include-secrets to make a bundle that holds secrets (keep it as private as .env), "
            "or delete those rows and retry"
        )
    progress("host", f"warning: the database holds this host's {names} (logged by the backend); "
                     "this bundle contains secrets")
    return found


def _check_schema(bundle: VerifiedBundle, host: HostDir, config: HostConfig,
                  progress: Progress) -> None:
    """Refuse a bundle whose schema is newer than the target's backend knows, before anything
    is written. Unknown when the backend's migrations cannot be read (an image only)."""
    from pixsim_host.bundle_data import known_revisions, schema_problem

    recorded = bundle.manifest.get("schema_revisions")
    if not recorded:
        return
    known, where = known_revisions(host, config)
    if known is None:
        progress("host", "the target backend's migrations cannot be read (an image without "
                         "backend.source), so the bundle's schema revisions are not checked")
        return
    problem = schema_problem(recorded, known, where)
    if problem:
        raise HostError(f"{problem}; nothing was restored: update this host's backend "
                        "(backend.source or backend.image) to one at least as new as the origin's")


@contextlib.contextmanager
def _disk_full_named(target: Path) -> Iterator[None]:
    """A dump, copy or write that failed because the bundle's filesystem is full is said as
    that, naming the bundle (pg_dump's own words name neither the file nor what to do)."""
    import errno

    try:
        yield
    except (HostError, OSError) as exc:
        full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        if not full:
            with contextlib.suppress(OSError):
                full = shutil.disk_usage(target.parent).free < 1024 * 1024
        if not full:
            raise
        raise write_error(target, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from None


def _is_bundle(path: Path) -> bool:
    """Whether ``path`` starts like a bundle (a gzipped tar whose first member is the manifest)."""
    try:
        with tarfile.open(path, mode="r|gz") as archive:
            first = next(iter(archive), None)
    except (OSError, tarfile.TarError, EOFError, zlib.error):
        return False
    return first is not None and first.name == MANIFEST


def _check_target(target: Path) -> None:
    """Where a bundle goes: a new file, or an older bundle it replaces, never anything else
    (``-o .env`` would overwrite the host's only copy of its secrets)."""
    if target.is_dir():
        raise HostError(f"{target} is a directory; give the bundle's file name, like "
                        f"{target / 'host.tar.gz'}")
    if (target.exists() or target.is_symlink()) and not (target.is_file() and _is_bundle(target)):
        raise HostError(f"{target} exists and is not a pixsim-host bundle; nothing was written: "
                        "choose a new file name (a backup only ever replaces an older bundle)")


def _prepare_target_dir(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".backup-"):
            pass  # the dump is staged beside the bundle: fail now, not after it
    except OSError as exc:
        raise HostError(f"cannot write a bundle in {target.parent}: {exc.strerror or exc}; "
                        "choose another place for it with -o") from None


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        chunk, self._pos = self._data[self._pos:end], min(end, len(self._data))
        return chunk


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    # Every member private: extracting a bundle by hand yields no world-readable dump or secret.
    info.mode = 0o600
    return info


# ---- verification -------------------------------------------------------------------------


@dataclass
class VerifiedBundle:
    manifest: dict[str, Any]
    staging: Path  # every member, checked, under this private directory
    config: HostConfig
    source: Path | None = None  # the bundle file

    @property
    def origin(self) -> dict[str, Any]:
        return dict(self.manifest.get("origin") or {})


def _member_name_ok(name: str) -> bool:
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        return False
    return name in (MANIFEST, DATABASE_MEMBER, REDIS_MEMBER, CONFIG_MEMBER, SECRETS_MEMBER,
                    HOME_MEMBER) or (
        name.startswith(PLUGINS_PREFIX) and len(parts) >= 2
    ) or name in ("redis", "plugins")


@contextlib.contextmanager
def verified_bundle(bundle: Path) -> Iterator[VerifiedBundle]:
    """Check a bundle completely (format, every member, every checksum) into a staging dir."""
    bundle = bundle.expanduser()
    if not bundle.is_file():
        raise HostError(f"{bundle} does not exist or is not a file; give a bundle made by "
                        "`pixsim-host backup`")
    with tempfile.TemporaryDirectory(prefix="pixsim-host-restore-") as tmp:
        staging = Path(tmp)
        os.chmod(staging, 0o700)
        manifest = _extract_checked(bundle, staging)
        if (staging / "plugins").is_dir():
            from pixsim_host.plugins import check_bundled_packages

            try:
                check_bundled_packages(staging / "plugins")
            except HostError as exc:
                raise HostError(f"{bundle.name}: {exc.message}") from None
        try:
            config = load_config(staging / CONFIG_MEMBER)
        except HostError as exc:
            raise HostError(f"{bundle.name}: its pixsim-host.yaml is not valid ({exc.message})") from None
        origin = manifest.get("origin") or {}
        if origin.get("host_id") != config.host_id:
            raise HostError(f"{bundle.name}: its manifest and its config name different hosts; "
                            "the bundle was altered")
        yield VerifiedBundle(manifest, staging, config, bundle.resolve())


def _extract_checked(bundle: Path, staging: Path) -> dict[str, Any]:
    name = bundle.name
    try:
        with tarfile.open(bundle, mode="r|gz") as archive:
            first = next(iter(archive), None)
            if first is None or first.name != MANIFEST or not first.isfile():
                raise HostError(f"{name} is not a pixsim-host bundle (no manifest.json first)")
            if first.size > MAX_MANIFEST_BYTES:
                raise HostError(f"{name}: manifest.json is implausibly large; refused")
            handle = archive.extractfile(first)
            assert handle is not None
            manifest = safeload.parse_json(handle.read(), f"{name}: manifest.json",
                                           "the bundle is corrupt: use another copy of the backup")
            _check_manifest(manifest, name)
            expected: dict[str, dict[str, Any]] = manifest["members"]
            seen: set[str] = set()
            for member in archive:
                if member is first:  # a streaming TarFile yields members it already read
                    continue
                if not _member_name_ok(member.name):
                    raise HostError(f"{name} has an unexpected member {member.name!r}; refused")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise HostError(f"{name} has a link or special file ({member.name}); refused")
                spec = expected.get(member.name)
                if spec is None:
                    raise HostError(f"{name} has a member the manifest does not list "
                                    f"({member.name}); refused")
                if member.size != spec["size"]:
                    raise HostError(f"{name}: {member.name} is {member.size} bytes, the manifest "
                                    f"says {spec['size']}; refused")
                if member.name in seen:
                    raise HostError(f"{name} has {member.name} twice; refused")
                seen.add(member.name)
                target = staging / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                digest = hashlib.sha256()
                written = 0
                with target.open("wb") as out:
                    while block := source.read(1 << 20):
                        written += len(block)
                        if written > spec["size"]:
                            raise HostError(f"{name}: {member.name} is larger than the manifest says")
                        digest.update(block)
                        out.write(block)
                if digest.hexdigest() != spec["sha256"]:
                    raise HostError(f"{name}: checksum mismatch for {member.name}; the bundle is "
                                    "corrupt or was altered")
    except HostError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise HostError(f"{name} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                        "use another copy of the backup") from None
    missing = sorted(set(expected) - seen)
    if missing:
        raise HostError(f"{name} lacks {', '.join(missing)}; the bundle is truncated or incomplete")
    return dict(manifest)


def _check_manifest(manifest: Any, name: str) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise HostError(f"{name} is not a pixsim-host bundle (unknown format)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise HostError(f"{name} uses bundle format {manifest.get('format_version')}; this "
                        f"pixsim-host ({__version__}) reads format {FORMAT_VERSION}")
    members = manifest.get("members")
    if not isinstance(members, dict) or not all(
        isinstance(k, str) and _member_name_ok(k) and isinstance(v, dict)
        and isinstance(v.get("sha256"), str) and isinstance(v.get("size"), int) and v["size"] >= 0
        for k, v in members.items()
    ):
        raise HostError(f"{name}: manifest.json has an invalid member list; refused")
    for required in (DATABASE_MEMBER, REDIS_MEMBER, CONFIG_MEMBER):
        if required not in members:
            raise HostError(f"{name}: the manifest lists no {required}; refused")


# ---- restore and clone --------------------------------------------------------------------


# A bundle is code: settings in its config that run a program, choose a binary, an image
# or a working directory, send the data elsewhere, or widen who can reach the host are not
# taken from it without --trust-bundle-settings (--yes does not imply it).
RUNS = "runs a program of the bundle's choosing"
BINARY = "chooses a binary"
WORKDIR = "chooses a working directory"
ELSEWHERE = "sends the host's data elsewhere"
REACH = "widens who can reach the host"
UNTRUSTED_SETTINGS: dict[str, str] = {
    "model": REACH, "backend.bind": REACH, "backend.public_url": REACH, "backend.cors_origins": REACH,
    "backend.image": RUNS, "backend.command": RUNS, "backend.source": WORKDIR,
    "backend.dockerfile": RUNS, "backend.migrate": RUNS, "backend.workers": RUNS, "backend.env": RUNS,
    "backend.services": RUNS,
    "database.image": RUNS, "database.url": ELSEWHERE, "redis.image": RUNS, "redis.url": ELSEWHERE,
    "native.postgres_bin_dir": BINARY, "native.redis_server": BINARY, "native.python": BINARY,
    "native.backend_command": RUNS, "native.backend_workdir": WORKDIR,
    "kubernetes.context": ELSEWHERE, "kubernetes.service_type": REACH,
    "kubernetes.ingress_host": REACH, "kubernetes.ingress_class": REACH, "kubernetes.tls_secret": REACH,
    "tls.mode": REACH, "tls.domain": REACH, "tls.port": REACH, "tls.acme_ca": REACH,
    "tls.image": RUNS, "tls.caddy_binary": BINARY,
}


def distrust_settings(data: dict[str, Any], safe: dict[str, Any], *, trust: bool,
                      progress: Progress) -> list[str]:
    """Put every untrusted setting of ``data`` (a bundle's config) that differs from ``safe``
    (this machine's defaults, or the host being restored over) back to ``safe``'s value,
    each said; with ``trust``, keep them, each said. Returns the keys concerned."""
    concerned = []
    for key, why in UNTRUSTED_SETTINGS.items():
        *parents, last = key.split(".")
        node, default = data, safe
        for part in parents:
            node, default = node.setdefault(part, {}), default.get(part) or {}
        if node.get(last) == default.get(last):
            continue
        concerned.append(key)
        if trust:
            progress("host", f"the bundle's {key} is kept (--trust-bundle-settings); it {why}")
        else:
            node[last] = default.get(last)
            progress("host", f"the bundle sets {key}, which {why}: not taken from it (pass "
                             "--trust-bundle-settings to keep it, or set it later with "
                             f"`pixsim-host config set {key} ...`)")
    return concerned


def restore(bundle_path: Path, target: Path, *, port: int | None, name: str | None,
            clone: bool, progress: Progress, timeout: float = 180.0,
            confirm_existing: bool = False, runtime: str | None = None,
            trust_settings: bool = False) -> tuple[HostDir, HostConfig]:
    """Rebuild a host from a bundle into ``target``: the same host (restore) or a new one (clone).

    The new host runs on ``runtime`` (default: the bundle's); restoring over an existing
    host keeps that host's runtime. A bundle is the same whatever runtime made it. Only
    its data and the settings that describe the host are taken unless ``trust_settings``
    (see UNTRUSTED_SETTINGS).
    """
    from pixsim_host.config import RUNTIMES

    if runtime is not None and runtime not in RUNTIMES[:2]:
        raise HostError(f"--runtime must be docker or native, not {runtime!r} (a Kubernetes host is "
                        "restored with pg_restore by hand: see docs/kubernetes.md)")
    from pixsim_host import stack
    from pixsim_host.hosts import check_claims, load_registry
    from pixsim_host.ports import pick_port

    target = target.expanduser().resolve()
    with verified_bundle(bundle_path) as bundle:
        progress("host", f"bundle verified: {len(bundle.manifest['members'])} members, "
                         f"origin {bundle.origin.get('name')} ({bundle.origin.get('host_id')})")
        host = HostDir(target)
        journal = unfinished_restore(host)
        if journal is not None and journal.get("kind") == "new":
            raise HostError(unfinished_message(host, journal))
        existing = load_config(host.config_file) if host.exists() else None
        if existing is not None:
            if clone:
                raise HostError(f"{target} already holds a host; clone into a new directory")
            if existing.host_id != bundle.config.host_id:
                raise HostError(
                    f"{target} holds host {existing.host_id}, but the bundle is of host "
                    f"{bundle.config.host_id}; restore into a new directory, or use `clone`"
                )
            existing_kind = stack.runtime_type(existing).kind
            if runtime is not None and runtime != existing_kind:
                raise HostError(f"{target} holds a host that runs on {existing_kind}; restoring over "
                                f"it keeps its runtime: leave out --runtime, or restore into a new "
                                "directory")
            _check_schema(bundle, host, existing, progress)
            if not confirm_existing:
                raise HostError(f"restoring replaces the data of host {existing.name!r} in {target}; "
                                "pass --yes to confirm (a safety backup is taken first)")
            from pixsim_host.locking import host_lock

            # Replacing a host's data: no other command may run on it meanwhile. Taken only
            # now, so a refused bundle leaves even the lock file unwritten.
            with host_lock(host, command="restore"):
                return _restore_over_existing(bundle, host, existing, progress, timeout,
                                              trust_settings=trust_settings)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise HostError(f"{target} exists and is not an empty directory; restore into a new "
                            "directory")

        data = bundle.config.model_dump(mode="json")
        from pixsim_host.config import new_host_config

        distrust_settings(data, new_host_config(name=bundle.config.name).model_dump(mode="json"),
                          trust=trust_settings, progress=progress)
        if clone:
            new_name = name or f"{bundle.config.name} clone"
            data.update(
                host_id=str(uuid.uuid4()), name=new_name, project=f"pixsim-{slugify(new_name)}",
                lineage=[*data.get("lineage", []), {
                    "host_id": bundle.config.host_id, "name": bundle.config.name,
                    "relation": "cloned-from",
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                }],
            )
        elif name:
            data["name"] = name
        if runtime is not None:
            data["runtime"] = runtime
        if data.get("runtime") == "kubernetes":
            raise HostError("the bundle is of a Kubernetes host; restore it with --runtime docker or "
                            "--runtime native, or into the cluster by hand (see docs/kubernetes.md)")
        _localise_native(data, progress)
        config = parse_config(data, source="the restored config")
        bind = config.backend.bind
        if port is not None:
            data["backend"]["port"] = port
        elif clone:
            claimed = set(load_registry().port_claims())
            data["backend"]["port"] = pick_port(bind, claimed, start=config.backend.port + 1)
            if config.tls.mode != "off":  # the origin keeps its TLS proxy's port too
                data["tls"]["port"] = pick_port(bind, claimed | {data["backend"]["port"]},
                                                start=config.tls.port + 1)
        config = parse_config(data, source="the restored config")
        config = stack.runtime_type(config).settle_config(
            config, set(load_registry().port_claims(config.host_id)))
        check_claims(config)
        _check_ports_free(config, clone=clone)  # before any data is loaded
        _check_schema(bundle, host, config, progress)

        secrets_file = bundle.staging / SECRETS_MEMBER
        secrets = None
        if secrets_file.is_file() and not clone:
            os.chmod(secrets_file, 0o600)
            secrets = read_secrets(secrets_file)
        from pixsim_host import stack

        stack.check_restorable(config)
        created_dir = not target.exists()
        try:
            target.mkdir(parents=True, exist_ok=True)
            # Until the host is complete, `up` and a new restore here say it is not.
            write_journal(host, "new", None, bundle.source)
            write_secrets(host.secrets_file, secrets or generate_secrets(), config.host_id)
            _load_into(bundle, host, config, progress, timeout,
                       restamp=bundle.config.host_id if clone else None)
            _register(host, config, progress)
        except BaseException:
            progress("host", "restore failed: removing what it created")
            try:
                _undo_new_host(host, config, created_dir)
            finally:
                release(host)
            raise
        clear_journal(host)
        return host, config


def _check_ports_free(config: HostConfig, *, clone: bool) -> None:
    """Every port the new host listens on is free now; a taken one is named with the
    registered host that holds it (the original host, still running, is the usual one)."""
    from pixsim_host.hosts import load_registry
    from pixsim_host.ports import pick_port, port_is_free

    bind = config.backend.bind
    entries = load_registry().entries
    claimed = {p for e in entries for p in (e.port, *e.extra_ports)}
    for port in (config.backend.port, *config.local_service_ports):
        if port_is_free(bind, port):
            continue
        holder = next((e for e in entries if port in (e.port, *e.extra_ports)), None)
        option = "--port" if port == config.backend.port else None
        free = pick_port(bind, claimed, start=port + 1) if option else None
        other_way = f"or pass {option} {free}" if option else "or free that port"
        if holder is not None and holder.host_id == config.host_id and not clone:
            raise HostError(
                f"port {port} is held by this same host, still running from {holder.directory}; "
                f"a restore moves a host: stop it there first (`pixsim-host down --dir "
                f"{holder.directory}`), or make a second, new host with `pixsim-host clone`")
        if holder is not None:
            raise HostError(f"port {port} is held by the registered host {holder.name!r} "
                            f"({holder.directory}); stop it (`pixsim-host down --dir "
                            f"{holder.directory}`) {other_way}")
        raise HostError(f"port {port} on {bind} is in use by a program that is not a registered "
                        f"host; stop that program {other_way}")


def _localise_native(data: dict[str, Any], progress: Progress) -> None:
    """A bundle's native settings describe its origin machine: ports are allocated anew here,
    and paths that do not exist here are dropped (back to the packaged binaries)."""
    native = data.setdefault("native", {})
    native["postgres_port"] = native["redis_port"] = None
    if data.get("runtime") != "native":
        return
    for key in ("postgres_bin_dir", "redis_server", "backend_workdir"):
        value = native.get(key)
        if value and not Path(value).expanduser().exists():
            progress("host", f"native.{key} {value} does not exist on this machine; it is reset to "
                             "the default")
            native[key] = None


def _register(host: HostDir, config: HostConfig, progress: Progress) -> None:
    """Record the restored host; a restore is a move, so an older entry of it is replaced."""
    from pixsim_host.hosts import edit_registry, record

    with edit_registry() as registry:
        moved = [e for e in registry.entries
                 if e.host_id == config.host_id and e.directory != str(host.root)]
        registry.entries = [e for e in registry.entries if e not in moved]
    for entry in moved:
        progress("host", f"this host was registered in {entry.directory}; the registry now points "
                         f"here. Delete that directory: `up` there would start a second copy of "
                         "the same host")
    record(host, config)


def put_data_back(host: HostDir, config: HostConfig, bundle_path: Path, progress: Progress,
                  timeout: float, *, bring_up: bool) -> None:
    """Replace all of the host's data (database, Redis, PIXSIM_HOME, plugins) with a bundle's
    of this same host, e.g. the safety backup of an upgrade that is being undone. The bundle is
    verified before anything is removed; ``bring_up`` then starts the host verified."""
    from pixsim_host import stack

    with verified_bundle(bundle_path) as verified:
        runtime = stack.open_runtime(host, config)
        runtime.stop_and_remove(progress)
        runtime.remove_volumes(runtime.volumes())
        _load_into(verified, host, config, progress, timeout, restamp=None, bring_up=bring_up)


def _load_into(bundle: VerifiedBundle, host: HostDir, config: HostConfig, progress: Progress,
               timeout: float, *, restamp: str | None, bring_up: bool = True) -> None:
    """Write the host files, fill fresh data from the bundle, bring the host up verified
    (or leave db and Redis running, the rest stopped, without ``bring_up``)."""
    from pixsim_host import stack
    from pixsim_host.render import apply_config

    apply_config(host, config)
    if host.plugins_dir.exists():
        shutil.rmtree(host.plugins_dir)
    if (bundle.staging / "plugins").is_dir():
        shutil.copytree(bundle.staging / "plugins", host.plugins_dir)
    else:
        host.plugins_dir.mkdir()
    for path in [host.plugins_dir, *host.plugins_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    runtime = stack.open_data_runtime(host, config)
    deadline = time.monotonic() + timeout
    config = stack.prepare(runtime, host, "missing", progress) or config
    runtime.load_redis(bundle.staging / REDIS_MEMBER, deadline, progress)
    if (bundle.staging / HOME_MEMBER).is_file():  # bundles before PIXSIM_HOME travelled lack it
        runtime.load_home(bundle.staging / HOME_MEMBER, progress)
    runtime.start(progress, deadline, verified_elsewhere=frozenset({"backend"}),
                  only=frozenset({"db", "redis"})).close()
    runtime.restore_database(bundle.staging / DATABASE_MEMBER, progress)
    # The database is the bundle's now: this host's backend code has not migrated it yet.
    forget_migrations(host)
    secrets = read_secrets(host.secrets_file)
    # The role's password must match this host's .env: it differs from the origin's when
    # the bundle carried no secrets.
    runtime.set_database_password(secrets["POSTGRES_PASSWORD"])
    if restamp is not None:
        progress("db", f"re-stamping the stored identity to {config.host_id}")
        runtime.restamp_identity(config.host_id)
    if bring_up:
        stack.up(host, config, pull="missing", timeout=max(30.0, deadline - time.monotonic()),
                 progress=progress)


def _undo_new_host(host: HostDir, config: HostConfig, created_dir: bool) -> None:
    """Remove every container, volume and file a failed restore created."""
    with contextlib.suppress(Exception):
        from pixsim_host import stack

        runtime = stack.open_runtime(host, config)
        runtime.stop_and_remove(lambda _s, _m: None)
        runtime.remove_volumes(runtime.volumes())
    if created_dir:
        shutil.rmtree(host.root, ignore_errors=True)
    else:
        for child in host.root.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def _restore_over_existing(bundle: VerifiedBundle, host: HostDir, existing: HostConfig,
                           progress: Progress, timeout: float, *,
                           trust_settings: bool = False) -> tuple[HostDir, HostConfig]:
    """Same host_id, existing directory: safety backup, replace the data, fall back on failure."""
    from pixsim_host import stack

    journal = unfinished_restore(host)
    earlier = Path(str(journal.get("safety_backup"))) if journal and journal.get("safety_backup") else None
    if earlier is not None and earlier.is_file():
        safety = earlier
        progress("host", f"an earlier restore here did not finish: its safety backup {safety} stays "
                         "the way back (the state now is not worth a new one)")
    else:
        progress("host", "taking a safety backup of the current state first")
        safety = backup(host, existing, output=host.root / "backups" / (
            f"safety-before-restore-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.tar.gz"),
            include_secrets=True, progress=progress).path
    # The directory keeps how and where it runs: runtime, ports, native settings; and what
    # the bundle may not choose stays as this host has it.
    data = {**bundle.config.model_dump(mode="json"),
            "runtime": stack.runtime_type(existing).kind,
            "backend": existing.backend.model_dump(mode="json"),
            "native": existing.native.model_dump(mode="json")}
    distrust_settings(data, existing.model_dump(mode="json"), trust=trust_settings, progress=progress)
    config = parse_config(data, source="the restored config")
    original_config = host.config_file.read_bytes()
    original_plugins = host.state_dir / "plugins-before-restore"
    if original_plugins.exists():
        shutil.rmtree(original_plugins)
    if host.plugins_dir.is_dir():
        shutil.copytree(host.plugins_dir, original_plugins)

    def wipe() -> None:
        runtime = stack.open_runtime(host, existing)
        runtime.stop_and_remove(progress)
        runtime.remove_volumes(runtime.volumes())

    write_journal(host, "over-existing", safety, bundle.source)
    try:
        with terminate_as_interrupt():
            wipe()
            _load_into(bundle, host, config, progress, timeout, restamp=None)
    except BaseException as failure:
        interrupted = not isinstance(failure, Exception)
        progress("host", f"restore {'interrupted' if interrupted else 'failed'}: putting the previous "
                         "state back from the safety backup")
        try:
            atomic_write(host.config_file, original_config)
            with verified_bundle(safety) as previous:
                with contextlib.suppress(Exception):
                    wipe()
                # The safety backup's own config: the host's as it was before any restore.
                previous_config = parse_config(
                    {**previous.config.model_dump(mode="json"),
                     "native": existing.native.model_dump(mode="json")}, source="the safety backup")
                _load_into(previous, host, previous_config, progress, timeout, restamp=None)
        except BaseException as second:
            why = "it was interrupted too" if not isinstance(second, Exception) else \
                (second.message if isinstance(second, HostError) else type(second).__name__)
            raise HostError(
                f"the restore {'was interrupted' if interrupted else 'failed'} and putting the "
                f"previous state back did not finish ({why}); the data from before is in the "
                f"safety backup {safety}: put it back with `pixsim-host restore {safety} --dir "
                f"{host.root} --yes`", exit_code=130 if interrupted else 1) from None
        clear_journal(host)
        if isinstance(failure, HostError):
            raise HostError(f"{failure.message}; the host was put back as it was and verified "
                            f"(safety backup {safety})", details=failure.details) from None
        if interrupted:
            raise HostError(f"interrupted: the host was put back as it was and verified, nothing is "
                            f"lost (safety backup {safety})", exit_code=130) from None
        raise
    finally:
        shutil.rmtree(original_plugins, ignore_errors=True)
        release(host)
    clear_journal(host)
    return host, config
