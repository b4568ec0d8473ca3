"""The journal of a restore that has not finished: what the next command needs to know.

A restore over a host first takes a safety backup, then writes this journal naming it, then
replaces the data; the journal goes once the new state (or the old one, put back) is up and
verified. A second Ctrl-C, a SIGTERM or a SIGKILL in between leaves it: ``up`` refuses to
call such a host verified and says how to finish, and the next restore reuses the journal's
safety backup (the host's state then is no longer worth one). A restore into a new directory
writes one too, so a half-made host is never taken for a complete one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pixsim_host import safeload
from pixsim_host.errors import HostError
from pixsim_host.fsutil import atomic_write
from pixsim_host.hostdir import HostDir

RESTORE_JOURNAL = "restore-in-progress.json"
# Hosts this process is restoring right now: the restore's own `up` runs on them.
_ACTIVE: set[Path] = set()


def _journal_path(host: HostDir) -> Path:
    return host.state_dir / RESTORE_JOURNAL


def write_journal(host: HostDir, kind: str, safety: Path | None, bundle: Path | None) -> None:
    atomic_write(_journal_path(host), json.dumps({
        "kind": kind, "safety_backup": str(safety) if safety else None,
        "bundle": str(bundle) if bundle else None, "pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }, indent=2) + "\n", mode=0o600)
    _ACTIVE.add(host.root)


def release(host: HostDir) -> None:
    """This process no longer restores ``host`` (its journal, if left, is for the next command)."""
    _ACTIVE.discard(host.root)


def clear_journal(host: HostDir) -> None:
    _journal_path(host).unlink(missing_ok=True)
    release(host)


def unfinished_restore(host: HostDir) -> dict[str, Any] | None:
    """The journal of a restore into ``host`` that did not finish, None when there is none."""
    if not host.state_dir.is_dir():
        return None
    data = safeload.load_json(_journal_path(host), "the restore journal", "a restore did not "
                              "finish here: restore the host again", missing_ok=True)
    if data is None:
        return None
    return data if isinstance(data, dict) else {}


def unfinished_message(host: HostDir, journal: dict[str, Any]) -> str:
    when = journal.get("started_at") or "earlier"
    if journal.get("kind") == "new":
        return (f"{host.root} holds a restore that did not finish (started {when}), so its data is "
                f"incomplete; remove it with `pixsim-host down --volumes --yes --dir {host.root}`, "
                "delete the directory, and run the restore or clone again")
    safety, bundle = journal.get("safety_backup"), journal.get("bundle")
    finish = f"; or finish the restore with `pixsim-host restore {bundle} --dir {host.root} --yes`" \
        if bundle else ""
    return (f"a restore of this host did not finish (started {when}), so its data may be incomplete "
            f"and it is not verified; the data from before the restore is in the safety backup "
            f"{safety}: put it back with `pixsim-host restore {safety} --dir {host.root} --yes`{finish}")


def check_no_unfinished_restore(host: HostDir) -> None:
    """For `up`: refuse a host whose restore did not finish (unless this process runs it now)."""
    journal = unfinished_restore(host)
    if journal is not None and host.root not in _ACTIVE:
        raise HostError(unfinished_message(host, journal))


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While the data is replaced, SIGTERM (a service manager stopping us, `kill`) is taken
    like Ctrl-C, so the previous state is put back instead of the process just ending."""
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
