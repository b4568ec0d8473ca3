"""``migrate`` and ``exec``: the backend's own jobs, run in its environment."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pixsim_host.cli.common import (
    LIFECYCLE,
    DirOption,
    JsonOption,
    NoWaitOption,
    add_command,
    complete_services,
    host_identity,
    locked_host,
    open_host,
    seconds,
    usage_error,
)
from pixsim_host.cli.output import Progress, emit, info
from pixsim_host.runtime import job_runtime


def migrate(
    directory: DirOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds the migrations may take in all.",
                                           callback=seconds)] = 600.0,
    no_wait: NoWaitOption = False,
    as_json: JsonOption = False,
) -> None:
    """Run the backend's schema migrations (backend.migrate) now, in its environment.

    PostgreSQL and Redis are started if they are not running; the backend is left as it
    is. `up` runs the migrations by itself on a host's first start and whenever the
    backend's code changed.

    Examples:
      pixsim-host migrate --dir my-host
    """
    import time

    from pixsim_host import stack
    from pixsim_host.schema import prepare_database

    with locked_host(directory, no_wait=no_wait, command="migrate") as (host, config):
        runtime = job_runtime(stack.open_runtime(host, config))
        if runtime is None:
            raise usage_error("on this runtime the migrations run when the backend rolls out; "
                              "run `pixsim-host up`")
        with Progress(f"Migrating {config.name}") as progress:
            runtime.prepare("missing", progress)
            report = prepare_database(runtime, host, config, time.monotonic() + timeout, progress,
                                      force=True)
    if not emit({**host_identity(host, config), **report.as_json()}):
        if report.commands:
            info(f"Migrated host {config.name!r}: {'; '.join(report.commands)} "
                 f"({report.elapsed:.1f} s).")
        else:
            info(f"Host {config.name!r} has no migrations (backend.migrate is empty).")


def exec_command(
    service: Annotated[str, typer.Argument(help="The service whose environment runs the command: "
                                                "backend, a worker, or db.",
                                           autocompletion=complete_services)],
    command: Annotated[list[str], typer.Argument(help="The command and its arguments (after --).",
                                                 show_default=False)],
    directory: DirOption = None,
) -> None:
    """Run a command in a service's environment, interactive on a terminal.

    The backend and its workers run it with the host's variables (database, Redis, secret
    key) in the backend's image or working directory; db runs it beside PostgreSQL with
    the host's credentials set (psql connects without arguments). Its exit code is
    pixsim-host's.

    Examples:
      pixsim-host exec backend --dir my-host -- python create_admin.py
      pixsim-host exec db --dir my-host -- psql
    """
    from pixsim_host import stack

    if not command:
        raise usage_error("give the command to run after --, like `pixsim-host exec backend -- python`")
    host, config = open_host(directory)
    runtime = job_runtime(stack.open_runtime(host, config))
    if runtime is None:
        raise usage_error("exec is not available on this runtime; use its own tools "
                          "(kubectl exec)")
    names = runtime.service_names()
    if service not in names:
        raise usage_error(f"this host has no service {service!r}; its services are {', '.join(names)}")
    code = runtime.exec_service(service, list(command), interactive=sys.stdin.isatty()
                                and sys.stdout.isatty())
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    add_command(app, migrate, LIFECYCLE)
    add_command(app, exec_command, LIFECYCLE, name="exec")
