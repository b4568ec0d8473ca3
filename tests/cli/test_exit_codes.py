"""The documented exit codes, walked over every command: 2 for usage and config errors
(one line, like every error), 1 for failures and for a status that cannot tell, 4 for a
host that is not healthy, 3 for connect's identity change (test_json_schemas), 130 for an
interrupt; and every command's help teaches (a description, examples)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import invoke, one_document


def _command_paths() -> list[tuple[str, ...]]:
    from typer.main import get_command

    from pixsim_host.cli import app

    def walk(command: object, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        children = getattr(command, "commands", None)
        if not children:
            return [path]
        return [leaf for name, child in sorted(children.items()) for leaf in walk(child, (*path, name))]

    return walk(get_command(app), ())


COMMANDS = _command_paths()


def test_the_walk_finds_every_group() -> None:
    for expected in (("up",), ("destroy",), ("plugins", "disable"), ("hosts", "forget"), ("config", "set")):
        assert expected in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_a_usage_error_is_one_line_and_exit_2(path: tuple[str, ...], tmp_path: Path) -> None:
    wrong = invoke(*path, "--no-such-option", cwd=tmp_path)
    assert wrong.code == 2, str(wrong)
    assert wrong.stdout == "" and wrong.stderr.count("\n") == 1, str(wrong)
    assert wrong.stderr.startswith("Error: ") and f"see `pixsim-host {' '.join(path)} --help`" in wrong.stderr
    as_json = invoke(*path, "--no-such-option", "--json", cwd=tmp_path)
    assert as_json.code == 2 and one_document(as_json, "error")["error"]["code"] == "usage"


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_json_examples_and_a_full_description(path: tuple[str, ...]) -> None:
    helped = invoke(*path, "--help", columns=100)
    assert helped.code == 0, str(helped)
    assert "Examples:" in helped.stdout, f"`{' '.join(path)} --help` shows no example"
    if path != ("exec",):  # exec hands the terminal to the command it runs: no document
        assert "--json" in helped.stdout, f"`{' '.join(path)}` has no --json"
    assert "…" not in helped.stdout


def test_the_top_help_groups_commands_and_lists_the_exit_codes() -> None:
    helped = invoke("--help", columns=100).stdout
    panels = [name for name in ("Lifecycle", "Plugins", "Data", "Hosts and clients", "Diagnostics")
              if f"─ {name} " in helped]
    assert panels == ["Lifecycle", "Plugins", "Data", "Hosts and clients", "Diagnostics"], helped
    assert "Exit codes: 0 done; 1 failed" in helped and "4 status: not healthy" in helped
    assert "containers" not in helped  # runtime-neutral words: a native host has none


@pytest.mark.parametrize("args", [
    ("init", "--model", "bogus"), ("init", "--runtime", "podman"), ("up", "--pull", "sometimes"),
    ("connect",), ("init", "x", "--bind", "localhost"), ("init", "x", "--bind", ""),
    ("up", "--timeout", "-1"), ("logs", "--tail", "-3"),
])
def test_usage_errors_exit_2(args: tuple[str, ...], tmp_path: Path) -> None:
    outcome = invoke(*args, cwd=tmp_path)
    assert outcome.code == 2, str(outcome)
    assert outcome.stderr.startswith("Error: ") and outcome.stderr.count("\n") == 1, str(outcome)
    assert not (tmp_path / "x").exists(), "a usage error wrote something"


def test_bad_bind_is_refused_before_a_port_is_picked(tmp_path: Path) -> None:
    for bind in ("localhost", "", "300.1.1.1"):
        outcome = invoke("init", str(tmp_path / "h"), "--yes", "--bind", bind)
        assert outcome.code == 2 and "Traceback" not in outcome.stderr, str(outcome)
        assert "is not an IP address" in outcome.stderr or "the address is empty" in outcome.stderr
    assert not (tmp_path / "h").exists()


def test_config_error_exit_2_failure_exit_1_not_healthy_exit_4(tmp_path: Path) -> None:
    docker_host, native_host = tmp_path / "d", tmp_path / "n"
    assert invoke("init", str(docker_host), "--yes", "--name", "codes-d", "--port", "18960",
                  "--runtime", "docker").code == 0
    assert invoke("init", str(native_host), "--yes", "--name", "codes-n", "--port", "18961",
                  "--runtime", "native").code == 0
    # No engine answers: status cannot tell (1), a command that must act fails (1).
    assert invoke("status", "--dir", str(docker_host)).code == 1
    assert invoke("down", "--dir", str(docker_host)).code == 1
    # A native host that is not running answers for itself: not healthy (4).
    stopped = invoke("status", "--dir", str(native_host))
    assert stopped.code == 4 and "is not running" in stopped.stdout, str(stopped)
    # The old --no-wait still works (unlisted), as --no-lock-wait.
    assert invoke("down", "--no-wait", "--dir", str(native_host)).code == 0
    config = docker_host / "pixsim-host.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("model: self", "model: public"),
                      encoding="utf-8")
    broken = invoke("status", "--dir", str(docker_host))
    assert broken.code == 2 and broken.stderr.startswith("Error: "), str(broken)


def test_an_interrupt_is_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pixsim_host import stack

    host = tmp_path / "i"
    assert invoke("init", str(host), "--yes", "--name", "codes-i", "--port", "18962").code == 0

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(stack, "status", interrupted)
    plain = invoke("status", "--dir", str(host))
    assert plain.code == 130 and plain.stderr.startswith("Interrupted"), str(plain)
    as_json = invoke("status", "--dir", str(host), "--json")
    assert as_json.code == 130 and one_document(as_json, "error")["error"]["code"] == "interrupted"
