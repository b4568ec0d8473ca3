"""``up``, ``down``, ``status``, ``logs``, ``restart``: the host's running stack."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
