"""Helpers for the in-process CLI tests: run a command, read its JSON, check its schema.

``invoke`` runs ``pixsim_host.cli.run`` (the entry point's one error and exit-code handler)
inside ``typer.testing.CliRunner``'s isolation: its own stdout and stderr, an empty stdin
that is not a terminal, and the environment given. ``terminal=True`` makes stdout (and
stderr) look like a terminal of ``columns`` columns, for the screens meant for people.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


@dataclass(frozen=True)
class Outcome:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (f"pixsim-host {' '.join(self.args)} -> {self.code}\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")


@contextmanager
def _chdir(path: Path | None) -> Iterator[None]:
    before = os.getcwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def invoke(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
           terminal: bool = False, columns: int = 80, answers: str | None = None) -> Outcome:
    from typer.testing import CliRunner

    from pixsim_host.cli import output, run

    environment = {"NO_COLOR": "1", "PIXSIM_HOST_DIR": None, "COLUMNS": str(columns), **NO_ENGINE,
                   **(env or {})}
    runner = CliRunner()
    with runner.isolation(input=answers, env=environment) as (out, err, _), _chdir(cwd), \
            pytest.MonkeyPatch.context() as patch:
        if terminal:
            patch.setattr(output, "stdout_is_terminal", lambda: True)
            patch.setattr(output, "stderr_is_terminal", lambda: False)  # no live spinner in a test
        if answers is not None:  # typed at a terminal: the command may ask
            from pixsim_host.cli import destroy_cmd, host_cmds, lifecycle

            for module in (destroy_cmd, host_cmds, lifecycle):
                patch.setattr(module, "stdin_is_tty", lambda: True)
        code = 0
        try:
            run(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        sys.stdout.flush()
        sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return Outcome(tuple(args), code, stdout, stderr)


@cache
def schemas() -> dict[str, dict[str, Any]]:
    folder = resources.files("pixsim_host") / "schemas"
    return {entry.name.removesuffix(".json"): json.loads(entry.read_text(encoding="utf-8"))
            for entry in folder.iterdir() if entry.name.endswith(".json")}


def schema_names() -> list[str]:
    return sorted(name for name in schemas() if name != "common")


def check_schema(name: str, document: Any) -> None:
    """``document`` is valid against the shipped schemas/NAME.json (and common.json)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    shipped = schemas()
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in shipped.values())
    validator = Draft202012Validator(shipped[name], registry=registry)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, f"{name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors)


def one_document(outcome: Outcome, schema: str) -> Any:
    """Under --json: stdout is exactly one JSON document, valid against ``schema``
    (``error`` when the command failed)."""
    assert "Traceback" not in outcome.stderr, str(outcome)
    document = json.loads(outcome.stdout)  # one document, nothing else (json.loads refuses more)
    check_schema("error" if outcome.code != 0 and "error" in document else schema, document)
    if "error" in document:
        assert document["error"]["exit_code"] == outcome.code, str(outcome)
    return document
