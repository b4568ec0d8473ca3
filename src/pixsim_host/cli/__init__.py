"""The ``pixsim-host`` command line: commands only, the work lives in the modules they call.

Command modules import Typer and the standard library at the top and everything heavy
(pydantic, Jinja2, the Docker SDK, httpx) inside the command, so ``--help`` stays fast.

Adding a command: write the function in a command module, give it ``as_json: JsonOption``,
build its result as one dict and ``if emit(document): return`` before printing the human
lines with ``info``/``table``; raise ``HostError`` (``usage_error`` for a bad argument) for
failures; register it with ``common.add_command(app, function, panel)`` (or a sub-app with
``app.add_typer(..., rich_help_panel=panel)``); add ``schemas/<command>.json`` and a section
to docs/json.md. ``run`` below turns errors into ``Error: ...`` or a JSON error document
and the documented exit codes.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from pixsim_host import __version__
from pixsim_host.cli import (
    backend_cmds,
    backup_cmd,
    boot_cmd,
    config_cmd,
    connect_cmd,
    destroy_cmd,
    doctor_cmd,
    host_cmds,
    hosts_cmd,
    lifecycle,
    plugins_cmd,
    upgrade_cmd,
)
from pixsim_host.cli.common import HOSTS, LIFECYCLE, PANELS, PLUGINS
from pixsim_host.cli.output import EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_USAGE
from pixsim_host.errors import HostError

HELP = "Run your own PixSim7 host: one backend with its own PostgreSQL, Redis and plugins."

class _GroupedCommands(TyperGroup):
    """Lists commands panel by panel (lifecycle first), in registration order within one."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)

        def panel(name: str) -> int:
            found = getattr(self.commands.get(name), "rich_help_panel", None)
            return PANELS.index(found) if found in PANELS else len(PANELS)

        return sorted(names, key=panel)


app = typer.Typer(
    name="pixsim-host",
    cls=_GroupedCommands,
    help=HELP,
    epilog="Start: pixsim-host init my-host, then pixsim-host up --dir my-host.\n\n"
           "Every command takes --json (one JSON document on stdout, errors included).\n\n"
           + EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
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
destroy_cmd.register(app)
backend_cmds.register(app)
upgrade_cmd.register(app)
backup_cmd.register(app)
app.add_typer(config_cmd.app, name="config", rich_help_panel=LIFECYCLE)
app.add_typer(boot_cmd.app, name="boot", rich_help_panel=LIFECYCLE)
app.add_typer(plugins_cmd.app, name="plugins", rich_help_panel=PLUGINS)
app.add_typer(hosts_cmd.app, name="hosts", rich_help_panel=HOSTS)
connect_cmd.register(app)
doctor_cmd.register(app)

# Old option names still accepted (not shown in help): old name -> new name.
ALIASES = {"--no-wait": "--no-lock-wait"}


def _options(args: list[str]) -> list[str]:
    """The arguments before ``--`` (after it every word is an argument, not an option)."""
    return args[: args.index("--")] if "--" in args else args


def _apply_aliases(args: list[str]) -> list[str]:
    cut = args.index("--") if "--" in args else len(args)
    return [ALIASES.get(arg, arg) for arg in args[:cut]] + args[cut:]


def _usage_message(exc: BaseException) -> str:
    """click's usage error (three lines) as ``what is wrong; what to do``."""
    format_message = getattr(exc, "format_message", None)
    text = format_message() if callable(format_message) else str(exc)
    # Typer's value checks read "Value error, ..."; the option's name already says it.
    text = " ".join(text.split()).replace("Value error, ", "").rstrip(".")
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "pixsim-host"
    return f"{text}; see `{path} --help`"


def _interrupted(line: str) -> None:
    from pixsim_host.cli import output

    if output.json_mode():
        # Nothing here knows what the command had done: multi-step commands say it
        # themselves ("put back as it was"), having checked.
        output.print_error(HostError("interrupted; run the command again to finish what it was doing",
                                     exit_code=EXIT_INTERRUPTED))
    else:
        sys.stderr.write(line + "\n")
    sys.exit(EXIT_INTERRUPTED)


def run(argv: list[str] | None = None) -> None:
    """Entry point: the one place a HostError becomes ``Error: ...`` (or, under --json, an
    error document) and an exit code. Always ends with ``sys.exit``."""
    from pixsim_host.cli import output

    try:
        _run(argv)
    finally:
        # --json is one command's mode: code running in this process afterwards (a test)
        # must not inherit it.
        output.begin(json_mode=False)


def _run(argv: list[str] | None) -> None:
    from pixsim_host.cli import output

    args = _apply_aliases(list(sys.argv[1:] if argv is None else argv))
    output.begin(json_mode="--json" in _options(args))
    output.protect_streams()
    try:
        code = app(args=args, prog_name="pixsim-host", standalone_mode=False)
    except HostError as exc:
        output.print_error(exc)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        # A prompt got Ctrl-C or end of input; a declined confirmation is a HostError.
        _interrupted("Aborted. Nothing was changed.")
    except KeyboardInterrupt:
        _interrupted("Interrupted.")
    except Exception as exc:
        # Usage errors (unknown option, missing argument) arrive here in non-standalone
        # mode. Their class is click's, which newer Typer releases vendor instead of
        # depending on click, so `import click` may fail: recognise them by behaviour.
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if not (callable(show) and isinstance(exit_code, int)):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":
            show()  # a bare group: its help is the answer
            sys.exit(0)
        output.print_usage_error(_usage_message(exc))
        sys.exit(EXIT_USAGE)
    # Outside standalone mode click returns the code of a typer.Exit instead of exiting,
    # and Typer turns Ctrl-C into such an exit with code 130.
    if code == EXIT_INTERRUPTED:
        _interrupted("Interrupted. Run the command again to finish what it was doing.")
    sys.exit(code if isinstance(code, int) else 0)
