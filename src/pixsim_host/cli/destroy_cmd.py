"""``destroy``: remove a host for good (services, data, registration, directory)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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
    stdin_is_tty,
    usage_error,
)
from pixsim_host.cli.output import Progress, emit, info

if TYPE_CHECKING:
    from pixsim_host.config import HostConfig
    from pixsim_host.hostdir import HostDir


def _running(host: HostDir, config: HostConfig) -> bool:
    from pixsim_host import stack
    from pixsim_host.errors import HostError

    try:
        return stack.backend_running(host, config)
    except HostError:
        return False  # no engine: nothing of it can be running there


def destroy(
    directory: DirOption = None,
    yes: YesOption = False,
    backup_to: Annotated[
        Path | None, typer.Option("--backup", "-o", metavar="FILE",
                                  help="First back the host up into FILE (it must be running).",
                                  show_default=False)
    ] = None,
    no_wait: NoWaitOption = False,
    as_json: JsonOption = False,
) -> None:
    """Remove a host for good: stop it, delete its data, forget it and delete its directory.

    Asks first, naming the host and everything that will be deleted, and offers a backup
    of a running host (--backup FILE makes one without asking; --yes skips the question).

    Examples:
      pixsim-host destroy --dir old-host
      pixsim-host destroy --host old-host --backup old-host.tar.gz --yes
    """
    import shutil

    from pixsim_host import stack
    from pixsim_host.hosts import forget, load_registry

    with locked_host(directory, no_wait=no_wait, command="destroy") as (host, config):
        if backup_to is not None and backup_to.expanduser().resolve().is_relative_to(host.root):
            raise usage_error(f"--backup {backup_to} is inside the host directory, which destroy "
                              "deletes; give a path outside it")
        data = stack.host_volumes(host, config)
        running = _running(host, config)
        what = (f"host {config.name!r} ({config.host_id}): its services, its data "
                f"({', '.join(data) if data else 'none yet'}), its registration and the directory "
                f"{host.root}")
        if backup_to is None and not yes:
            if not stdin_is_tty():
                raise usage_error(f"destroy would delete {what}; pass --yes to confirm (add "
                                  "--backup FILE to keep a copy first)")
            if running and typer.confirm(f"Back up host {config.name!r} before deleting it?",
                                         default=True, err=True):
                backup_to = Path(typer.prompt("Bundle file", default=f"{config.project}-backup.tar.gz",
                                              err=True))
        if backup_to is not None:
            _backup_first(host, config, backup_to, running)
        if not yes:
            if not stdin_is_tty():
                raise usage_error(f"destroy would delete {what}; pass --yes to confirm")
            confirm(f"Delete {what}? This cannot be undone", "nothing was deleted")
        with Progress(f"Destroying {config.name}") as progress:
            stopped = stack.down(host, config, progress=progress)
            if data:
                progress("host", "deleting its data")
                stack.remove_volumes(host, config, data)
        registered = any(entry.host_id == config.host_id for entry in load_registry().entries)
        if registered:
            forget(config.host_id)
        shutil.rmtree(host.root)
    if emit({**host_identity(host, config), "stopped": list(stopped), "data_deleted": list(data),
             "forgotten": registered, "directory_deleted": True,
             "backup": str(backup_to.resolve()) if backup_to else None}):
        return
    info(f"Destroyed host {config.name!r} ({config.host_id}): services stopped, data deleted"
         + (", forgotten by the registry" if registered else "") + f", {host.root} removed.")
    if backup_to is not None:
        info(f"Its backup is {backup_to.resolve()}; `pixsim-host restore {backup_to} --dir DIR` "
             "brings it back.")


def _backup_first(host: HostDir, config: HostConfig, output: Path, running: bool) -> None:
    from pixsim_host import backup as backups
    from pixsim_host.errors import HostError

    if not running:
        raise HostError(f"host {config.name!r} is not running, so it cannot be backed up; start it "
                        f"(`pixsim-host up --dir {host.root}`) first, or destroy it without --backup")
    with Progress(f"Backing up {config.name}") as progress:
        result = backups.backup(host, config, output=output, include_secrets=False, progress=progress)
    info(f"Backed up host {config.name!r} to {result.path}.")


def register(app: typer.Typer) -> None:
    add_command(app, destroy, LIFECYCLE)
