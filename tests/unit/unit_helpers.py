"""Helpers for the unit tests: run the real CLI in a subprocess, inspect host directories.

The CLI runs as ``python -m pixsim_host`` with the interpreter running pytest, so the
tests exercise the same entry point, error handling and exit codes a user gets (the
one place a HostError becomes ``Error: ...`` is ``pixsim_host.cli.run``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CLI = [sys.executable, "-m", "pixsim_host"]
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


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
    # stdin is not a TTY, so init never prompts: the same as CI and scripts.
    proc = subprocess.run(
        [*CLI, *args], cwd=cwd, env=env or clean_env(), stdin=subprocess.DEVNULL,
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
