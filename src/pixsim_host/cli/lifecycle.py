"""``up``, ``down``, ``status``, ``logs``, ``restart``: the host's running stack."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixsim_host.cli.common import (
    DIAGNOSTICS,
    LIFECYCLE,
    DirOption,
    JsonOption,
    NoWaitOption,
    PullPolicy,
    YesOption,
    add_command,
    complete_services,
    confirm,
    finish_interrupted_for_status,
    host_identity,
    http_service_urls,
    locked_host,
    open_host,
    seconds,
    stdin_is_tty,
    usage_error,
)
from pixsim_host.cli.output import (
    EXIT_NOT_HEALTHY,
    HEALTHY,
    STARTING,
    UNHEALTHY,
    Progress,
    emit,
    health_word,
    info,
    table,
    warn,
    wrapped,
)

if TYPE_CHECKING:
    from pixsim_host.config import HostConfig
    from pixsim_host.hostdir import HostDir

ServiceArgument = Annotated[
    str | None,
    typer.Argument(help="One service: backend, db or redis (default: all).", show_default=False,
                   autocompletion=complete_services),
]


def _service_doc(service: dict[str, Any], *, health: str | None = None) -> dict[str, Any]:
    """One service in the shared vocabulary: ``state``, ``health`` (one of the four words)."""
    doc = dict(service)
    doc["health"] = health or health_word(service.get("health"))
    doc["started_at"] = _utc_seconds(service.get("started_at"))
    doc.pop("engine_health", None)
    doc.pop("verified", None)
    return doc


def _utc_seconds(text: object) -> str | None:
    """An engine's start time (Docker's has nanoseconds) as ISO 8601 UTC to the second."""
    if not isinstance(text, str) or not text:
        return None
    from datetime import UTC, datetime

    head = text.rstrip("Z").split(".")[0].removesuffix("+00:00")
    try:
        moment = datetime.fromisoformat(head).replace(tzinfo=UTC)
    except ValueError:
        return None
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _backend_doc(config: HostConfig, backend: dict[str, Any], health: str) -> dict[str, Any]:
    """The backend's own view: its /health answer, readiness, version and server info."""
    report = backend.get("health")
    return {
        "local_url": config.local_url,
        "health": health,
        "verified": health == HEALTHY,
        "problem": backend.get("problem"),
        "health_report": report if isinstance(report, dict) else None,
        "ready": backend.get("ready"),
        "version": backend.get("version"),
        "server": backend.get("server"),
    }


def up(
    directory: DirOption = None,
    pull: Annotated[PullPolicy, typer.Option(help="Pull images: missing (only what is not here), "
                                                  "always, or never.")] = PullPolicy.missing,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a verified, healthy host.",
                                           callback=seconds)] = 120.0,
    as_json: JsonOption = False,
    no_wait: NoWaitOption = False,
) -> None:
    """Start the host's services, wait until it is healthy and verify it answers as this host.

    Idempotent: on a running host it changes only what the config changed.

    Examples:
      pixsim-host up --dir my-host
      pixsim-host up --host my-host --pull never --timeout 300
    """
    from pixsim_host import stack
    from pixsim_host.errors import HostError
    from pixsim_host.journal import terminate_as_interrupt

    with locked_host(directory, no_wait=no_wait, command="up") as (host, config), \
            Progress(f"Starting {config.name}") as progress:
        try:
            # SIGTERM like Ctrl-C: a container being replaced is finished before the process ends.
            with terminate_as_interrupt():
                report = stack.up(host, config, pull=pull.value, timeout=timeout, progress=progress)
        except KeyboardInterrupt:
            raise HostError("interrupted before the host was verified; run `pixsim-host up` again "
                            "to finish", exit_code=130) from None
    from pixsim_host.hosts import client_line, friend_urls, friends_cannot_reach

    # Friends and players of a shared host connect from other machines: show those URLs.
    others = friend_urls(config) if config.model != "self" else []
    unreachable = friends_cannot_reach(config) if config.model != "self" else None
    for note in [*report.notes, *([unreachable] if unreachable else [])]:
        warn(note)
    if emit({
        **host_identity(host, config),
        "health": HEALTHY,
        "actions": report.actions,
        "services": {name: _service_doc(service, health=HEALTHY)
                     for name, service in report.services.items()},
        "backend": _backend_doc(config, report.backend, HEALTHY),
        "plugins_enabled": report.plugins,
        "elapsed_seconds": round(report.elapsed, 3),
        "friend_urls": others,
        "notes": report.notes,
    }):
        return
    info(f"Host {config.name!r} is up and verified ({report.elapsed:.1f} s).")
    info(f"  host_id  {report.host_id}")
    for name, service in report.services.items():
        action = report.actions.get(name, "")
        info(f"  {name:8} {service['state']:8} {HEALTHY:9} {action}")
    wrapped("plugins  ", ", ".join(report.plugins) or "none")
    info(f"  backend  {report.url}")
    info(f"  client   VITE_BACKEND_URL={report.client_url}")
    from pixsim_host.tls import tls_lines

    for line in tls_lines(host, config):
        info(f"  tls      {line}")
    for name, url in http_service_urls(config).items():
        info(f"  {name}  {url}")
    for url in others:
        info(f"  others   {client_line(url)}")


def down(
    directory: DirOption = None,
    volumes: Annotated[
        bool, typer.Option("--volumes", "-v", help="Also delete this host's data (database, Redis, "
                                                   "plugin state), after a confirmation.")
    ] = False,
    yes: YesOption = False,
    no_wait: NoWaitOption = False,
    as_json: JsonOption = False,
) -> None:
    """Stop the host's services; its data is kept unless --volumes.

    Examples:
      pixsim-host down --dir my-host
      pixsim-host down --host my-host --volumes --yes   # and delete its data
    """
    from pixsim_host import stack

    names: list[str] = []
    with locked_host(directory, no_wait=no_wait, command="down") as (host, config):
        if volumes:
            names = stack.host_volumes(host, config)
            if names and not yes:
                what = f"the data of host {config.name!r} ({', '.join(names)})"
                if not stdin_is_tty():
                    raise usage_error(f"down --volumes would delete {what}; pass --yes to confirm "
                                      "(this deletes the host's data for good)")
                confirm(f"Delete {what} for good?", "nothing was stopped or deleted; without "
                        "--volumes, `pixsim-host down` keeps the data")
        with Progress(f"Stopping {config.name}") as progress:
            removed = stack.down(host, config, progress=progress)
        if volumes:
            stack.remove_volumes(host, config, names)
    if emit({
        **host_identity(host, config),
        "stopped": list(removed),
        "data_deleted": list(names),
        "data_kept": not volumes,
    }):
        return
    count = f" ({len(removed)} service{'s' if len(removed) != 1 else ''} stopped)" if removed else ""
    info(f"Host {config.name!r} is down{count}.")
    if volumes:
        info(f"Deleted its data: {', '.join(names) if names else 'there was none'}.")
    else:
        info("Its data is kept; `pixsim-host up` brings the host back with its data.")


def _status_health(report: dict[str, Any], services: dict[str, dict[str, Any]]) -> str:
    if report["healthy"]:
        return HEALTHY
    if any(service["health"] == STARTING for service in services.values()):
        return STARTING
    return UNHEALTHY


def status(directory: DirOption = None, as_json: JsonOption = False) -> None:
    """Show each service's state and health and the backend's own checks.

    Exits 0 when healthy, 4 when the host answered and is not healthy (or not running),
    1 when it could not tell (no engine, a broken config).

    Examples:
      pixsim-host status --dir my-host
      pixsim-host status --host my-host --json | jq .health
    """
    from pixsim_host import stack
    from pixsim_host.cli.output import iso_time

    host, config = open_host(directory)
    unfinished = finish_interrupted_for_status(host)
    if unfinished:  # a rolled-back change put the config from before it back
        from pixsim_host.config import load_config

        config = load_config(host.config_file)
    report = stack.status(host, config)
    backend = report["backend"]
    for line in unfinished:  # the backend may run a set its files no longer say: not verified
        report["healthy"] = backend["verified"] = False
        backend["problem"] = line
    backend_health = HEALTHY if backend.get("verified") else UNHEALTHY
    services: dict[str, dict[str, Any]] = {}
    for name, service in report["services"].items():
        health = health_word(service.get("health"))
        if name == "backend" and service.get("state") == "running":
            # Judged by its HTTP checks, as `up` judges it; the engine's healthcheck lags.
            health = HEALTHY if backend.get("verified") else (
                STARTING if health in (STARTING, "unknown") else UNHEALTHY)
            backend_health = health
        services[name] = _service_doc(service, health=health)
    health = _status_health(report, services)
    import time

    if not emit({
        **host_identity(host, config),
        "health": health,
        "running": any(service.get("state") == "running" for service in services.values()),
        "services": services,
        "backend": _backend_doc(config, backend, backend_health),
        "checked_at": iso_time(time.time()),
    }):
        _print_status(config, report, services, health)
    if health != HEALTHY:
        raise typer.Exit(EXIT_NOT_HEALTHY)


def _print_status(config: HostConfig, report: dict[str, Any], services: dict[str, dict[str, Any]],
                  health: str) -> None:
    if all(service["state"] == "missing" for service in services.values()):
        wrapped("", f"Host {config.name!r} ({config.host_id}) is not running; start it with "
                "`pixsim-host up`.", indent=0)
        return
    verdict = {HEALTHY: "healthy", STARTING: "starting"}.get(health, "NOT healthy")
    wrapped("", f"Host {config.name!r} ({config.host_id}) is {verdict}.", indent=0)
    rows = []
    for name, service in services.items():
        uptime = service.get("uptime_seconds")
        rows.append((name, str(service["state"]), service["health"],
                     f"up {_duration(uptime)}" if uptime is not None else "-",
                     ", ".join(service.get("ports") or []) or "-"))
    table(("SERVICE", "STATE", "HEALTH", "UPTIME", "PORTS"), rows, indent=2)
    for name, service in services.items():
        if service.get("detail"):
            wrapped(f"{name}: ", str(service["detail"]))
        if service.get("last_log_lines"):
            info(f"  {name}: last log lines (`pixsim-host logs {name}` for more):")
            for line in service["last_log_lines"]:
                info(f"    | {line}")
    backend = report["backend"]
    if backend.get("verified"):
        checks = backend.get("health") or {}
        wrapped("backend  ", f"{backend['url']}: {checks.get('status')}, database "
                f"{checks.get('database')}, redis {checks.get('redis')}")
    elif backend.get("problem"):
        wrapped("backend  ", f"{backend['url']}: {backend['problem']}")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def logs(
    service: ServiceArgument = None,
    directory: DirOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    tail: Annotated[int, typer.Option("--tail", "-n", min=0, help="Lines from the end of each log.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Print the logs of the host's services, with every secret masked.

    Examples:
      pixsim-host logs --dir my-host
      pixsim-host logs backend -f --tail 20 --dir my-host
    """
    from pixsim_host.stack import open_runtime

    if as_json and follow:
        raise usage_error("--follow never ends, so it cannot make one JSON document; "
                          "drop --follow or --json")
    host, config = open_host(directory)
    collected: list[dict[str, str]] = []
    runtime = open_runtime(host, config)
    names = runtime.service_names()
    if service is not None and service not in names:
        raise usage_error(f"no service {service!r}; this host has {', '.join(names)}")
    targets = [service] if service else names
    prefix = service is None and not runtime.labels_log_lines
    try:
        for name, line in runtime.stream_logs(targets, tail=tail, follow=follow):
            if as_json:
                collected.append({"service": name, "line": line})
                continue
            sys.stdout.write(f"{name:8}| {line}\n" if prefix else f"{line}\n")
            sys.stdout.flush()
            if getattr(sys.stdout, "broken", False):
                return  # its reader is gone (`logs -f | head`): logs change nothing, so stop
    except KeyboardInterrupt:
        return
    emit({"host_id": config.host_id, "name": config.name, "lines": collected})


def restart(
    service: ServiceArgument = None,
    directory: DirOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for health again.",
                                           callback=seconds)] = 120.0,
    no_wait: NoWaitOption = False,
    as_json: JsonOption = False,
) -> None:
    """Restart the host's services (or one), then wait until it is verified healthy again.

    Examples:
      pixsim-host restart --dir my-host
      pixsim-host restart backend --host my-host
    """
    from pixsim_host import stack

    with locked_host(directory, no_wait=no_wait, command="restart") as (host, config):
        runtime = stack.open_runtime(host, config)
        names = [name for level in runtime.service_levels() for name in level]
        if service is not None and service not in names:
            raise usage_error(f"no service {service!r}; this host has {', '.join(sorted(names))}")
        targets = [service] if service else names
        with Progress(f"Restarting {config.name}") as progress:
            runtime.restart(targets, progress)
            stack.up(host, config, timeout=timeout, progress=progress)
    _restarted(host, config, targets)


def _restarted(host: HostDir, config: HostConfig, targets: list[str]) -> None:
    if not emit({**host_identity(host, config), "restarted": list(targets), "health": HEALTHY}):
        info(f"Restarted {', '.join(targets)}; host {config.name!r} is verified healthy.")


def register(app: typer.Typer) -> None:
    add_command(app, up, LIFECYCLE)
    add_command(app, down, LIFECYCLE)
    add_command(app, restart, LIFECYCLE)
    add_command(app, status, DIAGNOSTICS)
    add_command(app, logs, DIAGNOSTICS)


