"""``backup``, ``restore``, ``clone``: a host's data in one bundle, and back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixsim_host.cli.common import (
    DATA,
    DirOption,
    JsonOption,
    MovableRuntime,
    YesOption,
    add_command,
    host_identity,
    locked_host,
    seconds,
)
from pixsim_host.cli.output import HEALTHY, Progress, emit, info

if TYPE_CHECKING:
    from pixsim_host.config import HostConfig
    from pixsim_host.hostdir import HostDir

RuntimeOption = Annotated[
    MovableRuntime | None,
    typer.Option(help="Run the new host on docker or native (default: the bundle's runtime).",
                 show_default=False),
]
TrustOption = Annotated[
    bool,
    typer.Option("--trust-bundle-settings",
                 help="Also take the bundle's settings that run programs, choose binaries or "
                      "directories, or widen who can reach the host (--yes does not)."),
]


def _manifest_doc(manifest: dict[str, Any]) -> dict[str, Any]:
    """The bundle's manifest with its times in ISO 8601 UTC, like every document."""
    from pixsim_host.cli.output import iso_time

    doc = dict(manifest)
    for key, value in manifest.items():
        if not key.endswith("_at"):
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            doc[key] = iso_time(float(value))
        elif isinstance(value, str) and value.endswith("+00:00"):
            doc[key] = value.removesuffix("+00:00") + "Z"
    return doc


def backup(
    directory: DirOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Bundle file to write.")] = None,
    include_secrets: Annotated[
        bool, typer.Option("--include-secrets", help="Also store .env (the bundle is then 0600).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Back up a running host (database, Redis, config, plugins) into one verified .tar.gz bundle.

    Examples:
      pixsim-host backup --dir my-host
      pixsim-host backup --host my-host -o my-host.tar.gz --include-secrets
    """
    from pixsim_host import backup as backups

    # Under the lock, after what a killed command left halfway is finished or rolled back:
    # a bundle never holds half a change.
    with locked_host(directory, no_wait=False, command="backup") as (host, config), \
            Progress(f"Backing up {config.name}") as progress:
        result = backups.backup(host, config, output=output, include_secrets=include_secrets,
                                progress=progress)
    if emit({**host_identity(host, config), "path": str(result.path), "size_bytes": result.size,
             "includes_secrets": include_secrets, "manifest": _manifest_doc(result.manifest)}):
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
    trust_settings: TrustOption = False,
    as_json: JsonOption = False,
) -> None:
    """Rebuild a host from a bundle with the SAME host_id (moving a host to another machine).

    Examples:
      pixsim-host restore my-host.tar.gz --dir my-host
      pixsim-host restore my-host.tar.gz --dir my-host --runtime native --port 8010
    """
    from pixsim_host import backup as backups

    with Progress("Restoring") as progress:
        host, config = backups.restore(bundle, target, port=port, name=name, clone=False,
                                       progress=progress, timeout=timeout, confirm_existing=yes,
                                       runtime=runtime.value if runtime else None,
                                       trust_settings=trust_settings)
    if _restored(host, config):
        return
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
    trust_settings: TrustOption = False,
    as_json: JsonOption = False,
) -> None:
    """Make a NEW host (new host_id, new secrets, its own port) from a bundle's data.

    Examples:
      pixsim-host clone my-host.tar.gz --dir test-copy --name "Test copy"
    """
    from pixsim_host import backup as backups

    with Progress("Cloning") as progress:
        host, config = backups.restore(bundle, target, port=port, name=name, clone=True,
                                       progress=progress, timeout=timeout,
                                       runtime=runtime.value if runtime else None,
                                       trust_settings=trust_settings)
    origin = config.lineage[-1]
    if _restored(host, config, origin={"host_id": origin.host_id, "name": origin.name}):
        return
    info(f"Cloned host {origin.name!r} ({origin.host_id}) into new host {config.name!r} "
         f"({config.host_id}) in {host.root}; it is up and verified at {config.local_url}.")


def _restored(host: HostDir, config: HostConfig, origin: dict[str, str] | None = None) -> bool:
    return emit({**host_identity(host, config), "health": HEALTHY, "port": config.backend.port,
                 "origin": origin})


def register(app: typer.Typer) -> None:
    add_command(app, backup, DATA)
    add_command(app, restore, DATA)
    add_command(app, clone, DATA)
