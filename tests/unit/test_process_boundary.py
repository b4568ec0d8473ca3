"""The command line as a real process, and proof that the in-process runner matches it.

The unit suite runs commands in-process (``unit_helpers.run_cli``). What only a process
shows is tested with ``run_cli_process`` (a process calling the console script's entry
point) here and where the boundary is the subject: a terminal as stdin (test_init.py),
Ctrl-C (test_hostile_inputs.py), inits racing from several processes and the import cost
of ``--help`` (test_hosts_registry.py), the installed console script (test_wheel.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from unit_helpers import CONSOLE_SCRIPT, Result, clean_env, read_config, run_cli, run_cli_process

from pixsim_host.cli import output


def _both(*args: str, cwd: Path) -> tuple[Result, Result]:
    return run_cli_process(*args, cwd=cwd), run_cli(*args, cwd=cwd)


@pytest.mark.parametrize("args", [
    ["--version"],  # answered by the entry point before the CLI is imported
    ["--help"],
    [],  # a bare command prints its help
    ["info"],  # a HostError: no host here
    ["info", "--json"],  # the same as a JSON error document
    ["init", "--no-such-option"],  # a usage error
    ["config", "get", "backend.port", "--dir", "missing"],
])
def test_in_process_runs_match_the_process(tmp_path: Path, args: list[str]) -> None:
    process, in_process = _both(*args, cwd=tmp_path)
    assert (in_process.returncode, in_process.stdout, in_process.stderr) == \
        (process.returncode, process.stdout, process.stderr), f"{process}\n---- in-process:\n{in_process}"
    assert "Traceback" not in process.output, str(process)


def test_the_process_creates_a_host_and_reports_on_the_right_streams(tmp_path: Path) -> None:
    created = run_cli_process("init", "h", "--yes", "--name", "proc-host", "--port", "18790", cwd=tmp_path)
    assert created.returncode == 0, str(created)
    assert "Created host 'proc-host'" in created.stdout
    assert (tmp_path / "h" / "pixsim-host.yaml").is_file()
    again = run_cli_process("init", "h", "--yes", "--name", "proc-host", "--port", "18790", cwd=tmp_path)
    assert again.returncode != 0 and again.stdout == "", str(again)
    assert again.stderr.startswith("Error: ") and "Traceback" not in again.stderr, str(again)


def test_a_reader_gone_before_init_writes_does_not_stop_it(tmp_path: Path) -> None:
    # `pixsim-host init h | head -0`: the result line meets a closed pipe; the host is
    # still made, and the process ends without a traceback.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([*CONSOLE_SCRIPT, "init", "h", "--yes", "--name", "piped", "--port", "18792"],
                              cwd=tmp_path, env=clean_env(), stdin=subprocess.DEVNULL, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert read_config(tmp_path / "h")["name"] == "piped"


def _process_wide_state() -> dict[str, Any]:
    umask = os.umask(0o022)
    os.umask(umask)
    stdin = os.fstat(0)
    return {
        "environ": dict(os.environ), "cwd": os.getcwd(), "argv": list(sys.argv), "umask": umask,
        "streams": (sys.stdin, sys.stdout, sys.stderr), "stdin fd": (stdin.st_dev, stdin.st_ino),
        "tempdir": tempfile.tempdir, "excepthook": sys.excepthook,
        "signals": {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)},
    }


def test_a_command_run_in_process_leaves_the_process_as_it_was(tmp_path: Path) -> None:
    # What one command sets (environment, directory, streams, --json, signal handlers)
    # must not reach the next test.
    before = _process_wide_state()
    env = clean_env(PIXSIM_HOST_DIR=str(tmp_path / "h"), TMPDIR=str(tmp_path))
    created = run_cli("init", "h", "--yes", "--name", "trace-host", "--port", "18791", cwd=tmp_path, env=env)
    assert created.returncode == 0, str(created)
    assert run_cli("info", "--no-such-option", env=env).returncode != 0
    assert run_cli("info", "--json", cwd=tmp_path, env=env).returncode == 0
    assert _process_wide_state() == before
    assert not output.json_mode()  # the --json of the command before
