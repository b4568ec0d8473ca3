"""Journals of multi-step changes, so an interrupt at any moment is found by the next command.

A change that takes several steps (a restore, a plugin change, up's replacement of a
container) writes its journal before the first step and removes it once the new state (or
the old one, put back) is in place. A second Ctrl-C, a SIGTERM or a SIGKILL in between
leaves the journal; the next command reads it and finishes the change or rolls it back.
Each journal is one private JSON file in the host's state directory,
``<name>-in-progress.json``, written atomically.

Also here: the signal handling of such changes (SIGTERM taken like Ctrl-C where the change
can be undone; both deferred across the few steps that must not be cut), and the one test
seam, :func:`fault_point`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pixsim_host import safeload
from pixsim_host.fsutil import atomic_write
from pixsim_host.hostdir import HostDir

SUFFIX = "-in-progress.json"
# Journals this process is working on right now (host root, journal name): the change's own
# later steps (a restore's `up`) must not take them for an interrupted change.
_ACTIVE: set[tuple[Path, str]] = set()
# The test seam: ``name`` (SIGKILL), ``name:TERM``, ``name:INT`` or ``name:INT2`` (two
# Ctrl-C), several separated by commas. Never set outside tests.
FAULT_POINT_ENV = "PIXSIM_HOST_FAULT_POINT"


def journal_path(host: HostDir, name: str) -> Path:
    return host.state_dir / f"{name}{SUFFIX}"


def write(host: HostDir, name: str, record: dict[str, Any]) -> None:
    """Write (or update) the journal ``name``: ``record`` plus who wrote it and when it began."""
    previous = _read_quietly(host, name) if (host.root, name) in _ACTIVE else None
    started = (previous or {}).get("started_at") or datetime.now(UTC).isoformat(timespec="seconds")
    atomic_write(journal_path(host, name), json.dumps(
        {**record, "pid": os.getpid(), "started_at": started}, indent=2) + "\n", mode=0o600)
    _ACTIVE.add((host.root, name))


def _read_quietly(host: HostDir, name: str) -> dict[str, Any] | None:
    try:
        data = json.loads(journal_path(host, name).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def read(host: HostDir, name: str, what: str, fix: str) -> dict[str, Any] | None:
    """The journal ``name`` left here, None when there is none; a damaged one is an empty
    record (still a change that did not finish) unless it cannot be read at all (an error
    naming ``what`` and ``fix``)."""
    if not host.state_dir.is_dir():
        return None
    data = safeload.load_json(journal_path(host, name), what, fix, missing_ok=True)
    if data is None:
        return None
    return data if isinstance(data, dict) else {}


def release(host: HostDir, name: str) -> None:
    """This process no longer works on ``name`` (a journal left is for the next command)."""
    _ACTIVE.discard((host.root, name))


def clear(host: HostDir, name: str) -> None:
    journal_path(host, name).unlink(missing_ok=True)
    release(host, name)


def is_active(host: HostDir, name: str) -> bool:
    """Whether this process is the one working on the journal ``name`` of ``host``."""
    return (host.root, name) in _ACTIVE


# ---- signals ---------------------------------------------------------------------------


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While a change can still be undone, SIGTERM (a service manager stopping us, `kill`) is
    taken like Ctrl-C, so the previous state is put back instead of the process just ending."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Deferred:
    """What :func:`deferred_interrupts` saw: the signals that arrived inside it."""

    def __init__(self) -> None:
        self.received: list[int] = []


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[Deferred]:
    """Ctrl-C and SIGTERM wait until the steps inside are all done, so those steps are never
    cut halfway; then each goes to the handler it would have met (Ctrl-C's KeyboardInterrupt,
    a supervisor's own), a SIGTERM that would have ended the process becoming an interrupt
    (KeyboardInterrupt). Only for short steps: a process that must stop now can still be
    killed."""
    seen = Deferred()
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def remember(signum: int, _frame: object) -> None:
        seen.received.append(signum)

    previous = {signum: signal.signal(signum, remember) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for arrived in dict.fromkeys(seen.received):  # each signal once: a second Ctrl-C adds nothing
        handler = previous[signal.Signals(arrived)]
        if callable(handler):
            handler(arrived, None)
        elif handler != signal.SIG_IGN:
            raise KeyboardInterrupt


# ---- the test seam ---------------------------------------------------------------------


@functools.cache
def _fault_points() -> dict[str, str]:
    points: dict[str, str] = {}
    for entry in os.environ.get(FAULT_POINT_ENV, "").split(","):
        point, _, how = entry.strip().partition(":")
        if point:
            points[point] = how.strip().upper() or "KILL"
    return points


def fault_point(name: str) -> None:
    """A named moment of a multi-step change where the fault tests interrupt this process
    (``PIXSIM_HOST_FAULT_POINT``, read once): SIGKILL by default, or SIGTERM, one Ctrl-C or
    two. Does nothing unless that variable names this point."""
    how = _fault_points().get(name)
    if how is None:
        return
    if how == "KILL":
        os.kill(os.getpid(), signal.SIGKILL)
    signals = {"TERM": [signal.SIGTERM], "INT": [signal.SIGINT],
               "INT2": [signal.SIGINT, signal.SIGINT]}.get(how, [signal.SIGKILL])
    for signum in signals:
        os.kill(os.getpid(), signum)
