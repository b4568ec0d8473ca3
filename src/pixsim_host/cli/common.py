"""Options and helpers shared by the command modules."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir, resolve_host_dir

if TYPE_CHECKING:
    from pixsim_host.config import HostConfig

# The help panels commands are grouped in (`pixsim-host --help`).
LIFECYCLE = "Lifecycle"
PLUGINS = "Plugins"
DATA = "Data"
HOSTS = "Hosts and clients"
DIAGNOSTICS = "Diagnostics"
PANELS = (LIFECYCLE, PLUGINS, DATA, HOSTS, DIAGNOSTICS)


def add_command(app: typer.Typer, function: Callable[..., Any], panel: str,
                name: str | None = None) -> None:
    """Register a command in its help panel."""
    app.command(name, rich_help_panel=panel)(function)


def usage_error(message: str) -> HostError:
    """A wrong command line found by the command itself: exit code 2, like click's own."""
    return HostError(message, exit_code=2)


# ---- completion: names from the registry and the host at hand -----------------------------


def complete_host_names(incomplete: str) -> list[str]:
    """--host: the names of the registered hosts."""
    try:
        from pixsim_host.hosts import load_registry

        names = sorted(entry.name for entry in load_registry().entries)
    except Exception:  # completion must never print a traceback into the shell
        return []
    return [name for name in names if name.startswith(incomplete)]


def _host_from_context(ctx: Any) -> HostDir | None:
    try:
        return resolve_host((ctx.params or {}).get("directory"))
    except Exception:
        return None


def complete_services(ctx: Any, incomplete: str) -> list[str]:
    """A service argument: the services in the host's rendered compose.yaml (else the usual three)."""
    names = ["backend", "db", "redis"]
    host = _host_from_context(ctx)
    if host is not None:
        try:
            import yaml

            rendered = yaml.safe_load(host.compose_file.read_text(encoding="utf-8"))
            names = sorted(rendered["services"])
        except Exception:
            pass
    return [name for name in names if name.startswith(incomplete)]


def complete_plugin_ids(ctx: Any, incomplete: str) -> list[str]:
    """A plugin id: from the host's last catalog and its installed packages."""
    host = _host_from_context(ctx)
    if host is None:
        return []
    try:
        from pixsim_host.plugins import installed_ids, load_catalog

        catalog = load_catalog(host)
        ids = set(catalog.plugins) if catalog else set()
        ids |= set(installed_ids(host))
    except Exception:
        return []
    return sorted(plugin_id for plugin_id in ids if plugin_id.startswith(incomplete))


class Model(StrEnum):
    self_ = "self"
    friend = "friend"
    shared = "shared"


class RuntimeName(StrEnum):
    docker = "docker"
    native = "native"
    kubernetes = "kubernetes"


class MovableRuntime(StrEnum):
    docker = "docker"
    native = "native"


class PullPolicy(StrEnum):
    missing = "missing"
    always = "always"
    never = "never"


DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        "-d",
        "--host",
        metavar="DIR|NAME",
        autocompletion=complete_host_names,
        help="The host: its directory, or its name in the host registry (`pixsim-host hosts list`). "
             "Default: $PIXSIM_HOST_DIR, else the current directory.",
        show_default=False,
    ),
]
def _json_requested(value: bool) -> bool:
    # `run` sees --json in the arguments first; this covers an app invoked another way.
    if value:
        from pixsim_host.cli.output import request_json

        request_json()
    return value


JsonOption = Annotated[
    bool, typer.Option("--json", is_eager=True, callback=_json_requested,
                       help="Print one JSON document on stdout (errors too); see docs/json.md.")
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Answer yes to confirmations.")]


# Named for what it does not wait for: the lock. (`--no-wait` still works, unlisted: a
# Compose user reads it as the opposite of `--wait`, which is not what it does.)
NoWaitOption = Annotated[
    bool,
    typer.Option("--no-lock-wait", help="If another command is changing this host, fail at once "
                                        "instead of waiting for it to finish."),
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
        finish_interrupted_changes(host, applies_next=command == "up")
        yield host, load_config(host.config_file)


def finish_interrupted_changes(host: HostDir, *, applies_next: bool) -> None:
    """Roll back or finish what a killed command left halfway (the caller holds the lock),
    saying so in one line each."""
    from pixsim_host.cli.output import warn
    from pixsim_host.plugin_change import recover

    done = recover(host, applies_next=applies_next)
    if done is not None:
        warn(done.message)


def finish_interrupted_for_status(host: HostDir) -> list[str]:
    """For ``status`` and the plugin listings (which wait for no lock): finish or roll back
    what a killed command left when the host's lock is free, saying so; what stops the host
    from counting as verified, one line each (a change rolled back whose backend may still
    run it, or one in progress)."""
    from pixsim_host.cli.output import warn
    from pixsim_host.journal import journal_path
    from pixsim_host.locking import host_lock
    from pixsim_host.plugin_change import JOURNAL, pending, recover

    if not journal_path(host, JOURNAL).exists():
        return []
    done = None
    try:
        with host_lock(host, wait=False, command="status"):
            done = recover(host, applies_next=False)
    except HostError:  # another command holds the lock: its change is in progress
        left = pending(host)
        lines = [f"{left}: it is still running or was interrupted"] if left else []
    else:
        lines = [done.message] if done is not None else []
    for line in lines:
        warn(line)
    return [line for line in lines if done is None or done.rolled_back]


def host_identity(host: HostDir, config: HostConfig) -> dict[str, Any]:
    """The fields every document about one host starts with (docs/json.md: the vocabulary)."""
    from pixsim_host.stack import runtime_type
    from pixsim_host.tls import tls_document

    return {
        "host_id": config.host_id,
        "name": config.name,
        "model": config.model,
        "runtime": runtime_type(config).kind,
        "directory": str(host.root),
        "backend_url": config.client_url,
        "local_url": config.local_url,
        "frontend": f"VITE_BACKEND_URL={config.client_url}",
        "service_urls": http_service_urls(config),
        **({"tls": proxy} if (proxy := tls_document(host, config)) else {}),
    }


def http_service_urls(config: HostConfig) -> dict[str, str]:
    """Where this machine reaches the host's HTTP services beside the backend (by name);
    none when their declarations cannot be read (up and doctor say why)."""
    from pixsim_host.services import service_urls

    try:
        return service_urls(config)
    except HostError:
        return {}


def stdin_is_tty() -> bool:
    """Whether the command may ask questions: a terminal, and not --json (a script)."""
    import sys

    from pixsim_host.cli.output import json_mode

    return sys.stdin is not None and sys.stdin.isatty() and not json_mode()


def confirm(question: str, refusal: str) -> None:
    """Ask on a terminal; ``refusal`` (what was not done) is the error when declined."""
    if not typer.confirm(question, default=False, err=True):
        raise HostError(refusal)
