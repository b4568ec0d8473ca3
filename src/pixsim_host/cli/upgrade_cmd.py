"""``upgrade`` and ``rollback``: a new backend, PostgreSQL or Redis version, safely, and back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixsim_host.cli.common import (
    LIFECYCLE,
    DirOption,
    JsonOption,
    NoWaitOption,
    YesOption,
    add_command,
    confirm,
    host_identity,
    locked_host,
    seconds,
    stdin_is_tty,
    usage_error,
)
from pixsim_host.cli.output import Progress, emit, info

if TYPE_CHECKING:
    from pixsim_host.upgrade import Plan, RollbackPlan

DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")]
TimeoutOption = Annotated[float, typer.Option(help="Seconds each `up` (the upgrade, and a rollback) "
                                                   "may take.", callback=seconds)]


def _short(image_id: str | None) -> str:
    return image_id.removeprefix("sha256:")[:12] if image_id else "not present"


def _plan_lines(plan: Plan) -> None:
    if not plan.changes:
        info("  images: unchanged (a new build or revision of the backend's checkout)")
    for key, (old, new) in plan.changes.items():
        info(f"  {key}: {old} ({_short(plan.before['image_ids'].get(key))}) -> {new} "
             f"({_short(plan.new_image_ids.get(key))})")
    if plan.before.get("code_revision"):
        info(f"  code revision (backend.source): {plan.before['code_revision']}")
    info(f"  migrations would run: {plan.migrations}")
    if plan.postgres is not None:
        info(f"  PostgreSQL major: {plan.postgres.old} (from {plan.postgres.old_source}) -> "
             f"{plan.postgres.new} (from {plan.postgres.new_source})")
    for note in plan.notes:
        info(f"  note: {note}")


def upgrade(
    directory: DirOption = None,
    image: Annotated[str | None, typer.Option("--image", metavar="IMAGE", show_default=False,
                                              help="The new backend.image.")] = None,
    postgres_image: Annotated[str | None, typer.Option(
        "--postgres-image", metavar="IMAGE", show_default=False,
        help="The new database.image (same PostgreSQL major version).")] = None,
    redis_image: Annotated[str | None, typer.Option(
        "--redis-image", metavar="IMAGE", show_default=False, help="The new redis.image.")] = None,
    with_downtime: Annotated[bool, typer.Option(
        "--with-downtime", help="Stop the backend, migrate, start the new one (the way without a "
                                "proxy), instead of starting the new backend beside the old one "
                                "behind the proxy: for migrations the old code cannot run with.")] = False,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    timeout: TimeoutOption = 300.0,
    no_wait: NoWaitOption = False,
    as_json: JsonOption = False,
) -> None:
    """Upgrade the host: safety backup, new images or build, migrations, every `up` check.

    On a native host with the TLS proxy in front of its backend, the upgrade has no downtime:
    the migrations run while the old backend serves, the new one starts beside it and takes
    traffic once it passes every check (--with-downtime: the stop-migrate-start way).

    Any failure puts the previous version back (and the database from the safety backup
    when migrations had run) and verifies the old host again. Without an image option it
    rebuilds the backend from backend.source (a new commit there) and migrates if needed.

    Examples:
      pixsim-host upgrade --dir my-host --image my-backend:2.1 --dry-run
      pixsim-host upgrade --dir my-host --image my-backend:2.1 --yes
      pixsim-host upgrade --dir my-host --postgres-image pgvector/pgvector:0.8.0-pg16 --yes
    """
    from pixsim_host import upgrade as upgrades

    changes = {key: value for key, value in zip(upgrades.IMAGE_KEYS, (image, postgres_image, redis_image),
                                                strict=True) if value}
    with locked_host(directory, no_wait=no_wait, command="upgrade") as (host, config):
        plan, _ = upgrades.plan_upgrade(host, config, changes)
        if dry_run:
            if emit({**host_identity(host, config), "dry_run": True, **plan.as_json()}):
                return
            info(f"Upgrading host {config.name!r} would change (nothing was changed):")
            _plan_lines(plan)
            return
        if not yes:
            if not stdin_is_tty():
                raise usage_error("upgrade changes the running host (a safety backup is taken "
                                  "first); pass --yes to confirm, or --dry-run to see the changes")
            info(f"Upgrading host {config.name!r}:")
            _plan_lines(plan)
            confirm("Upgrade now?", "nothing was changed")
        with Progress(f"Upgrading {config.name}") as progress:
            _, outcome = upgrades.upgrade(host, config, changes, timeout=timeout, progress=progress,
                                          with_downtime=with_downtime)
    _done(host, config, outcome, "upgraded")


def rollback(
    directory: DirOption = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    timeout: TimeoutOption = 300.0,
    no_wait: NoWaitOption = False,
    as_json: JsonOption = False,
) -> None:
    """Return to the version before the last successful upgrade, and verify it.

    The images go back; when that upgrade ran migrations, the database is restored from its
    safety backup (what was written since is lost: a new safety backup is taken first).

    Examples:
      pixsim-host rollback --dir my-host --dry-run
      pixsim-host rollback --dir my-host --yes
    """
    from pixsim_host import upgrade as upgrades

    with locked_host(directory, no_wait=no_wait, command="rollback") as (host, config):
        plan = upgrades.plan_rollback(host, config)
        if dry_run:
            if emit({**host_identity(host, config), "dry_run": True, **plan.as_json()}):
                return
            info(f"Rolling host {config.name!r} back would change (nothing was changed):")
            _rollback_lines(plan)
            return
        if not yes:
            if not stdin_is_tty():
                raise usage_error("rollback changes the running host" + (
                    " and replaces its database with the one from before the upgrade"
                    if plan.restore_database else "") + "; pass --yes to confirm, or --dry-run")
            _rollback_lines(plan)
            confirm("Roll back now?", "nothing was changed")
        with Progress(f"Rolling back {config.name}") as progress:
            outcome = upgrades.rollback(host, config, plan, timeout=timeout, progress=progress)
    _done(host, config, outcome, "rolled back")


def _rollback_lines(plan: RollbackPlan) -> None:
    info(f"  the upgrade of {plan.upgrade.get('finished_at')}:")
    for key, (now, before) in plan.changes.items():
        info(f"  {key}: {now} -> {before}")
    if plan.restore_database:
        info(f"  the database is restored from {plan.upgrade.get('safety_backup')} (that upgrade "
             "migrated it): what was written since is lost")


def _done(host: Any, config: Any, outcome: Any, verb: str) -> None:
    entry = outcome.entry
    document = {**host_identity(host, config), "outcome": entry["outcome"],
                "safety_backup": entry["safety_backup"],
                "safety_backup_has_secrets": entry["safety_backup_has_secrets"],
                "migrated": entry.get("migrated"), "zero_downtime": entry.get("zero_downtime", False),
                "switch_seconds": entry.get("switch_seconds"),
                "before": entry.get("before"),
                "after": entry.get("after"), "elapsed_seconds": round(outcome.elapsed, 1),
                "up": outcome.report.as_json()}
    if emit(document):
        return
    after = entry.get("after") or {}
    if document["runtime"] == "docker":
        running = ", ".join(f"{key} {value}" for key, value in (after.get("images") or {}).items())
    else:
        revision = after.get("code_revision")
        running = f"code revision {revision}" if revision else "the reference backend of this pixsim-host"
    database = "" if not entry.get("migrated") else (
        "; the database was restored from the upgrade's safety backup" if verb == "rolled back"
        else "; migrations ran")
    info(f"Host {config.name!r} {verb} and verified in {outcome.elapsed:.1f} s: {running}{database}.")
    if entry.get("zero_downtime"):
        info(f"Without downtime: the proxy switched to the new backend once it passed every check "
             f"and back to backend.port once it ran there too ({entry.get('switch_seconds')} s "
             "from the first switch to the last).")
    info(f"Safety backup: {entry['safety_backup']}"
         + (" (holds the host's secrets: the database does)" if entry["safety_backup_has_secrets"]
            else "") + ("; `pixsim-host rollback` returns to the previous version."
                        if verb == "upgraded" else "."))


def register(app: typer.Typer) -> None:
    add_command(app, upgrade, LIFECYCLE)
    add_command(app, rollback, LIFECYCLE)
