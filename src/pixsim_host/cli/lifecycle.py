"""``up``, ``down``, ``status``, ``logs``, ``restart``: the host's running stack."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from pixsim_host.cli.common import (
    DirOption,
    JsonOption,
    NoWaitOption,
    YesOption,
    locked_host,
    open_host,
    seconds,
    stdin_is_tty,
)
from pixsim_host.cli.output import info, print_json, warn


class _Progress:
    """Progress on stderr: a live line per service on a terminal, plain lines otherwise."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.states: dict[str, str] = {}
        self.live: Any = None
        self.tty = sys.stderr.isatty()

    def __enter__(self) -> _Progress:
        if self.tty:
            from rich.console import Console

            self.live = Console(stderr=True).status(self.title)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def __call__(self, service: str, message: str) -> None:
        self.states[service] = message
        if self.live is not None:
            summary = "  ".join(f"{name}: {state}" for name, state in self.states.items())
            self.live.update(f"{self.title}  {summary}")
        else:
            sys.stderr.write(f"{service}: {message}\n")


def up(
    directory: DirOption = None,
    pull: Annotated[str, typer.Option(help="Pull images: missing, always or never.")] = "missing",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a verified, healthy host.",
                                           callback=seconds)] = 120.0,
    as_json: JsonOption = False,
    no_wait: NoWaitOption = False,
) -> None:
    """Start the host, wait until it is healthy and verify it answers as this host."""
    from pixsim_host import stack

    with locked_host(directory, no_wait=no_wait, command="up") as (host, config), \
            _Progress(f"Starting {config.name}") as progress:
        report = stack.up(host, config, pull=pull, timeout=timeout, progress=progress)
    from pixsim_host.hosts import client_line, friend_urls

    # Friends and players of a shared host connect from other machines: show those URLs.
    others = friend_urls(config) if config.model != "self" else []
    if as_json:
        print_json({**report.as_json(), "friend_urls": others})
        return
    for note in report.notes:
        warn(note)
    info(f"Host {config.name!r} is up and verified ({report.elapsed:.1f} s).")
    info(f"  host_id  {report.host_id}")
    for name, service in report.services.items():
        action = report.actions.get(name, "")
        info(f"  {name:8} {service['state']:8} {'healthy':9} {action}")
    info(f"  plugins  {', '.join(report.plugins) or 'none'}")
    info(f"  backend  {report.url}")
    info(f"  client   VITE_BACKEND_URL={report.client_url}")
    for url in others:
        info(f"  others   {client_line(url)}")


def down(
    directory: DirOption = None,
    volumes: Annotated[
        bool, typer.Option("--volumes", "-v", help="Also delete this host's data volumes.")
    ] = False,
    yes: YesOption = False,
    no_wait: NoWaitOption = False,
) -> None:
    """Stop the host and remove its containers and network; data volumes are kept."""
    from pixsim_host import stack
    from pixsim_host.errors import HostError

    with locked_host(directory, no_wait=no_wait, command="down") as (host, config):
        if volumes:
            names = stack.host_volumes(host, config)
            if names and not yes:
                if not stdin_is_tty():
                    raise HostError(
                        f"down --volumes would delete {', '.join(names)}; pass --yes to confirm "
                        "(this deletes the host's data for good)"
                    )
                typer.confirm(f"Delete volumes {', '.join(names)} and all their data?", abort=True)
        with _Progress(f"Stopping {config.name}") as progress:
            removed = stack.down(host, config, progress=progress)
        if volumes:
            stack.remove_volumes(host, config, names)
    what = "processes stopped" if config.runtime == "native" else "containers removed"
    info(f"Host {config.name!r} is down" + (f" ({len(removed)} {what})." if removed else "."))
    if volumes:
        info(f"Deleted volumes: {', '.join(names) if names else 'none'}.")
    elif config.runtime == "native":
        info("Data is kept (in data/); `pixsim-host up` brings the host back with its data.")
    else:
        info("Data volumes are kept; `pixsim-host up` brings the host back with its data.")


def status(directory: DirOption = None, as_json: JsonOption = False) -> None:
    """Show each service's state and health and the backend's own; exit 1 if not healthy."""
    from pixsim_host import stack

    host, config = open_host(directory)
    report = stack.status(host, config)
    if as_json:
        print_json(report)
    elif all(service["state"] == "missing" for service in report["services"].values()):
        info(f"Host {config.name!r} ({config.host_id}) is not running; start it with `pixsim-host up`.")
    else:
        verdict = "healthy" if report["healthy"] else "NOT healthy"
        info(f"Host {config.name!r} ({config.host_id}) is {verdict}.")
        for name, service in report["services"].items():
            uptime = service.get("uptime_seconds")
            up_text = f"up {_duration(uptime)}" if uptime is not None else ""
            ports = ", ".join(service.get("ports") or [])
            info(f"  {name:8} {service['state']:8} {service.get('health') or '-':9} {up_text:12} {ports}")
            if service.get("detail"):
                info(f"           {service['detail']}")
            if service.get("last_log_lines"):
                info(f"           last log lines (`pixsim-host logs {name}` for more):")
                for line in service["last_log_lines"]:
                    info(f"           | {line}")
        backend = report["backend"]
        if backend.get("verified"):
            health = backend.get("health") or {}
            info(f"  backend {backend['url']}: {health.get('status')}, database "
                 f"{health.get('database')}, redis {health.get('redis')}")
        elif backend.get("problem"):
            info(f"  backend {backend['url']}: {backend['problem']}")
    if not report["healthy"]:
        raise typer.Exit(1)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def logs(
    service: Annotated[str | None, typer.Argument(help="db, redis or backend (default: all).")] = None,
    directory: DirOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    tail: Annotated[int, typer.Option("--tail", "-n", min=0, help="Lines from the end of each log.")] = 100,
) -> None:
    """Print the logs of the host's services (secrets are masked)."""
    from pixsim_host.errors import HostError
    from pixsim_host.stack import open_runtime

    host, config = open_host(directory)
    runtime = open_runtime(host, config)
    names = runtime.service_names()
    if service is not None and service not in names:
        raise HostError(f"no service {service!r}; this host has {', '.join(names)}")
    targets = [service] if service else names
    prefix = service is None and not runtime.labels_log_lines
    try:
        for name, line in runtime.stream_logs(targets, tail=tail, follow=follow):
            sys.stdout.write(f"{name:8}| {line}\n" if prefix else f"{line}\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return


def restart(
    service: Annotated[str | None, typer.Argument(help="db, redis or backend (default: all).")] = None,
    directory: DirOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for health again.",
                                           callback=seconds)] = 120.0,
    no_wait: NoWaitOption = False,
) -> None:
    """Restart services, then wait until the host is verified healthy again."""
    from pixsim_host import stack
    from pixsim_host.errors import HostError

    with locked_host(directory, no_wait=no_wait, command="restart") as (host, config):
        runtime = stack.open_runtime(host, config)
        names = [name for level in runtime.service_levels() for name in level]
        if service is not None and service not in names:
            raise HostError(f"no service {service!r}; this host has {', '.join(sorted(names))}")
        targets = [service] if service else names
        with _Progress(f"Restarting {config.name}") as progress:
            runtime.restart(targets, progress)
            stack.up(host, config, timeout=timeout, progress=progress)
    info(f"Restarted {', '.join(targets)}; host {config.name!r} is verified healthy.")


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.command()(logs)
    app.command()(restart)
