"""Hostile and corrupted inputs: each gets one ``Error:`` line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from unit_helpers import MakeHost, assert_clean_failure, run_cli


@pytest.mark.parametrize("command", [("status",), ("config", "show", "--reveal")])
def test_env_that_is_not_utf8_is_a_clean_error(make_host: MakeHost, command: tuple[str, ...]) -> None:
    host = make_host()
    env = host / ".env"
    env.write_bytes(b"POSTGRES_PASSWORD=\xff\xfe\n")
    env.chmod(0o600)
    result = run_cli(*command, "--dir", str(host))
    assert_clean_failure(result)
    assert "not UTF-8" in result.stderr
    assert env.read_bytes() == b"POSTGRES_PASSWORD=\xff\xfe\n"


def test_env_that_is_a_directory_is_a_clean_error(make_host: MakeHost) -> None:
    host = make_host()
    env = host / ".env"
    env.unlink()
    env.mkdir(mode=0o700)
    result = run_cli("status", "--dir", str(host))
    assert_clean_failure(result)
    assert "cannot read" in result.stderr and "\n" not in result.stderr.rstrip("\n")


@pytest.mark.parametrize(("template", "expected"), [
    (b"{{ 1/0 }}\n", "ZeroDivisionError"),
    (b"\xff\xfe{{ x }}\n", "not UTF-8"),
    (b'{% extends "frontend.env.j2" %}\n', "extends itself"),
])
def test_broken_template_override_is_a_clean_error(make_host: MakeHost, template: bytes,
                                                   expected: str) -> None:
    host = make_host()
    (host / "templates").mkdir()
    (host / "templates" / "frontend.env.j2").write_bytes(template)
    before = (host / "frontend.env").read_bytes()
    result = run_cli("render", "--dir", str(host))
    assert_clean_failure(result)
    assert expected in result.stderr and "frontend.env.j2" in result.stderr
    assert (host / "frontend.env").read_bytes() == before


def test_override_rendering_invalid_yaml_is_a_one_line_error(make_host: MakeHost) -> None:
    host = make_host()
    (host / "templates").mkdir()
    (host / "templates" / "compose.yaml.j2").write_text("services: [\n", encoding="utf-8")
    result = run_cli("render", "--dir", str(host))
    assert_clean_failure(result)
    assert result.stderr.count("\n") == 1, str(result)
    assert "not valid YAML" in result.stderr


def test_generated_file_that_is_not_utf8_reads_as_edited(make_host: MakeHost) -> None:
    host = make_host()
    (host / "compose.yaml").write_bytes(b"\xff\n")
    check = run_cli("render", "--check", "--dir", str(host))
    assert check.returncode == 1 and "Traceback" not in check.output, str(check)
    assert "compose.yaml differ" in check.stderr
    status = run_cli("status", "--dir", str(host))
    assert_clean_failure(status)
    assert "not UTF-8" in status.stderr
    assert run_cli("render", "--dir", str(host)).returncode == 0
    assert (host / "compose.yaml").read_text(encoding="utf-8").startswith("# Generated")


def test_generated_file_that_is_a_directory_is_a_clean_error(make_host: MakeHost) -> None:
    host = make_host()
    (host / "compose.yaml").unlink()
    (host / "compose.yaml").mkdir()
    for command in ("render", "status"):
        result = run_cli(command, "--dir", str(host))
        assert_clean_failure(result)
        assert "is not a file" in result.stderr


@pytest.mark.parametrize("args", [
    ("connect", "127.0.0.1:1", "--timeout", "-1"),
    ("hosts", "list", "--timeout", "nan"),
    ("up", "--timeout", "-1"),
    ("plugins", "enable", "x", "--timeout", "inf"),
    ("logs", "--tail", "-5"),
])
def test_negative_or_nan_timeout_and_tail_are_usage_errors(make_host: MakeHost,
                                                          args: tuple[str, ...]) -> None:
    host = make_host()
    before = sorted(p.name for p in host.iterdir())
    result = run_cli(*args, "--dir", str(host)) if args[0] in ("up", "plugins", "logs") \
        else run_cli(*args)
    assert result.returncode == 2, str(result)
    assert "Traceback" not in result.output
    assert "Invalid value for '--t" in result.stderr
    assert sorted(p.name for p in host.iterdir()) == before


def test_backup_never_overwrites_a_file_that_is_not_a_bundle(make_host: MakeHost) -> None:
    host = make_host()
    other = make_host()
    secrets = (host / ".env").read_bytes()
    config = (other / "pixsim-host.yaml").read_bytes()
    for target in (host / ".env", other / "pixsim-host.yaml"):
        result = run_cli("backup", "--dir", str(host), "-o", str(target))
        assert_clean_failure(result)
        assert "is not a pixsim-host bundle" in result.stderr
    assert (host / ".env").read_bytes() == secrets
    assert (host / ".env").stat().st_mode & 0o777 == 0o600
    assert (other / "pixsim-host.yaml").read_bytes() == config


@pytest.mark.parametrize("where", ["/", "host-dir"])
def test_backup_to_a_directory_is_a_clean_error(make_host: MakeHost,
                                                                    where: str) -> None:
    host = make_host()
    target = str(host) if where == "host-dir" else where
    result = run_cli("backup", "--dir", str(host), "-o", target)
    assert_clean_failure(result)
    assert "\n" not in result.stderr.rstrip("\n")


def test_init_refuses_an_empty_directory_argument(tmp_path: Path) -> None:
    # Typer turns "" into Path("."): the host would quietly be made in the current directory.
    result = run_cli("init", "", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.startswith("Error: the host directory is empty"), result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["backend:\n  port", "version"])
def test_yaml_booleans_are_not_numbers(tmp_path: Path, key: str) -> None:
    # pydantic's lax mode would read `true` as 1: port 1, or config version 1.
    from pixsim_host.config import load_config
    from pixsim_host.errors import ConfigError

    config = tmp_path / "pixsim-host.yaml"
    config.write_text(
        "host_id: 0b6a3d7e-6f1c-4f4e-9d2a-3c5b7e9f1a2b\nname: strict\n" + f"{key}: true\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="must be a whole number"):
        load_config(config)


def test_ctrl_c_while_waiting_is_one_clean_line(make_host: MakeHost) -> None:
    # `up` waits for the host's lock (held here), before it needs any engine; Ctrl-C there
    # must end with one line and exit 130, never a traceback.
    import os
    import signal
    import time

    from filelock import FileLock

    host = make_host()
    (host / ".pixsim-host").mkdir(exist_ok=True)
    with FileLock(str(host / ".pixsim-host" / "lock")):
        process = subprocess.Popen(
            [sys.executable, "-m", "pixsim_host", "up", "--dir", str(host)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"},
        )
        try:
            deadline = time.monotonic() + 30
            assert process.stderr is not None
            first = process.stderr.readline()  # the "Waiting for ..." line
            assert "Waiting" in first, first
            assert time.monotonic() < deadline
            process.send_signal(signal.SIGINT)
            _, rest = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 130
    assert "Traceback" not in rest
    assert rest.strip().splitlines()[-1].startswith("Interrupted."), rest
