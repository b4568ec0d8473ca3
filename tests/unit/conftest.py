"""Fixtures for the unit tests; the helpers they use live in unit_helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from unit_helpers import MakeHost, run_cli


@pytest.fixture
def make_host(tmp_path: Path) -> MakeHost:
    """Create a host with the real CLI; returns its directory."""
    counter = iter(range(1000))

    def make(*args: str, name: str = "test-host", port: str = "18700") -> Path:
        host = tmp_path / f"host{next(counter)}"
        result = run_cli("init", str(host), "--yes", "--name", name, "--port", port, *args)
        assert result.returncode == 0, str(result)
        return host

    return make
