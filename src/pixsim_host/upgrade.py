"""Upgrade a host to a new backend, PostgreSQL or Redis version, and roll it back.

An upgrade is a config change that ``up`` carries out (it builds or gets the images, runs
the migrations when the backend's code is new to the database, and verifies everything),
wrapped so that nothing is lost: a safety bundle first (``backup``'s own), kept privately
in ``.pixsim-host/upgrades/``; on any failure the previous config goes back and, when the
migrations had touched the database, all the data (database, Redis, PIXSIM_HOME: the new
version may have written to each) is put back from that bundle; then ``up`` proves the old
host healthy again. Every attempt is recorded, versions before
and after, in ``.pixsim-host/upgrades.json``; ``rollback`` reads it to return to the
version before the last successful upgrade.

A major PostgreSQL version change is refused: a new major cannot read the old one's data
directory, and the supported way is a bundle restored into a new host.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pixsim_host import tls
from pixsim_host.config import HostConfig, parse_config
from pixsim_host.errors import HostError
from pixsim_host.fsutil import atomic_write
from pixsim_host.hostdir import HostDir
from pixsim_host.progress import Progress
from pixsim_host.restore_journal import terminate_as_interrupt
from pixsim_host.schema import STATE_FILE as MIGRATIONS_STATE
from pixsim_host.schema import MigrationFailed, checkout_revision, recorded_revision
from pixsim_host.upgrade_history import load_history, versions_summary
from pixsim_host.upgrade_history import record as _record

if TYPE_CHECKING:
    from pixsim_host.runtime import Runtime
    from pixsim_host.services import HttpService

SAFETY_DIR = "upgrades"
# The config keys an upgrade changes, and the options that change them.
IMAGE_KEYS = ("backend.image", "database.image", "redis.image")


# ---- PostgreSQL major versions ------------------------------------------------------------

_TAG_MAJOR = re.compile(r"^(?:pg)?(\d+)(?:\.(\d+))?(?:[.\-_].*)?$", re.IGNORECASE)


def image_tag(image: str) -> str | None:
    """The tag of an image reference (``postgres:16.3`` -> ``16.3``), None without one."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def major_from_version(version: str) -> str | None:
    """PostgreSQL's major version in a version string: ``16.3`` -> 16, ``9.6.24`` -> 9.6
    (before 10 the major had two numbers), ``pg16`` -> 16, ``16-alpine`` -> 16."""
    found = _TAG_MAJOR.match(version.strip().split(" ", 1)[0])
    if found is None:
        return None
    first = int(found.group(1))
    if first >= 10:
        return str(first)
    if found.group(2) is None or first < 7:
        return None  # "9" alone does not say which 9.x; below 7 it is no PostgreSQL version
    return f"{first}.{int(found.group(2))}"


_PG_MARK = re.compile(r"(?:^|[-_.])pg(\d+)(?:$|[-_.])", re.IGNORECASE)


def major_from_image(image: str) -> str | None:
    """From the tag: a ``pgNN`` part first (``pgvector/pgvector:0.8.0-pg17``), else its version."""
    tag = image_tag(image)
    if not tag:
        return None
    marked = _PG_MARK.search(tag)
    return str(int(marked.group(1))) if marked else major_from_version(tag)


@dataclass
class PostgresMajors:
    old: str | None
    old_source: str  # how the old major was determined
    new: str | None
    new_source: str

    def as_json(self) -> dict[str, Any]:
        return {"old": self.old, "old_determined_from": self.old_source,
                "new": self.new, "new_determined_from": self.new_source}


def postgres_majors(old_image: str, new_image: str, server_version: str | None) -> PostgresMajors:
    """The old and new majors, the running server's own word first, else the image tags."""
    old_source = "unknown"
    old = major_from_version(server_version) if server_version else None
    if old is not None:
        old_source = f"SHOW server_version in the running database ({server_version})"
    else:
        old = major_from_image(old_image)
        if old is not None:
            old_source = f"the image tag of {old_image}"
    new = major_from_image(new_image)
    new_source = f"the image tag of {new_image}" if new is not None else "unknown"
    return PostgresMajors(old, old_source, new, new_source)


def check_postgres_major(host: HostDir, config: HostConfig, majors: PostgresMajors,
                         new_image: str) -> None:
    """Refuse a major version change, spelling out the supported path."""
    if majors.old is None or majors.new is None or majors.old == majors.new:
        return
    bundle = f"{config.project}-pg{majors.old}.tar.gz"
    raise HostError(
        f"{new_image} is PostgreSQL {majors.new} and this host's database is PostgreSQL "
        f"{majors.old} (from {majors.old_source}); a new major version cannot read the old data "
        f"directory, so nothing was changed: move the data through a bundle (a logical dump, which "
        f"the newer PostgreSQL reads), keeping the host_id: "
        f"`pixsim-host backup --dir {host.root} -o {bundle}` (keep it safe: it becomes the only "
        f"copy), `pixsim-host down --dir {host.root} --volumes --yes`, "
        f"`pixsim-host config set database.image {new_image} --dir {host.root}`, "
        f"`pixsim-host up --dir {host.root}` (a new, empty host), then "
        f"`pixsim-host restore {bundle} --dir {host.root} --yes`",
        exit_code=2,
    )


# ---- what changes ------------------------------------------------------------------------


def _get(config: HostConfig, key: str) -> str:
    section, name = key.split(".")
    return str(getattr(getattr(config, section), name))


def changed_config(config: HostConfig, changes: dict[str, str]) -> HostConfig:
    """``config`` with the new images; a new backend image of the same backend keeps the
    migrations and workers the old one had (they would otherwise be dropped with the
    reference backend's defaults)."""
    import shlex

    from pixsim_host.services import migrate_lines, resolve_http_services, resolve_workers

    data = config.model_dump(mode="json")
    for key, value in changes.items():
        section, name = key.split(".")
        data[section][name] = value
    if "backend.image" in changes:
        if data["backend"].get("migrate") is None:
            data["backend"]["migrate"] = migrate_lines(config)
        if data["backend"].get("workers") is None:
            # As commands: the new image's declarations cannot be read from here.
            data["backend"]["workers"] = [{"name": worker.name, "command": shlex.join(worker.argv)}
                                          for worker in resolve_workers(config)]
        if any(isinstance(entry, str) or entry.get("command") is None
               for entry in data["backend"].get("services") or []):
            # The HTTP services too, with the port, variable and health endpoint declared.
            data["backend"]["services"] = [pinned_http_service(service)
                                           for service in resolve_http_services(config)]
    return parse_config(data, source="the upgraded config")


def pinned_http_service(service: HttpService) -> dict[str, Any]:
    """An HTTP service as a command entry of backend.services ({bind} and {port} left to fill)."""
    import shlex

    listen = ["--host", "{bind}", "--port", "{port}"] if service.asgi else []
    return {"name": service.name, "command": shlex.join([*service.command, *listen]),
            "port": service.port, "port_env": service.port_env or None,
            "health_endpoint": service.health_endpoint}


code_revision = checkout_revision


def _local_image_id(runtime: Runtime, image: str) -> str | None:
    """The id of an image present on the engine (Docker), None when absent or no engine images."""
    lookup = getattr(runtime, "image_id", None)
    if lookup is None:
        return None
    found = lookup(image)
    return str(found) if found else None


def _read_migrations_state(host: HostDir) -> str | None:
    try:
        return (host.state_dir / MIGRATIONS_STATE).read_text(encoding="utf-8")
    except OSError:
        return None


def _write_migrations_state(host: HostDir, text: str | None) -> None:
    path = host.state_dir / MIGRATIONS_STATE
    if text is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write(path, text, mode=0o600)


def versions(host: HostDir, config: HostConfig, runtime: Runtime | None = None) -> dict[str, Any]:
    """What runs now: images and their ids, the checkout's revision, the schema revisions."""
    from pixsim_host import stack

    runtime = runtime or stack.open_runtime(host, config)
    images = {key: _get(config, key) for key in IMAGE_KEYS}
    schema: dict[str, list[str]] | None = None
    with contextlib.suppress(HostError, AttributeError):
        schema = runtime.schema_revisions()  # type: ignore[attr-defined]
    return {
        "images": images,
        "image_ids": {key: _local_image_id(runtime, image) for key, image in images.items()},
        "code_revision": code_revision(config),
        "schema_revisions": schema,
    }


@dataclass
class Plan:
    changes: dict[str, list[str]]  # key -> [old, new]
    before: dict[str, Any]
    new_image_ids: dict[str, str | None]
    migrations: str  # "yes", "no", "unknown (...)"
    postgres: PostgresMajors | None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"changes": {k: {"old": v[0], "new": v[1]} for k, v in self.changes.items()},
                "before": self.before, "new_image_ids": self.new_image_ids,
                "migrations_would_run": self.migrations,
                "postgres_major": self.postgres.as_json() if self.postgres else None,
                "notes": self.notes}


def plan_upgrade(host: HostDir, config: HostConfig, changes: dict[str, str]) -> tuple[Plan, HostConfig]:
    """What the upgrade would change; refuses what it must not do. Changes nothing."""
    from pixsim_host import stack
    from pixsim_host.schema import migrations_due

    changes = {key: value for key, value in changes.items() if value and value != _get(config, key)}
    unfinished = unfinished_change(load_history(host))
    if unfinished is not None:
        raise HostError(f"an earlier {unfinished.get('kind')} of this host did not finish (it was "
                        f"stopped, or its way back failed); run `pixsim-host rollback --dir "
                        f"{host.root} --yes` first, which puts the host back from its safety backup "
                        f"{unfinished.get('safety_backup')}")
    kind = stack.runtime_type(config)
    if not getattr(kind, "moves_data", True):
        raise HostError(f"host {config.name!r} runs on {kind.words.title}, where pixsim-host cannot "
                        "take the safety backup an upgrade needs; change the images with `pixsim-host "
                        "config set` and roll out with `pixsim-host up` (the cluster keeps the old "
                        "pods until the new ones are ready)", exit_code=2)
    if changes and kind.kind != "docker":
        raise HostError(f"host {config.name!r} runs on {kind.words.title}, which runs no images; "
                        "update the backend's checkout (backend.source) or pixsim-host itself, then "
                        "run `pixsim-host upgrade` without image options", exit_code=2)
    notes: list[str] = []
    majors = None
    if "database.image" in changes:
        # Refused before anything else is asked of the engine (and even without one).
        server = None
        with contextlib.suppress(HostError, AttributeError):
            server = stack.open_runtime(host, config, refresh=False).server_version()  # type: ignore[attr-defined]
        majors = postgres_majors(config.database.image, changes["database.image"], server)
        check_postgres_major(host, config, majors, changes["database.image"])
        if majors.new is None:
            notes.append(f"the PostgreSQL major version of {changes['database.image']} cannot be read "
                         "from its tag; PostgreSQL itself refuses a data directory of another major, "
                         "and the upgrade then rolls back")
    new = changed_config(config, changes)
    runtime = stack.open_runtime(host, config, refresh=False)
    before = versions(host, config, runtime)
    if config.backend.source:
        # The checkout may have moved on already (that is the upgrade): the code that runs is
        # the one the last upgrade left, or the one the database was last migrated with.
        last = next((e for e in reversed(load_history(host)) if e.get("outcome") == "succeeded"), None)
        ran = ((last or {}).get("after") or {}).get("code_revision") or recorded_revision(host)
        if ran:
            before["code_revision"] = ran
    if not changes and not config.backend.source and kind.kind == "docker":
        raise HostError("nothing to upgrade: the host already runs these images; give the new one "
                        "(--image IMAGE, --postgres-image IMAGE, --redis-image IMAGE), or set "
                        "backend.source to build from your checkout", exit_code=2)
    new_ids = {key: _local_image_id(runtime, _get(new, key)) for key in IMAGE_KEYS}
    new_runtime = stack.open_runtime(host, new, refresh=False) if changes else runtime
    migrations = "unknown"
    jobs = getattr(new_runtime, "backend_code", None)
    if config.backend.dockerfile:
        migrations = "unknown (decided after the new build: when the checkout's content changed)"
    elif stack.runtime_type(config).kind == "docker":
        new_id = new_ids["backend.image"]
        if new_id is None:
            migrations = f"unknown ({new.backend.image} is not present yet: it is pulled or built first)"
        else:
            migrations = "yes" if migrations_due(host, new, new_id) else "no"
    elif jobs is not None:
        migrations = "yes" if migrations_due(host, new, str(jobs())) else "no"
    if not changes and kind.kind != "docker" and migrations == "no":
        raise HostError("nothing to upgrade: the backend's code is the one this database was last "
                        "migrated with; update the checkout (backend.source) or pixsim-host first",
                        exit_code=2)
    plan = Plan({key: [_get(config, key), value] for key, value in changes.items()}, before,
                new_ids, migrations, majors, notes)
    return plan, new


# ---- history -------------------------------------------------------------------------------


def _finished(host: HostDir, config: HostConfig, entry: dict[str, Any]) -> None:
    """Record a successful upgrade or rollback in the history, then in the host registry."""
    from pixsim_host.hosts import record_versions

    _record(host, entry)
    record_versions(host, config, versions_summary(entry))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---- the safety backup ------------------------------------------------------------------------


def safety_backup(host: HostDir, config: HostConfig, stamp: str, progress: Progress,
                  kind: str = "") -> tuple[Path, bool]:
    """A full bundle of the host now, private in .pixsim-host/upgrades/; whether it holds
    secrets (only when the database holds them, so a bundle without them is refused)."""
    from pixsim_host.backup import backup

    folder = host.state_dir / SAFETY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    target = folder / f"{kind}{stamp}.tar.gz"
    progress("host", f"taking a safety backup: {target}")
    try:
        return backup(host, config, output=target, include_secrets=False, progress=progress).path, False
    except HostError as exc:
        if "--include-secrets" not in exc.message:
            raise HostError(f"the safety backup failed, so nothing was changed: {exc.message}",
                            details=exc.details) from None
    progress("host", "the database holds this host's secrets, so the safety backup holds them too "
                     "(0600, in the host directory)")
    return backup(host, config, output=target, include_secrets=True, progress=progress).path, True


def _put_data_back(host: HostDir, config: HostConfig, bundle: Path, migrations_state: str | None,
                   progress: Progress, timeout: float) -> None:
    """All the host's data (database, Redis, PIXSIM_HOME) back from ``bundle``, the services
    stopped but db and Redis; the migration record as it was when that bundle was made."""
    from pixsim_host.backup import put_data_back

    progress("host", f"putting the database, Redis and PIXSIM_HOME back from {bundle.name}")
    put_data_back(host, config, bundle, progress, timeout, bring_up=False)
    _write_migrations_state(host, migrations_state)


# ---- upgrade and rollback -------------------------------------------------------------------


@dataclass
class Outcome:
    entry: dict[str, Any]
    report: Any  # stack.UpReport
    elapsed: float


def _change(host: HostDir, old: HostConfig, new: HostConfig, entry: dict[str, Any], *,
            restore_first: tuple[Path, str | None] | None, timeout: float,
            progress: Progress, rolling: bool = False) -> Outcome:
    """Safety backup, ``new`` saved, (the database restored), ``up``; on any failure the old
    config, the old database if it changed, and a verified ``up`` of the old host.

    ``rolling``: the backend is replaced without downtime (``rolling.rolling_up``); a failure
    before traffic went to the new code leaves the old backend serving."""
    from pixsim_host import stack
    from pixsim_host.render import apply_config
    from pixsim_host.rolling import RollingFailed, rolling_up

    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    safety, with_secrets = safety_backup(host, old, stamp, progress,
                                         kind="before-rollback-" if restore_first else "")
    migrations_before = _read_migrations_state(host)
    entry.update(safety_backup=str(safety), safety_backup_has_secrets=with_secrets,
                 migrations_state_before=migrations_before, started_at=_now(), outcome="running")
    _record(host, entry)
    database_changed = False
    try:
        with terminate_as_interrupt():  # a SIGTERM, like Ctrl-C, takes the way back
            apply_config(host, new)
            if restore_first is not None:
                database_changed = True
                _put_data_back(host, new, restore_first[0], restore_first[1], progress, timeout)
            if rolling:
                rolled = rolling_up(host, new, timeout=timeout, progress=progress)
                report = rolled.report
                entry.update(switch_seconds=round(rolled.switch_seconds, 2))
            else:
                report = stack.up(host, new, timeout=timeout, progress=progress)
    except BaseException as failure:
        database_changed = database_changed or isinstance(failure, MigrationFailed) or \
            _read_migrations_state(host) != migrations_before
        if isinstance(failure, RollingFailed) and not failure.switched and (
                not database_changed or _schema_unchanged(host, new, entry)):
            # The migrations, if they ran, applied nothing: only their record moved.
            _write_migrations_state(host, migrations_before)
            _kept_serving(host, old, safety, failure.cause, entry, timeout, progress)
        message = failure.message if isinstance(failure, HostError) else (
            "interrupted" if not isinstance(failure, Exception) else f"{type(failure).__name__}: {failure}")
        if isinstance(failure, MigrationFailed):
            # Its own advice (fix, then migrate) is for `up`; here the old version comes back.
            message = message.split("; the backend was not started", 1)[0]
        entry.update(outcome="failed", failure=message, migrated=database_changed,
                     finished_at=_now())
        _record(host, entry)
        _put_back(host, old, safety, migrations_before, database_changed, failure, message,
                  timeout, progress, entry)
    entry.update(outcome="succeeded", finished_at=_now(), after=versions(host, new),
                 migrated=database_changed or _read_migrations_state(host) != migrations_before,
                 elapsed_seconds=round(time.monotonic() - started, 1))
    _finished(host, new, entry)
    return Outcome(entry, report, time.monotonic() - started)


def _schema_unchanged(host: HostDir, config: HostConfig, entry: dict[str, Any]) -> bool:
    """Whether every migration chain is at the revision it was before the upgrade."""
    before = (entry.get("before") or {}).get("schema_revisions")
    with contextlib.suppress(HostError):
        return before is not None and versions(host, config).get("schema_revisions") == before
    return False


def _kept_serving(host: HostDir, old: HostConfig, safety: Path, failure: HostError,
                  entry: dict[str, Any], timeout: float, progress: Progress) -> NoReturn:
    """A rolling upgrade that failed before the switch, the database untouched: the old
    backend never stopped serving; the old config goes back and the old backend is checked."""
    from pixsim_host.health import ProbeError, wait_for_backend
    from pixsim_host.render import apply_config

    entry.update(outcome="failed", failure=failure.message, migrated=False, finished_at=_now())
    _record(host, entry)
    apply_config(host, old)
    try:
        wait_for_backend(old.local_url, old.host_id, time.monotonic() + min(timeout, 60.0),
                         lambda: None, progress)
    except ProbeError as exc:
        entry.update(rolled_back=False, rollback_failure=f"the old backend does not answer: {exc}")
        _record(host, entry)
        raise HostError(f"{failure.message}; the old backend, which was never stopped, does not "
                        f"pass its checks either ({exc}); the data from before is in the safety "
                        f"backup {safety}: `pixsim-host rollback --dir {host.root} --yes`",
                        details=failure.details) from None
    entry.update(rolled_back=True)
    _record(host, entry)
    later = ""
    if checkout_code_changed(host, old):
        before = (entry.get("before") or {}).get("code_revision")
        revision = f"`git -C {old.backend.source} checkout {before}`" if before else \
            f"put the checkout {old.backend.source} back as it was"
        later = (f"; it still runs the code it started with, and the next `up` would start the "
                 f"checkout's: {revision} first")
    raise HostError(f"{failure.message}; nothing was switched: the old backend kept serving "
                    f"throughout and is verified{later}; the database was not changed (safety "
                    f"backup {safety})", details=failure.details, exit_code=failure.exit_code) from None


def _put_old_back(host: HostDir, old: HostConfig, safety: Path, migrations_before: str | None,
                  database_changed: bool, timeout: float, progress: Progress) -> None:
    from pixsim_host import stack
    from pixsim_host.render import apply_config

    apply_config(host, old)
    if database_changed:
        _put_data_back(host, old, safety, migrations_before, progress, timeout)
    if checkout_code_changed(host, old):
        # The new code is the operator's checkout, which pixsim-host never changes: an `up`
        # now would run (and migrate) that same code again. The host stays stopped.
        stack.down(host, old, progress=progress)
        return
    stack.up(host, old, timeout=timeout, progress=progress)


def checkout_code_changed(host: HostDir, config: HostConfig) -> bool:
    """Whether the backend's code is its checkout's (a native backend.source, or a Docker
    build of it), so the old code cannot be put back by pixsim-host."""
    if not config.backend.source:
        return False
    from pixsim_host import stack

    return stack.runtime_type(config).kind != "docker" or bool(config.backend.dockerfile)


def _put_back(host: HostDir, old: HostConfig, safety: Path, migrations_before: str | None,
              database_changed: bool, failure: BaseException, message: str, timeout: float,
              progress: Progress, entry: dict[str, Any]) -> NoReturn:
    interrupted = not isinstance(failure, Exception)
    details = failure.details if isinstance(failure, HostError) else None
    progress("host", "putting the previous version back" +
             (" and restoring the database from the safety backup" if database_changed else ""))
    try:
        with terminate_as_interrupt():
            _put_old_back(host, old, safety, migrations_before, database_changed, timeout, progress)
    except BaseException as again:
        why = again.message if isinstance(again, HostError) else (
            "interrupted" if not isinstance(again, Exception) else type(again).__name__)
        entry.update(rolled_back=False, rollback_failure=why)
        _record(host, entry)
        raise HostError(
            f"{message}; putting the previous version back failed too ({why}); the data from "
            f"before is in the safety backup {safety}: once the engine and the images are fine, "
            f"`pixsim-host rollback --dir {host.root} --yes` tries again",
            details=details, exit_code=130 if interrupted else 1) from None
    entry.update(rolled_back=True)
    _record(host, entry)
    database = "; the database, Redis and PIXSIM_HOME were restored from the safety backup" \
        if database_changed else "; the database was not changed"
    if checkout_code_changed(host, old):
        before = (entry.get("before") or {}).get("code_revision")
        source = old.backend.source
        revision = f"`git -C {source} checkout {before}`" if before else \
            f"put the checkout {source} back as it was"
        raise HostError(
            f"{'interrupted' if interrupted else message}{database}; the host is stopped, because "
            f"its code is your checkout's, which pixsim-host does not change: {revision}, then "
            f"`pixsim-host up --dir {host.root}` (safety backup {safety})",
            details=details, exit_code=130 if interrupted else 1) from None
    raise HostError(
        f"{'interrupted' if interrupted else message}; the previous version was put back{database} "
        f"and the host is verified healthy again (safety backup {safety})",
        details=details, exit_code=130 if interrupted else 1) from None


PINNED_KEYS = ("migrate", "workers", "services")


def _pinned(old: HostConfig, new: HostConfig) -> dict[str, dict[str, Any]]:
    """The backend defaults the upgrade wrote into the config (see changed_config), old and new,
    so a rollback takes them back out."""
    before, after = old.backend.model_dump(mode="json"), new.backend.model_dump(mode="json")
    return {f"backend.{key}": {"old": before.get(key), "new": after.get(key)}
            for key in PINNED_KEYS if before.get(key) != after.get(key)}


def upgrade(host: HostDir, config: HostConfig, changes: dict[str, str], *, timeout: float,
            progress: Progress, with_downtime: bool = False) -> tuple[Plan, Outcome]:
    from pixsim_host import rolling

    plan, new = plan_upgrade(host, config, changes)
    for note in plan.notes:
        progress("host", note)
    why_not = "--with-downtime was given" if with_downtime else rolling.available(host, config)
    if why_not is None:
        progress("host", "upgrading without downtime: the new backend starts beside the old one "
                         "and takes traffic once it passes every check")
    elif tls.enabled(config):
        progress("host", f"upgrading with a short downtime ({why_not})")
    entry: dict[str, Any] = {
        "id": datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ"), "kind": "upgrade",
        "changes": plan.as_json()["changes"], "before": plan.before,
        "postgres_major": plan.postgres.as_json() if plan.postgres else None,
        "pinned": _pinned(config, new),
        "zero_downtime": why_not is None,
    }
    return plan, _change(host, config, new, entry, restore_first=None, timeout=timeout,
                         progress=progress, rolling=why_not is None)


@dataclass
class RollbackPlan:
    upgrade: dict[str, Any]
    config: HostConfig
    changes: dict[str, list[str]]
    restore_database: bool
    unfinished: bool = False  # the upgrade did not finish: put the host back from its safety backup

    def as_json(self) -> dict[str, Any]:
        return {"upgrade_id": self.upgrade.get("id"), "unfinished": self.unfinished,
                "upgraded_at": self.upgrade.get("finished_at"),
                "changes": {k: {"old": v[0], "new": v[1]} for k, v in self.changes.items()},
                "restores_database": self.restore_database,
                "from_safety_backup": self.upgrade.get("safety_backup") if self.restore_database else None}


def plan_rollback(host: HostDir, config: HostConfig) -> RollbackPlan:
    entries = load_history(host)
    done = {e.get("rolls_back") for e in entries if e.get("kind") == "rollback"
            and e.get("outcome") == "succeeded"}
    unfinished = unfinished_change(entries)
    if unfinished is not None and unfinished.get("kind") == "rollback":
        unfinished = next((e for e in entries if e.get("id") == unfinished.get("rolls_back")), None)
    last = unfinished or next((e for e in reversed(entries) if e.get("kind") == "upgrade"
                               and e.get("outcome") == "succeeded" and e.get("id") not in done), None)
    if last is None:
        raise HostError("there is no successful upgrade to roll back (see .pixsim-host/upgrades.json); "
                        "nothing was changed", exit_code=2)
    changes: dict[str, list[str]] = {}
    back: dict[str, str] = {}
    for key, change in (last.get("changes") or {}).items():
        if key not in IMAGE_KEYS or not isinstance(change, dict):
            continue
        if unfinished is not None and _get(config, key) == change.get("old"):
            continue  # the way back had put it back already
        if _get(config, key) != change.get("new"):
            raise HostError(f"{key} is {_get(config, key)} now, not {change.get('new')} as the last "
                            f"upgrade left it; it was changed since, so rollback would undo more "
                            f"than the upgrade: set it yourself (`pixsim-host config set {key} "
                            f"{change.get('old')}`) or upgrade to the version you want", exit_code=2)
        changes[key] = [_get(config, key), str(change.get("old"))]
        back[key] = str(change.get("old"))
    # An upgrade that did not finish may have migrated: restored unless it is known it did not.
    restore = bool(last.get("migrated")) if unfinished is None else last.get("migrated") is not False
    safety = Path(str(last.get("safety_backup") or ""))
    if restore and not safety.is_file():
        raise HostError(f"the last upgrade migrated the database and its safety backup {safety} is "
                        "gone, so the old schema cannot be put back; nothing was changed")
    if not back and not restore:
        raise HostError("the last upgrade changed no image and no schema (a new build of the "
                        "checkout): roll the checkout back (`git checkout`) and run `pixsim-host up`",
                        exit_code=2)
    before_revision = (last.get("before") or {}).get("code_revision")
    if checkout_code_changed(host, config) and before_revision \
            and code_revision(config) != before_revision:
        raise HostError(f"the backend's code is your checkout's, now at {code_revision(config)}, and "
                        f"the upgrade started from {before_revision}; check that out first (`git -C "
                        f"{config.backend.source} checkout {before_revision}`), then run rollback "
                        "again; nothing was changed", exit_code=2)
    data = config.model_dump(mode="json")
    for key, value in back.items():
        section, name = key.split(".")
        data[section][name] = value
    for key, pinned in (last.get("pinned") or {}).items():
        section, name = key.split(".")
        if isinstance(pinned, dict) and name in PINNED_KEYS and data[section].get(name) == pinned.get("new"):
            data[section][name] = pinned.get("old")
    return RollbackPlan(last, parse_config(data, source="the rolled-back config"), changes, restore,
                        unfinished=unfinished is not None)


def unfinished_change(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last upgrade or rollback if it neither finished nor was put back (killed, or its
    way back failed): the host may be half-changed."""
    last = entries[-1] if entries else None
    if last is None:
        return None
    if last.get("outcome") == "running" or (last.get("outcome") == "failed"
                                            and last.get("rolled_back") is False):
        return last
    return None


def rollback(host: HostDir, config: HostConfig, plan: RollbackPlan, *, timeout: float,
             progress: Progress) -> Outcome:
    entry: dict[str, Any] = {
        "id": datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ"), "kind": "rollback",
        "rolls_back": plan.upgrade.get("id"), "changes": plan.as_json()["changes"],
        "before": versions(host, config), "restored_database": plan.restore_database,
    }
    restore = (Path(str(plan.upgrade["safety_backup"])),
               plan.upgrade.get("migrations_state_before")) if plan.restore_database else None
    if plan.unfinished:
        return _recover(host, plan, entry, restore, timeout=timeout, progress=progress)
    return _change(host, config, plan.config, entry, restore_first=restore, timeout=timeout,
                   progress=progress)


def _recover(host: HostDir, plan: RollbackPlan, entry: dict[str, Any],
             restore: tuple[Path, str | None] | None, *, timeout: float, progress: Progress) -> Outcome:
    """Finish the way back of an upgrade that did not finish: the host is half-changed and
    not worth a safety backup of its own; the upgrade's is the way back."""
    from pixsim_host import stack
    from pixsim_host.render import apply_config

    started = time.monotonic()
    safety = Path(str(plan.upgrade.get("safety_backup")))
    entry.update(safety_backup=str(safety), safety_backup_has_secrets=bool(
        plan.upgrade.get("safety_backup_has_secrets")), started_at=_now(), outcome="running")
    _record(host, entry)
    try:
        with terminate_as_interrupt():
            apply_config(host, plan.config)
            if restore is not None:
                _put_data_back(host, plan.config, restore[0], restore[1], progress, timeout)
            report = stack.up(host, plan.config, timeout=timeout, progress=progress)
    except BaseException as failure:
        why = failure.message if isinstance(failure, HostError) else (
            "interrupted" if not isinstance(failure, Exception) else type(failure).__name__)
        entry.update(outcome="failed", failure=why, rolled_back=False, finished_at=_now())
        _record(host, entry)
        raise HostError(f"putting the host back as it was before the unfinished upgrade failed: "
                        f"{why}; its data from before is in the safety backup {safety}: fix the "
                        f"cause and run `pixsim-host rollback --dir {host.root} --yes` again",
                        exit_code=1 if isinstance(failure, Exception) else 130) from None
    upgrade_entry = dict(plan.upgrade)
    upgrade_entry.update(rolled_back=True)
    _record(host, upgrade_entry)
    entry.update(outcome="succeeded", finished_at=_now(), after=versions(host, plan.config),
                 migrated=restore is not None, elapsed_seconds=round(time.monotonic() - started, 1))
    _finished(host, plan.config, entry)
    return Outcome(entry, report, time.monotonic() - started)
