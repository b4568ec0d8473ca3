"""``boot install | remove``: a systemd unit that brings the host up at boot."""

from __future__ import annotations

from typing import Annotated

import typer

from pixsim_host.cli.common import DirOption, JsonOption, host_identity, open_host
from pixsim_host.cli.output import emit, info, warn, wrapped

app = typer.Typer(help="Bring the host up at boot with a systemd unit (install), or stop doing so "
                       "(remove).", no_args_is_help=True, rich_markup_mode="rich")

UserOption = Annotated[bool, typer.Option(
    "--user", help="A user unit (~/.config/systemd/user) even as root; without root it always is.")]

_RESTARTS = {
    "native": "`up` also starts the host's supervisor, which restarts a crashed process "
              "(native.restart: unless-stopped)",
    "docker": "the containers restart by themselves (restart: unless-stopped) once the Docker "
              "engine runs: make sure it starts at boot too (`systemctl enable docker`)",
}


@app.command("install")
def install(
    directory: DirOption = None,
    user: UserOption = False,
    show: Annotated[bool, typer.Option("--print", help="Print the unit; write nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write (and, where systemd runs, enable) a unit that runs `pixsim-host up` at boot.

    The unit is named after the host's directory and verified with `systemd-analyze
    verify` first. Root gets a system unit in /etc/systemd/system; other users (or
    --user) a user unit, which needs `loginctl enable-linger` to run at boot.

    Examples:
      pixsim-host boot install --dir my-host
      pixsim-host boot install --dir my-host --user --print
    """
    from pixsim_host import boot
    from pixsim_host.stack import runtime_type

    host, config = open_host(directory)
    unit = boot.install(host, config, user=user, write=not show)
    kind = runtime_type(config).kind
    if kind in _RESTARTS:
        unit.notes.append(_RESTARTS[kind])
    document = {**host_identity(host, config), **unit.as_json(), "written": not show}
    if show:
        document["text"] = unit.text
    if emit(document):
        return
    if show:
        info(unit.text.rstrip("\n"))
        return
    checked = "verified" if unit.verified else "not verified"
    info(f"Wrote {unit.scope} unit {unit.path} ({checked}): host {config.name!r} comes up at boot.")
    for note in unit.notes:
        warn(note)
    for step in unit.next_steps:
        wrapped("  run  ", step)


@app.command("remove")
def remove(
    directory: DirOption = None,
    user: UserOption = False,
    as_json: JsonOption = False,
) -> None:
    """Delete the host's boot unit (disabled first where systemd runs); the host keeps running.

    Examples:
      pixsim-host boot remove --dir my-host
      pixsim-host boot remove --dir my-host --user --json
    """
    from pixsim_host import boot

    host, config = open_host(directory)
    unit, removed = boot.remove(host, user=user)
    if emit({**host_identity(host, config), **unit.as_json(), "removed": removed}):
        return
    if not removed:
        info(f"Host {config.name!r} has no {unit.scope} boot unit ({unit.path}); nothing to remove.")
        return
    info(f"Removed {unit.path}: host {config.name!r} no longer comes up at boot.")
    for note in unit.notes:
        warn(note)
    for step in unit.next_steps:
        wrapped("  run  ", step)
