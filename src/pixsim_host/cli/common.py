"""Options and helpers shared by the command modules."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir, resolve_host_dir

if TYPE_CHECKING:
    from pixsim_host.config import HostConfig

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        "-d",
        "--host",
        metavar="DIR|NAME",
        help="The host: its directory, or its name in the host registry (`pixsim-host hosts list`). "
             "Default: $PIXSIM_HOST_DIR, else the current directory.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Answer yes to confirmations.")]


NoWaitOption = Annotated[
    bool,
    typer.Option("--no-wait", help="If another command is changing this host, fail at once instead of "
                                   "waiting for it."),
]


def seconds(value: float) -> float:
    """Callback of every ``--timeout``: a finite number of seconds, never negative or NaN
    (a socket refuses those with a traceback, and a wait loop never ends on NaN)."""
    if not math.isfinite(value) or value < 0:
        raise typer.BadParameter(f"{value} is not a number of seconds; give 0 or more, like 30")
    return value


def _could_be_a_name(path: Path) -> bool:
    text = str(path)
    return not path.is_absolute() and len(path.parts) == 1 and text not in (".", "..") \
        and not text.startswith("~")


def resolve_host(directory: Path | None) -> HostDir:
    """``--dir``/``--host``: a host directory, or the name (or host_id) of a registered host.

    A bare name that is both a host directory here and a registered host elsewhere is
    refused rather than guessed.
    """
    if directory is None or not _could_be_a_name(directory):
        return resolve_host_dir(directory)
    from pixsim_host.hosts import lookup_directory

    key = str(directory)
    local = HostDir(directory.expanduser().resolve())
    try:
        registered = lookup_directory(key)
    except HostError:
        if local.exists():
            return local
        raise
    if registered is None:
        if local.exists():
            return local
        raise HostError(
            f"no host is registered as {key!r}, and {local.root} is not a host directory; see "
            "`pixsim-host hosts list` for names, or give the host's directory"
        )
    if local.exists() and local.root != registered.root:
        raise HostError(
            f"{key!r} is both the host directory {local.root} and the registered host in "
            f"{registered.root}; give a full path instead (--dir {local.root} or --dir {registered.root})"
        )
    return registered


def open_host(directory: Path | None) -> tuple[HostDir, HostConfig]:
    """The host a command was given, with its validated config."""
    from pixsim_host.config import load_config

    host = resolve_host(directory)
    return host, load_config(host.config_file)


@contextmanager
def locked_host(directory: Path | None, *, no_wait: bool,
                command: str) -> Iterator[tuple[HostDir, HostConfig]]:
    """The host, under its lock, with its config read *after* the lock was taken: a command
    that waited for another sees what that one changed."""
    from pixsim_host.config import load_config
    from pixsim_host.locking import host_lock

    host, _ = open_host(directory)  # a broken config fails now, not after waiting
    with host_lock(host, wait=not no_wait, command=command):
        yield host, load_config(host.config_file)


def stdin_is_tty() -> bool:
    import sys

    return sys.stdin is not None and sys.stdin.isatty()
