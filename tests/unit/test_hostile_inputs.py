"""Hostile and corrupted inputs: each gets one ``Error:`` line, never a traceback."""

from __future__ import annotations

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
