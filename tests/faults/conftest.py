"""Fixtures for the fault and hostile-input suite.

The tests here run the real CLI in this process (unit_helpers.run_cli), so a fault can be
injected at a seam (a write that finds the disk full, an HTTP transport) and the outcome
checked exactly: exit code, the one error line, what is on disk.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The CLI runners and host helpers are shared with the unit tests, the native hosts with
# the end-to-end tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from native_support import Hosts, native_hosts  # noqa: E402
from unit_helpers import MakeHost, run_cli  # noqa: E402


@pytest.fixture
def make_host(tmp_path: Path) -> MakeHost:
    """Create a Docker-runtime host (not started) with the real CLI; returns its directory."""
    counter = iter(range(1000))

    def make(*args: str, name: str | None = None, port: str | None = None) -> Path:
        number = next(counter)
        name = name or f"fault-host-{number}"
        port = port or str(18900 + number)
        host = tmp_path / f"host{number}"
        result = run_cli("init", str(host), "--yes", "--name", name, "--port", port,
                         "--runtime", "docker", *args)
        assert result.returncode == 0, str(result)
        return host

    return make


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    """Native hosts of one test; every process they ran is gone when it ends."""
    yield from native_hosts()
