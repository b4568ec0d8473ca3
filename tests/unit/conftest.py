"""Fixtures for the unit tests; the helpers they use live in unit_helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from unit_helpers import MakeHost, run_cli


@pytest.fixture
def make_host(tmp_path: Path) -> MakeHost:
    """Create a host with the real CLI; returns its directory."""
    counter = iter(range(1000))

    def make(*args: str, name: str | None = None, port: str | None = None) -> Path:
        # The machine registry refuses a second host with the same name or port, so
        # every host after the first gets its own.
        number = next(counter)
        name = name or ("test-host" if number == 0 else f"test-host-{number}")
        port = port or str(18700 + number)
        host = tmp_path / f"host{number}"
        result = run_cli("init", str(host), "--yes", "--name", name, "--port", port, *args)
        assert result.returncode == 0, str(result)
        return host

    return make
