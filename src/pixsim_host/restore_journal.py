"""The journal of a restore that has not finished: what the next command needs to know.

A restore over a host first takes a safety backup, then writes this journal naming it, then
replaces the data; the journal goes once the new state (or the old one, put back) is up and
verified. A second Ctrl-C, a SIGTERM or a SIGKILL in between leaves it: ``up`` refuses to
call such a host verified and says how to finish, and the next restore reuses the journal's
safety backup (the host's state then is no longer worth one). A restore into a new directory
writes one too, so a half-made host is never taken for a complete one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pixsim_host import journal
from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.journal import terminate_as_interrupt

__all__ = ["RESTORE_JOURNAL", "check_no_unfinished_restore", "clear_journal", "release",
           "terminate_as_interrupt", "unfinished_message", "unfinished_restore", "write_journal"]

_NAME = "restore"
RESTORE_JOURNAL = f"{_NAME}{journal.SUFFIX}"


def write_journal(host: HostDir, kind: str, safety: Path | None, bundle: Path | None) -> None:
    journal.write(host, _NAME, {"kind": kind, "safety_backup": str(safety) if safety else None,
                                "bundle": str(bundle) if bundle else None})


def release(host: HostDir) -> None:
    """This process no longer restores ``host`` (its journal, if left, is for the next command)."""
    journal.release(host, _NAME)


def clear_journal(host: HostDir) -> None:
    journal.clear(host, _NAME)


def unfinished_restore(host: HostDir) -> dict[str, Any] | None:
    """The journal of a restore into ``host`` that did not finish, None when there is none."""
    return journal.read(host, _NAME, "the restore journal",
                        "a restore did not finish here: restore the host again")


def unfinished_message(host: HostDir, record: dict[str, Any]) -> str:
    when = record.get("started_at") or "earlier"
    if record.get("kind") == "new":
        return (f"{host.root} holds a restore that did not finish (started {when}), so its data is "
                f"incomplete; remove it with `pixsim-host down --volumes --yes --dir {host.root}`, "
                "delete the directory, and run the restore or clone again")
    safety, bundle = record.get("safety_backup"), record.get("bundle")
    finish = f"; or finish the restore with `pixsim-host restore {bundle} --dir {host.root} --yes`" \
        if bundle else ""
    return (f"a restore of this host did not finish (started {when}), so its data may be incomplete "
            f"and it is not verified; the data from before the restore is in the safety backup "
            f"{safety}: put it back with `pixsim-host restore {safety} --dir {host.root} --yes`{finish}")


def check_no_unfinished_restore(host: HostDir) -> None:
    """For `up`: refuse a host whose restore did not finish (unless this process runs it now)."""
    found = unfinished_restore(host)
    if found is not None and not journal.is_active(host, _NAME):
        raise HostError(unfinished_message(host, found))
