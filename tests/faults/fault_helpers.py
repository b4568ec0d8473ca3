"""Helpers shared by the fault tests (no tests in here)."""

from __future__ import annotations


def error_lines(stderr: str) -> list[str]:
    """The error line(s) of a command's stderr (progress lines go there too); no traceback."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith(("Error", "Interrupted"))]
