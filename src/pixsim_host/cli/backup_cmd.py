"""``backup``, ``restore``, ``clone``: a host's data in one bundle, and back."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pixsim_host.cli.common import DirOption, JsonOption, YesOption, open_host, seconds
from pixsim_host.cli.output import info, print_json

RuntimeOption = Annotated[
    str | None,
    typer.Option(help="Run the new host on docker or native (default: the bundle's runtime)."),
]


def _progress(service: str, message: str) -> None:
    sys.stderr.write(f"{service}: {message}\n")


def backup(
    directory: DirOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Bundle file to write.")] = None,
    include_secrets: Annotated[
        bool, typer.Option("--include-secrets", help="Also store .env (the bundle is then 0600).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Back up a running host (database, Redis, config, plugins) into one .tar.gz bundle."""
    from pixsim_host import backup as backups
    from pixsim_host.locking import host_lock

    host, config = open_host(directory)
    with host_lock(host):
        result = backups.backup(host, config, output=output, include_secrets=include_secrets,
                                progress=_progress)
    if as_json:
        print_json({"path": str(result.path), "size": result.size, "manifest": result.manifest})
        return
    info(f"Backed up host {config.name!r} ({config.host_id}) to {result.path} "
         f"({result.size / 1024:.0f} KiB).")
    if include_secrets:
        info("The bundle contains this host's secrets: it was written with mode 0600; keep it private.")
    else:
        info("Secrets are not in the bundle; a restore generates new ones (--include-secrets keeps them).")


def restore(
    bundle: Annotated[Path, typer.Argument(help="A bundle made by `pixsim-host backup`.")],
    target: Annotated[Path, typer.Option("--dir", "-d", help="Directory of the restored host.")],
    port: Annotated[int | None, typer.Option(help="Backend port (default: the bundle's).")] = None,
    name: Annotated[str | None, typer.Option(help="A new display name.")] = None,
    yes: YesOption = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the restored host.",
                                           callback=seconds)] = 180.0,
    runtime: RuntimeOption = None,
) -> None:
    """Rebuild a host from a bundle with the SAME host_id (moving a host)."""
    from pixsim_host import backup as backups

    host, config = backups.restore(bundle, target, port=port, name=name, clone=False,
                                   progress=_progress, timeout=timeout, confirm_existing=yes,
                                   runtime=runtime)
    info(f"Restored host {config.name!r} ({config.host_id}) in {host.root}; it is up and verified "
         f"at {config.local_url}.")


def clone(
    bundle: Annotated[Path, typer.Argument(help="A bundle made by `pixsim-host backup`.")],
    target: Annotated[Path, typer.Option("--dir", "-d", help="Directory of the new host.")],
    name: Annotated[str | None, typer.Option(help="Name of the new host.")] = None,
    port: Annotated[int | None, typer.Option(help="Backend port (default: a free one).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the new host.",
                                           callback=seconds)] = 180.0,
    runtime: RuntimeOption = None,
) -> None:
    """Make a NEW host (new host_id, new secrets, own port) from a bundle's data."""
    from pixsim_host import backup as backups

    host, config = backups.restore(bundle, target, port=port, name=name, clone=True,
                                   progress=_progress, timeout=timeout, runtime=runtime)
    origin = config.lineage[-1]
    info(f"Cloned host {origin.name!r} ({origin.host_id}) into new host {config.name!r} "
         f"({config.host_id}) in {host.root}; it is up and verified at {config.local_url}.")


def register(app: typer.Typer) -> None:
    app.command()(backup)
    app.command()(restore)
    app.command()(clone)
