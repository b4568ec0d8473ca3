"""The ``pixsim-host`` command line: commands only, the work lives in the modules they call.

Command modules import Typer and the standard library at the top and everything heavy
(pydantic, Jinja2, the Docker SDK, httpx) inside the command, so ``--help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from pixsim_host import __version__
from pixsim_host.cli import (
    backup_cmd,
    config_cmd,
    connect_cmd,
    doctor_cmd,
    host_cmds,
    hosts_cmd,
    lifecycle,
    plugins_cmd,
)
from pixsim_host.errors import HostError

app = typer.Typer(
    name="pixsim-host",
    help="Run your own PixSim7 host: one backend with its own PostgreSQL, Redis and plugins.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pixsim-host {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Run your own PixSim7 host: one backend with its own PostgreSQL, Redis and plugins."""


host_cmds.register(app)
lifecycle.register(app)
backup_cmd.register(app)
app.add_typer(config_cmd.app, name="config")
app.add_typer(plugins_cmd.app, name="plugins")
app.add_typer(hosts_cmd.app, name="hosts")
connect_cmd.register(app)
doctor_cmd.register(app)


def run() -> None:
    """Entry point: the one place a HostError becomes ``Error: ...`` and an exit code."""
    try:
        code = app(standalone_mode=False)
    except HostError as exc:
        from pixsim_host.cli.output import print_error

        print_error(exc)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("Aborted.\n")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    except Exception as exc:
        # Usage errors (unknown option, missing argument) arrive here in non-standalone
        # mode. Their class is click's, which newer Typer releases vendor instead of
        # depending on click, so `import click` may fail: recognise them by behaviour.
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise
    # Outside standalone mode click returns the code of a typer.Exit instead of exiting,
    # and Typer turns Ctrl-C into such an exit with code 130.
    if code == 130:
        sys.stderr.write("Interrupted. Nothing is lost: run the command again to finish.\n")
    sys.exit(code if isinstance(code, int) else 0)
