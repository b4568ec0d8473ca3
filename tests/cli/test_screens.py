"""The screens people read fit an 80-column terminal (Rich tables fold long cells instead of
wrapping mid-word past the edge), and are plain aligned lines when piped. `up`'s summary and
a running host's `status` are checked on a real 80-column pseudo-terminal by
tests/e2e/test_cli_pipes.py."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import invoke

BOX = ("─", "━", "│", "┃")


def _too_long(screen: str, columns: int = 80) -> list[str]:
    return [line for line in screen.splitlines() if len(line.rstrip()) > columns]


def _hosts(tmp_path: Path, which: int = 1) -> Path:
    # Long names and deep directories: the cells a table must fold to fit.
    deep = tmp_path / "a-rather-long-directory-name" / "holding-several-levels" / "of-host-directories"
    for number, runtime in enumerate(("docker", "native")):
        made = invoke("init", str(deep / f"host-with-a-long-name-{number}"), "--yes", "--name",
                      f"game-night-with-friends-{number}", "--port", str(18970 + number),
                      "--runtime", runtime)
        assert made.code == 0, str(made)
    return deep / f"host-with-a-long-name-{which}"  # 0 runs on Docker, 1 natively


def test_hosts_list_fits_80_columns_on_a_terminal_and_is_plain_when_piped(tmp_path: Path) -> None:
    _hosts(tmp_path)
    screen = invoke("hosts", "list", terminal=True).stdout
    assert "game-night-with-friends-0" in screen and "NAME" in screen, screen
    assert _too_long(screen) == [], screen
    piped = invoke("hosts", "list").stdout
    assert not any(mark in piped for mark in BOX), piped
    rows = [line for line in piped.splitlines() if line.startswith("game-night-with-friends-")]
    assert len(rows) == 2 and all(str(tmp_path) in row for row in rows), piped  # one line per host


def test_doctor_fits_80_columns(tmp_path: Path) -> None:
    host = _hosts(tmp_path, 0)  # no engine answers: the Docker host fails a check, with a fix
    outcome = invoke("doctor", "--dir", str(host), terminal=True)
    assert "CHECK" in outcome.stdout and "fix:" in outcome.stdout, str(outcome)
    assert _too_long(outcome.stdout) == [], outcome.stdout
    piped = invoke("doctor", "--dir", str(host)).stdout
    assert "ok    config" in piped and not any(mark in piped for mark in BOX), piped


def test_status_of_a_stopped_host_fits_80_columns(tmp_path: Path) -> None:
    host = _hosts(tmp_path)
    outcome = invoke("status", "--dir", str(host), terminal=True)
    assert outcome.code == 4 and "is not running" in " ".join(outcome.stdout.split()), str(outcome)
    assert _too_long(outcome.stdout) == [], outcome.stdout


def test_help_fits_80_columns() -> None:
    for path in ((), ("up",), ("init",), ("destroy",), ("plugins",), ("plugins", "disable")):
        helped = invoke(*path, "--help", columns=80)
        assert helped.code == 0 and _too_long(helped.stdout) == [], helped.stdout


def test_a_closed_stdout_drops_writes_and_says_so() -> None:
    import io

    from pixsim_host.cli.output import PipeSafe

    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    stream = PipeSafe(Closed())
    assert stream.write("a line\n") == len("a line\n") and stream.broken
    stream.write("more\n")  # dropped, no error
    stream.flush()
