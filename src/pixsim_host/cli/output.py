"""Printing for commands: one console for results, errors on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from pixsim_host.errors import ConfigError, HostError


def print_error(exc: HostError) -> None:
    if isinstance(exc, ConfigError) and len(exc.problems) > 1:
        # One line per problem, so a user fixing the file can work down the list.
        head, _, _ = exc.message.partition(": ")
        sys.stderr.write(f"Error: {head}:\n")
        for problem in exc.problems:
            sys.stderr.write(f"  {problem}\n")
        sys.stderr.write("Fix the file (or use `pixsim-host config set`) and retry.\n")
        return
    sys.stderr.write(f"Error: {exc.message}\n")
    if exc.details:
        sys.stderr.write(exc.details.rstrip("\n") + "\n")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def warn(message: str) -> None:
    sys.stderr.write(f"Warning: {message}\n")


def info(message: str) -> None:
    sys.stdout.write(message + "\n")
