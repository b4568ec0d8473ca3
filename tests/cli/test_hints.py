"""Advice that works: every `pixsim-host ...` command the code suggests (in an error's hint,
a warning, a next step) is a command line the CLI accepts as written, placeholders filled
in. A hint that is only a command's name (`pixsim-host backup`) must name a command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "pixsim_host"
HINT = re.compile(r"`pixsim-host ([^`]+)`")
# What a user types for each placeholder (f-string fields and CAPITALS in the text).
SAMPLES = {
    "{key}": "backend.port", "{suggestion}": "8010", "{url}": "http://127.0.0.1:8000",
    "{directory}": "/tmp/h", "{host.root}": "/tmp/h", "{entry.directory}": "/tmp/h",
    "{s.entry.directory}": "/tmp/h", "{holder.directory}": "/tmp/h", "{name}": "db",
    "{service}": "db", "{pid}": "romance", "{dependents[0]}": "romance", "{external[0]}": "romance",
    "{LIST_PLUGIN}": "admin_plugins", "{entry.name}": "my-host", "{backup_to}": "b.tar.gz",
    "{free}": "8010", "{option}": "--port",
    "ID": "romance", "NEW_DIR": "/tmp/h", "DIR": "/tmp/h", "NAME": "my-host", "PORT": "8010",
    "ADDRESS": "0.0.0.0", "IMAGE": "postgres:16", "URL": "http://127.0.0.1:8000",
    "SERVICE": "db", "...": "x",
}


def _hints() -> list[tuple[str, str]]:
    found = set()
    for path in sorted(SOURCE.rglob("*.py")):
        for match in HINT.finditer(path.read_text(encoding="utf-8")):
            # As the string prints: an escaped quote is a quote on screen, and a hint split
            # over two source lines ("...\n f"...") is one line.
            text = re.sub(r'"\s*\n\s*[rbf]*"', "", match.group(1)).replace('\\"', '"')
            found.add((str(path.relative_to(SOURCE)), text))
    return sorted(found)


def _filled(hint: str) -> list[list[str]]:
    """The command lines a hint stands for: placeholders filled in, and one line per
    alternative where it offers some (`plugins enable|disable`)."""
    text = hint.split(" | ")[0]  # a pipeline's first command
    if "{command}" in text:
        return []  # a command line built elsewhere, not advice
    lines: list[list[str]] = [[]]
    for word in shlex.split(text):
        if word.startswith("{") and word.endswith("}"):
            choices = [SAMPLES.get(word, "x")]  # another field: any word will do
        else:
            choices = [SAMPLES.get(choice, choice) for choice in word.split("|")] if "|" in word \
                else [SAMPLES.get(word, word)]
        lines = [[*line, choice] for line in lines for choice in choices]
    return lines


def _accepts(words: list[str]) -> tuple[bool, str]:
    """Whether the CLI parses ``words`` (types, choices, arguments), without running it."""
    from typer.main import get_command

    from pixsim_host.cli import app

    command: Any = get_command(app)
    ctx = command.make_context("pixsim-host", [], resilient_parsing=True)
    rest = list(words)
    while rest and hasattr(command, "get_command") and rest[0] not in ("--help", "--version"):
        child = command.get_command(ctx, rest[0])
        if child is None:
            return False, f"no command {rest[0]!r}"
        command, rest = child, rest[1:]
        ctx = command.make_context(child.name, [], parent=ctx, resilient_parsing=True)
    if hasattr(command, "get_command") and not rest:
        return True, "a group"
    if not rest or rest in (["--help"], ["--version"]):
        return True, "names a command"
    try:
        command.make_context(" ".join(words), rest, parent=ctx.parent)
    except Exception as exc:  # click's UsageError family (vendored by Typer)
        return False, f"{type(exc).__name__}: {exc}"
    return True, "parses"


HINTS = _hints()


def test_the_hints_are_found() -> None:
    assert len(HINTS) > 40
    assert ("cli/lifecycle.py", "logs {name}") in HINTS


@pytest.mark.parametrize(("where", "hint"), HINTS, ids=[f"{w}: {h}" for w, h in HINTS])
def test_every_suggested_command_is_accepted(where: str, hint: str) -> None:
    for words in _filled(hint):
        if words and words[0].startswith("--") and words[0] not in ("--help", "--version"):
            pytest.fail(f"{where}: `pixsim-host {hint}` starts with an option")
        ok, why = _accepts(words)
        assert ok, f"{where}: `pixsim-host {hint}` -> `pixsim-host {' '.join(words)}` is refused: {why}"
