"""An invalid pixsim-host.yaml or `config set` value: one clear line per problem, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from unit_helpers import MakeHost, Result, assert_clean_failure, read_config, run_cli, snapshot


def _edit_config(host: Path, old: str, new: str) -> None:
    path = host / "pixsim-host.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in the config"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _problem_lines(result: Result) -> list[str]:
    return [line.strip() for line in result.stderr.splitlines()]


@pytest.mark.parametrize("command", [("info",), ("render",), ("config", "show"), ("render", "--check")])
def test_each_problem_gets_its_own_line(make_host: MakeHost, command: tuple[str, ...]) -> None:
    host = make_host()
    _edit_config(host, "port: 18700", "port: 70000")
    _edit_config(host, "model: self", "model: public")
    _edit_config(host, "  user: pixsim", "  user: Pix Sim")
    before = snapshot(host)
    result = run_cli(*command, "--dir", str(host))
    assert_clean_failure(result)
    lines = _problem_lines(result)
    assert "backend.port: must be between 1 and 65535" in lines, str(result)
    assert "model: must be one of 'self', 'friend' or 'shared'" in lines, str(result)
    assert ("database.user: must be lowercase letters, digits and underscores, "
            "not starting with a digit") in lines, str(result)
    assert "pixsim-host.yaml" in result.stderr  # names the file
    assert snapshot(host) == before  # nothing re-rendered from an invalid config


def test_a_single_problem_is_one_error_line(make_host: MakeHost) -> None:
    host = make_host()
    _edit_config(host, "port: 18700", "port: 0")
    result = run_cli("info", "--dir", str(host))
    assert_clean_failure(result)
    assert result.stderr.count("\n") == 1, str(result)
    assert "backend.port: must be between 1 and 65535" in result.stderr


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("  port: 18700", "  prot: 18700", "backend.prot: unknown key; did you mean 'port'?"),
        ("name: test-host", "nmae: test-host", "nmae: unknown key; did you mean 'name'?"),
        ("backend:", "backnd:", "backnd: unknown key; did you mean 'backend'?"),
        ("  image: redis:7-alpine", "  imgae: redis:7-alpine",
         "redis.imgae: unknown key; did you mean 'image'?"),
    ],
)
def test_unknown_keys_are_rejected_with_a_suggestion(
    make_host: MakeHost, old: str, new: str, expected: str
) -> None:
    host = make_host()
    _edit_config(host, old, new)
    result = run_cli("render", "--dir", str(host))
    assert_clean_failure(result)
    assert expected in result.stderr, str(result)


def test_an_unknown_top_level_key_is_not_matched_against_nested_keys(make_host: MakeHost) -> None:
    # 'port' is a key of backend, not of the top level: suggesting it would mislead.
    host = make_host()
    _edit_config(host, "model: self", "model: self\nprot: 1")
    result = run_cli("render", "--dir", str(host))
    assert_clean_failure(result)
    assert "prot: unknown key" in result.stderr, str(result)
    assert "did you mean 'port'" not in result.stderr, str(result)


def _line_of(host: Path, prefix: str) -> int:
    lines = (host / "pixsim-host.yaml").read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, start=1) if line.startswith(prefix))


def test_yaml_syntax_error_names_the_line(make_host: MakeHost) -> None:
    host = make_host()
    number = _line_of(host, "  bind:")
    _edit_config(host, "  bind: 127.0.0.1", "  bind: 127.0.0.1: 8000")
    result = run_cli("info", "--dir", str(host))
    assert_clean_failure(result)
    assert result.stderr.startswith(
        f"Error: pixsim-host.yaml line {number}, column 18: YAML syntax error: "
        "mapping values are not allowed here"
    ), str(result)


def test_yaml_error_far_from_its_cause_names_where_the_construct_starts(
    make_host: MakeHost,
) -> None:
    # An unclosed quote is only noticed at the end of the file; the line to fix is its start.
    host = make_host()
    number = _line_of(host, "name:")
    _edit_config(host, "name: test-host", 'name: "unterminated')
    result = run_cli("info", "--dir", str(host))
    assert_clean_failure(result)
    assert f"quoted scalar that starts at line {number}, column 7" in result.stderr, str(result)


@pytest.mark.parametrize(
    "content",
    ["", "- a list\n- not a mapping\n", "just text\n"],
)
def test_a_config_that_is_not_a_mapping(make_host: MakeHost, content: str) -> None:
    host = make_host()
    (host / "pixsim-host.yaml").write_text(content, encoding="utf-8")
    result = run_cli("info", "--dir", str(host))
    assert_clean_failure(result)
    assert "must be a YAML mapping" in result.stderr, str(result)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("backend.port", "70000", "backend.port: must be between 1 and 65535"),
        ("backend.port", "eighty", "backend.port: must be a whole number"),
        ("backend.bind", "localhost", "backend.bind: must be an IP address"),
        ("backend.bind", "192.168.1.5", "must be a loopback address for model 'self'"),
        ("model", "public", "model: must be one of 'self', 'friend' or 'shared'"),
        ("name", "", "name: must be 1 to 64 characters long"),
        ("name", "!!!", "name: must contain at least one ASCII letter or digit"),
        ("backend.public_url", "ftp://x", "backend.public_url: must be an http:// or https:// URL"),
        ("plugins.enabled", "[Romance]", "must match ^[a-z][a-z0-9_-]*$"),
        ("plugins.enabled", "[core]", "is a reserved name"),
        ("plugins.enabled", "[a, a]", "lists a plugin twice"),
        ("plugins.enabled", "[a", "cannot parse"),
        ("backend.prot", "1", "did you mean 'backend.port'?"),
    ],
)
def test_invalid_config_set_writes_nothing(
    make_host: MakeHost, key: str, value: str, expected: str
) -> None:
    host = make_host()
    before = snapshot(host)
    result = run_cli("config", "set", key, value, "--dir", str(host))
    assert_clean_failure(result)
    assert expected in result.stderr, str(result)
    assert snapshot(host) == before


def test_config_set_then_get(make_host: MakeHost) -> None:
    host = make_host()
    d = ("--dir", str(host))
    assert run_cli("config", "set", "backend.port", "18712", *d).returncode == 0
    assert run_cli("config", "get", "backend.port", *d).stdout == "18712\n"
    assert run_cli("config", "set", "backend.public_url", "https://pixsim.example.org/", *d).returncode == 0
    assert read_config(host)["backend"]["public_url"] == "https://pixsim.example.org"  # type: ignore[index]
    assert "VITE_BACKEND_URL='https://pixsim.example.org'" in (host / "frontend.env").read_text()
    assert run_cli("config", "set", "backend.public_url", "null", *d).returncode == 0
    assert read_config(host)["backend"]["public_url"] is None  # type: ignore[index]
    assert "VITE_BACKEND_URL='http://127.0.0.1:18712'" in (host / "frontend.env").read_text()
    result = run_cli("config", "get", "nmae", *d)
    assert_clean_failure(result)
    assert "did you mean 'name'?" in result.stderr


def test_a_config_from_a_newer_release_is_refused_clearly(make_host: MakeHost) -> None:
    host = make_host()
    _edit_config(host, "version: 1", "version: 2")
    result = run_cli("info", "--dir", str(host))
    assert_clean_failure(result)
    assert "version: is 2, but this pixsim-host" in result.stderr, str(result)


@pytest.mark.parametrize(
    "args",
    [("config", "set", "--bogus"), ("config", "set", "name"), ("init", "--port", "eighty"),
     ("info", "extra-argument")],
)
def test_usage_errors_exit_2_without_a_traceback(args: tuple[str, ...], tmp_path: Path) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, str(result)
    assert "Traceback" not in result.output
    # One line, like every other error: what is wrong; where to look.
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1, str(result)
    assert "--help`" in result.stderr
