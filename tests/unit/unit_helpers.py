"""Helpers for the unit tests: run the real CLI, inspect host directories.

``run_cli`` runs a command in this process through ``pixsim_host.__main__.main``, the
function the console script calls (it hands over to ``pixsim_host.cli.run``, the one place
a HostError becomes ``Error: ...`` and an exit code). Each call gets the arguments,
environment, working directory and streams a fresh process would (a full environment,
stdin not a TTY, stdout and stderr apart) and gives them back afterwards. (Starting an
interpreter per command cost most of the suite's time.)

``run_cli_process`` starts a Python process that calls that function as the console
script does; it is for the tests whose subject is the process itself (the entry point,
signals, pipes, terminals, start-up). tests/unit/test_process_boundary.py checks that both
ways print the same.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "pixsim_host"]
# What the installed ``pixsim-host`` script does, with the interpreter running the tests.
CONSOLE_SCRIPT = [sys.executable, "-c", "import sys; from pixsim_host.__main__ import main; "
                  "sys.argv[0] = 'pixsim-host'; sys.exit(main())"]
SECRET_NAMES = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "SECRET_KEY")

# The make_host fixture: make_host(*init_args, name=..., port=...) -> the host directory.
MakeHost = Callable[..., Path]


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:  # shown by pytest when an assertion about a result fails
        return (f"pixsim-host {' '.join(self.args)} -> {self.returncode}\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without a host directory leaking in from outside."""
    env = {k: v for k, v in os.environ.items() if k != "PIXSIM_HOST_DIR"}
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


@contextmanager
def process_state(argv: list[str], env: dict[str, str], cwd: Path | None) -> Iterator[None]:
    """``argv`` as ``sys.argv``, ``env`` as the whole of ``os.environ``, ``cwd`` as the
    working directory and /dev/null as file descriptor 0 (what programs the command starts
    inherit), as a child process started with stdin=DEVNULL would have them; all given
    back afterwards."""
    saved_argv, saved_env, saved_cwd = sys.argv, dict(os.environ), os.getcwd()
    saved_tempdir, saved_excepthook = tempfile.tempdir, sys.excepthook  # Typer sets the hook
    saved_stdin_fd, null = os.dup(0), os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.argv = argv
    os.environ.clear()
    os.environ.update(env)
    # tempfile caches the directory it picked from TMPDIR on first use; a command must see
    # the TMPDIR it was given (tests check it leaves nothing there).
    tempfile.tempdir = None
    try:
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(saved_cwd)
        os.dup2(saved_stdin_fd, 0)
        os.close(saved_stdin_fd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        tempfile.tempdir = saved_tempdir
        sys.excepthook = saved_excepthook


def _exit_code(main: Callable[[], None]) -> int:
    """What a process running ``main()`` would exit with."""
    try:
        main()
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        sys.stderr.write(f"{exc.code}\n")  # what the interpreter does with sys.exit("text")
        return 1
    except Exception:
        sys.stderr.write(traceback.format_exc())  # an uncaught error: a traceback, exit 1
        return 1
    return 0


_CLICK_COMMANDS: dict[object, Any] = {}


@contextmanager
def _click_command_built_once() -> Iterator[None]:
    """Typer turns the app into a click command on every call, evaluating the type hints
    of every command's function (about 0.1 s); a process does that once. Click commands
    keep no state between invocations (each gets a fresh Context), so each app's command
    is built once and reused."""
    import typer.main

    build = typer.main.get_command

    def built_once(app: Any) -> Any:
        if app not in _CLICK_COMMANDS:
            _CLICK_COMMANDS[app] = build(app)
        return _CLICK_COMMANDS[app]

    typer.main.get_command = built_once
    try:
        yield
    finally:
        typer.main.get_command = build


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
    """Run ``pixsim-host *args`` in this process."""
    from typer import testing

    from pixsim_host.__main__ import main
    from pixsim_host.cli import output

    # stdin is empty and not a TTY, so init never prompts: the same as CI and scripts.
    runner = testing.CliRunner()
    argv = ["pixsim-host", *args]
    try:
        with process_state(argv, env or clean_env(), cwd), runner.isolation() as (out, err, _), \
                _click_command_built_once():
            # The runner pins help to 80 columns; a process whose output is a pipe lets
            # click pick (78). The runner puts its own value back when it ends.
            testing.formatting.FORCED_WIDTH = None
            code = _exit_code(main)
            sys.stdout.flush()
            sys.stderr.flush()
            stdout, stderr = out.getvalue(), err.getvalue()
    finally:
        # The CLI's per-command output mode (--json) lives in its module and ends with the
        # process; code a test calls directly afterwards must not inherit it.
        output.begin(json_mode=False)
    return Result(tuple(args), code, stdout.decode(runner.charset, "replace"),
                  stderr.decode(runner.charset, "replace"))


def run_cli_process(*args: str, cwd: Path | None = None,
                    env: dict[str, str] | None = None) -> Result:
    """Run ``pixsim-host *args`` as a child process: only for tests of what a process
    boundary does (entry point, signals, pipes, terminals, start-up time)."""
    proc = subprocess.run(
        [*CONSOLE_SCRIPT, *args], cwd=cwd, env=env or clean_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )
    return Result(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def read_secrets(host: Path) -> dict[str, str]:
    values = {}
    for line in (host / ".env").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def read_config(host: Path) -> dict[str, object]:
    import yaml

    data = yaml.safe_load((host / "pixsim-host.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``root`` with its bytes, mode and mtime: to prove nothing was written."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            info = path.stat()
            files[str(path.relative_to(root))] = (path.read_bytes(), info.st_mode, info.st_mtime_ns)
    return files


def assert_clean_failure(result: Result) -> None:
    """A user-facing failure: non-zero exit, an ``Error:`` line, no traceback."""
    assert result.returncode != 0, str(result)
    assert "Traceback" not in result.output, str(result)
    assert result.stderr.startswith("Error: "), str(result)


def assert_no_secret(text: str, secrets: dict[str, str]) -> None:
    for name in SECRET_NAMES:
        assert secrets[name] not in text, f"{name} leaked into:\n{text}"




def compose_unescape(value: str) -> str:
    """What Compose's interpolation makes of a string value: ``$$`` becomes ``$``.

    Any other ``$`` would start an interpolation (``$X``, ``${X}``), so a value that
    contains one would not reach the container as written: that is a test failure.
    """
    out, i = [], 0
    while i < len(value):
        if value[i] == "$":
            assert value[i + 1 : i + 2] == "$", f"unescaped '$' at {i} in {value!r}"
            out.append("$")
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)
