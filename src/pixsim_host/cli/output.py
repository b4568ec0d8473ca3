"""Printing for commands: results on stdout, everything else on stderr, JSON when asked.

Under ``--json`` stdout carries exactly one JSON document: the command's result, or
``{"error": {...}}``. ``info`` then prints nothing (the document carries the facts) and
``emit`` prints the document. Progress, warnings and prompts never go to stdout.

Both streams survive a reader that goes away (``pixsim-host down | head -1``): a write to
a closed pipe is dropped, so a command that changes a host always finishes its work.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import IO, Any

from pixsim_host.errors import ConfigError, HostError

# The exit codes, documented in the README and in `pixsim-host --help`.
EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and failed (engine, backend, a check, a file)
EXIT_USAGE = 2  # the command line or the config is wrong: fix it, nothing was attempted
EXIT_IDENTITY_CHANGED = 3  # connect: another host answers at a URL known as a different one
EXIT_NOT_HEALTHY = 4  # status: the host was reached and is not healthy
EXIT_INTERRUPTED = 130  # Ctrl-C, SIGINT or SIGTERM: run the command again

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 failed (or status could not tell); 2 usage or config error; "
    "3 connect found another host at a known URL; 4 status: not healthy; 130 interrupted."
)

# error.code in the JSON error document, by exit code (a ConfigError says "config").
ERROR_CODES = {
    EXIT_FAILURE: "failed",
    EXIT_USAGE: "usage",
    EXIT_IDENTITY_CHANGED: "identity_changed",
    EXIT_NOT_HEALTHY: "not_healthy",
    EXIT_INTERRUPTED: "interrupted",
}

# The one set of health words every document uses.
HEALTHY, UNHEALTHY, STARTING, UNKNOWN = "healthy", "unhealthy", "starting", "unknown"


class _State:
    json = False
    emitted = False


_state = _State()


def begin(*, json_mode: bool) -> None:
    """Start a command: ``--json`` or not, nothing printed yet."""
    _state.json = json_mode
    _state.emitted = False


def request_json() -> None:
    _state.json = True


def json_mode() -> bool:
    return _state.json


def emit(document: dict[str, Any]) -> bool:
    """Print the command's JSON document if ``--json`` was given; whether it did."""
    if not _state.json:
        return False
    _state.emitted = True
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()
    return True


def print_json(document: dict[str, Any]) -> None:
    """Kept for callers that only run under ``--json``."""
    emit(document) or sys.stdout.write(json.dumps(document, indent=2) + "\n")


def split_hint(message: str) -> tuple[str, str | None]:
    """``what is wrong; what to do`` as (what, what to do)."""
    what, sep, todo = message.partition("; ")
    return (what, todo) if sep else (message, None)


def error_document(message: str, exit_code: int, *, code: str | None = None,
                   details: str | None = None, problems: list[str] | None = None) -> dict[str, Any]:
    if problems:
        # "X has 2 problems: a; b; what to do": the hint is after the last separator.
        what, _, hint_text = message.rpartition("; ")
        hint: str | None = hint_text
    else:
        what, hint = split_hint(message)
    error: dict[str, Any] = {
        "code": code or ERROR_CODES.get(exit_code, "failed"),
        "message": what,
        "hint": hint,
        "exit_code": exit_code,
    }
    if details:
        error["details"] = details
    if problems:
        error["problems"] = list(problems)
    return {"error": error}


def print_error(exc: HostError) -> None:
    if _state.json and not _state.emitted:
        problems = exc.problems if isinstance(exc, ConfigError) else None
        emit(error_document(exc.message, exc.exit_code, code="config" if problems is not None else None,
                            details=exc.details, problems=problems))
        return
    if isinstance(exc, ConfigError) and len(exc.problems) > 1:
        # One line per problem, so a user fixing the file can work down the list.
        head, _, _ = exc.message.partition(": ")
        sys.stderr.write(f"Error: {head}:\n")
        for problem in exc.problems:
            sys.stderr.write(f"  {problem}\n")
        sys.stderr.write("Fix the file (or use `pixsim-host config set`) and retry.\n")
        return
    sys.stderr.write(f"Error: {exc.message}\n")
    if exc.details:
        sys.stderr.write(exc.details.rstrip("\n") + "\n")


def print_usage_error(message: str) -> None:
    if _state.json and not _state.emitted:
        emit(error_document(message, EXIT_USAGE))
    else:
        sys.stderr.write(f"Error: {message}\n")


def warn(message: str) -> None:
    sys.stderr.write(f"Warning: {message}\n")


def info(message: str) -> None:
    """A line of the human result; under ``--json`` the document says it instead."""
    if not _state.json:
        sys.stdout.write(message + "\n")


def note(message: str) -> None:
    """A remark about the work (not the result): stderr, in both modes."""
    sys.stderr.write(message + "\n")


def iso_time(timestamp: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC, the only time format of the JSON documents."""
    if timestamp is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def health_word(value: object) -> str:
    """An engine's or a probe's health as one of the four words."""
    return str(value) if value in (HEALTHY, UNHEALTHY, STARTING) else UNKNOWN


def yes_no(value: object) -> str:
    return "yes" if value is True else "no" if value is False else "-"


# ---- terminals and pipes ----------------------------------------------------------------


def stdout_is_terminal() -> bool:
    return bool(getattr(sys.stdout, "isatty", lambda: False)())


def stderr_is_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def wrapped(label: str, text: str, *, indent: int = 2) -> None:
    """``label  text`` as one line when piped; on a terminal, wrapped at its width under
    the label (a long list of plugins or URLs stays readable and inside 80 columns)."""
    if _state.json:
        return
    head = " " * indent + label
    if not stdout_is_terminal():
        sys.stdout.write(f"{head}{text}\n")
        return
    import shutil
    import textwrap

    width = shutil.get_terminal_size((80, 24)).columns
    lines = textwrap.wrap(text, width=max(width - len(head), 20), break_on_hyphens=False) or [""]
    sys.stdout.write(f"{head}{lines[0]}\n")
    for line in lines[1:]:
        sys.stdout.write(" " * len(head) + line + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, indent: int = 0) -> None:
    """Rows under headers: a Rich table that folds to the terminal's width on a terminal,
    aligned plain lines (one per row, easy to grep and cut) when piped."""
    if _state.json:
        return
    if stdout_is_terminal():
        from rich import box
        from rich.console import Console
        from rich.padding import Padding
        from rich.table import Table

        grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, highlight=False)
        for header in headers:
            grid.add_column(header, overflow="fold")
        for row in rows:
            grid.add_row(*row)
        Console(file=sys.stdout, highlight=False).print(Padding(grid, (0, 0, 0, indent)))
        return
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        sys.stdout.write(" " * indent + "  ".join(cells).rstrip() + "\n")


class PipeSafe:
    """A text stream whose reader may go away: after a broken pipe, writes are dropped.

    The file descriptor is pointed at /dev/null, so the interpreter's final flush and any
    later write succeed quietly too.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._broke()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._broke()

    def _broke(self) -> None:
        self.broken = True
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):
            pass  # not a real file (a test's buffer): dropping writes is enough

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def protect_streams() -> None:
    """Make stdout and stderr survive a closed pipe (idempotent)."""
    if not isinstance(sys.stdout, PipeSafe):
        sys.stdout = PipeSafe(sys.stdout)
    if not isinstance(sys.stderr, PipeSafe):
        sys.stderr = PipeSafe(sys.stderr)


# ---- progress ---------------------------------------------------------------------------


def progress_word(message: str) -> str:
    """A step of a waiting command as a user should read it: a probe that does not answer
    yet means the service is still starting, not that it failed."""
    if message.startswith("waiting: ") or message == "waiting for HTTP":
        return STARTING
    return message


class Progress:
    """Progress on stderr: one live line (a spinner and each service's state) on a
    terminal, plain ``service: step`` lines otherwise. Call it as ``progress(service, step)``."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.states: dict[str, str] = {}
        self.live: Any = None
        self.width = 80

    def __enter__(self) -> Progress:
        if stderr_is_terminal():
            from rich.console import Console

            console = Console(stderr=True)
            self.width = console.width
            self.live = console.status(self.title)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
            self.live = None

    def __call__(self, service: str, message: str) -> None:
        if self.live is not None:
            self.states[service] = progress_word(message)
            summary = "  ".join(f"{name}: {state}" for name, state in self.states.items())
            line = f"{self.title}  {summary}"
            room = self.width - 3  # the spinner and its space
            # One line that never wraps: a wrapped live line leaves its first half behind.
            self.live.update(line if len(line) <= room else line[: room - 1] + "…")
            return
        word = progress_word(message)
        if word == STARTING and message.startswith("waiting: "):
            word = f"starting (not answering yet: {message.removeprefix('waiting: ')})"
        sys.stderr.write(f"{service}: {word}\n")
