"""How long-running work reports what it is doing: one ``(service, message)`` call per step.

The CLI passes a printer; tests and background probes pass :func:`quiet`.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, str], None]  # (service, message)


def quiet(service: str, message: str) -> None:
    """A progress sink that keeps everything to itself."""
    del service, message
