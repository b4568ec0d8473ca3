"""Options and helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pixsim_host.hostdir import HostDir, resolve_host_dir

if TYPE_CHECKING:
    from pixsim_host.config import HostConfig

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        "-d",
        help="The host directory (default: $PIXSIM_HOST_DIR, else the current directory).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Answer yes to confirmations.")]


def open_host(directory: Path | None) -> tuple[HostDir, HostConfig]:
    """The host a command was given, with its validated config."""
    from pixsim_host.config import load_config

    host = resolve_host_dir(directory)
    return host, load_config(host.config_file)


def stdin_is_tty() -> bool:
    import sys

    return sys.stdin is not None and sys.stdin.isatty()
