"""``hosts list | add | forget``: the hosts registered on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixsim_host.cli.common import JsonOption, complete_host_names, seconds
from pixsim_host.cli.output import emit, info, iso_time, table, warn

app = typer.Typer(help="The hosts on this machine: list them with their live status, register or "
                       "forget one.", no_args_is_help=True, rich_markup_mode="rich")


def _entry_doc(data: dict[str, object]) -> dict[str, object]:
    registered = data.get("registered_at")
    return {**data, "registered_at": iso_time(float(registered)) if isinstance(registered, int | float)
            and registered else None}


@app.command("list")
def list_(
    as_json: JsonOption = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each host's answer.",
                                           callback=seconds)] = 0.4,
) -> None:
    """Every registered host: name, status (probed live, in parallel), model, URL, host_id, directory.

    Examples:
      pixsim-host hosts list
      pixsim-host hosts list --json | jq -r '.hosts[] | select(.status == "up") | .name'
    """
    from pixsim_host.hosts import UP, load_registry, probe_hosts, registry_path

    registry = load_registry()
    statuses = probe_hosts(registry.entries, timeout=timeout)
    statuses.sort(key=lambda s: (s.name.casefold(), s.entry.host_id))
    if emit({"registry": str(registry_path()), "hosts": [s.as_json() for s in statuses]}):
        return
    if not statuses:
        info("No hosts registered on this machine. Create one with `pixsim-host init DIR`, or register "
             "an existing one with `pixsim-host hosts add DIR`.")
        return
    table(("NAME", "STATUS", "MODEL", "BACKEND URL", "HOST_ID", "DIRECTORY"),
          [(s.name, s.status, s.model, s.backend_url, s.entry.host_id, s.entry.directory)
           for s in statuses])
    notes = []
    for s in statuses:
        if s.status != UP and s.detail:
            notes.append(f"{s.name}: {s.status}: {s.detail}")
        if s.stale:
            notes.append(f"{s.name}: the registry's {', '.join(s.stale)} is out of date; "
                         f"`pixsim-host hosts add {s.entry.directory}` refreshes it")
    for note in notes:
        info(f"  {note}")


@app.command("add")
def add(
    directory: Annotated[Path, typer.Argument(help="The host directory to register.")] = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Register an existing host (created before the registry, moved, or changed by hand).

    Examples:
      pixsim-host hosts add ./my-host
    """
    from pixsim_host.config import load_config
    from pixsim_host.hostdir import resolve_host_dir
    from pixsim_host.hosts import record, registry_path

    host = resolve_host_dir(directory)
    config = load_config(host.config_file)
    notes = record(host, config)
    for message in notes:
        warn(message)
    if emit({"host_id": config.host_id, "name": config.name, "directory": str(host.root),
             "port": config.backend.port, "registry": str(registry_path()), "notes": notes}):
        return
    info(f"Registered host {config.name!r} ({config.host_id}) in {host.root}, port "
         f"{config.backend.port}, in {registry_path()}.")


@app.command("forget")
def forget(
    name: Annotated[str, typer.Argument(help="The host's name (or host_id) in `pixsim-host hosts list`.",
                                        autocompletion=complete_host_names)],
    as_json: JsonOption = False,
) -> None:
    """Remove a host from the registry; its directory, services and data are left alone.

    Examples:
      pixsim-host hosts forget my-host
    """
    from pixsim_host.hosts import UP, forget, probe_hosts

    entry = forget(name)
    running = probe_hosts([entry], timeout=0.5)[0].status == UP
    if emit({"forgotten": _entry_doc(entry.as_json()), "running": running}):
        return
    info(f"Forgot host {entry.name!r} ({entry.host_id}); its name and port {entry.port} are free again.")
    info(f"Nothing was deleted: {entry.directory} and the host's services and data are as they were.")
    if running:
        warn(f"host {entry.name!r} is still running; stop it with `pixsim-host down --dir {entry.directory}` "
             "before another host takes its port")
