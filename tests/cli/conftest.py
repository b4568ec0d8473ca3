"""Fixtures of the in-process CLI tests (helpers in cli_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import invoke

MakeHost = Callable[..., Path]


@pytest.fixture
def make_host(tmp_path: Path) -> MakeHost:
    """``make_host(*init_args)``: a new host (its own name and port) made with ``init``."""
    numbers = iter(range(100))

    def make(*args: str) -> Path:
        number = next(numbers)
        host = tmp_path / f"host{number}"
        made = invoke("init", str(host), "--yes", "--name", f"cli-host-{number}", "--port",
                      str(18900 + number), *args)
        assert made.code == 0, str(made)
        return host

    return make
