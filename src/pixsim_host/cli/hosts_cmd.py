"""``hosts list | add | forget``: the hosts registered on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixsim_host.cli.common import JsonOption, seconds
from pixsim_host.cli.output import info, print_json, warn

app = typer.Typer(help="The hosts on this machine: list them with their live status, register or "
                       "forget one.", no_args_is_help=True)


@app.command("list")
def list_(
    as_json: JsonOption = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each host's answer.",
                                           callback=seconds)] = 0.4,
) -> None:
    """Every registered host: name, status (probed live, in parallel), model, URL, host_id, directory."""
    from pixsim_host.hosts import UP, load_registry, probe_hosts, registry_path

    registry = load_registry()
    statuses = probe_hosts(registry.entries, timeout=timeout)
    statuses.sort(key=lambda s: (s.name.casefold(), s.entry.host_id))
    if as_json:
        print_json({"registry": str(registry_path()), "hosts": [s.as_json() for s in statuses]})
        return
    if not statuses:
        info("No hosts registered on this machine. Create one with `pixsim-host init DIR`, or register "
             "an existing one with `pixsim-host hosts add DIR`.")
        return
    rows = [("NAME", "STATUS", "MODEL", "BACKEND URL", "HOST_ID", "DIRECTORY")]
    rows += [(s.name, s.status, s.model, s.backend_url, s.entry.host_id, s.entry.directory) for s in statuses]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        info("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
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
) -> None:
    """Register an existing host (created before the registry, moved, or changed by hand)."""
    from pixsim_host.config import load_config
    from pixsim_host.hostdir import resolve_host_dir
    from pixsim_host.hosts import record, registry_path

    host = resolve_host_dir(directory)
    config = load_config(host.config_file)
    for message in record(host, config):
        warn(message)
    info(f"Registered host {config.name!r} ({config.host_id}) in {host.root}, port "
         f"{config.backend.port}, in {registry_path()}.")


@app.command("forget")
def forget(
    name: Annotated[str, typer.Argument(help="The host's name (or host_id) in `pixsim-host hosts list`.")],
) -> None:
    """Remove a host from the registry. Its directory, containers and data are left alone."""
    from pixsim_host.hosts import UP, forget, probe_hosts

    entry = forget(name)
    info(f"Forgot host {entry.name!r} ({entry.host_id}); its name and port {entry.port} are free again.")
    info(f"Nothing was deleted: {entry.directory} and any containers or volumes are as they were.")
    if probe_hosts([entry], timeout=0.5)[0].status == UP:
        warn(f"host {entry.name!r} is still running; stop it with `pixsim-host down --dir {entry.directory}` "
             "before another host takes its port")
