"""Printing for commands: one console for results, errors on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from pixsim_host.errors import HostError


def print_error(exc: HostError) -> None:
    sys.stderr.write(f"Error: {exc.message}\n")
    if exc.details:
        sys.stderr.write(exc.details.rstrip("\n") + "\n")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def warn(message: str) -> None:
    sys.stderr.write(f"Warning: {message}\n")


def info(message: str) -> None:
    sys.stdout.write(message + "\n")
