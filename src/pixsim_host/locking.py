"""One command at a time per host.

filelock takes an OS lock (flock on POSIX), which the kernel releases when the process
dies, so a killed command never leaves a lock that blocks the next one: there is nothing
to detect or clean up. Beside the lock, the holder writes who it is (pid, command, start
time) so a second command can say what it is waiting for; that note is only read while
the lock is really held, so a stale note from a killed process is never believed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir

WAIT_SECONDS = 600.0
LOCK_FILE = "lock"
OWNER_FILE = "lock.owner"


def _describe_holder(owner_file: Path) -> str:
    try:
        data = json.loads(owner_file.read_text(encoding="utf-8"))
        pid, command, started = int(data["pid"]), str(data["command"]), float(data["started"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return "another pixsim-host command"
    age = max(0.0, time.time() - started)
    what = f"`pixsim-host {command}`" if command else "another pixsim-host command"
    return f"{what} (pid {pid}, running for {age:.0f} s)"


def _notify_stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


@contextmanager
def host_lock(host: HostDir, *, wait: bool = True, command: str = "",
              timeout: float = WAIT_SECONDS,
              notify: Callable[[str], None] = _notify_stderr) -> Iterator[None]:
    """Hold this host's lock; wait for it (saying for whom), or fail at once if not ``wait``."""
    from filelock import FileLock, Timeout

    host.state_dir.mkdir(parents=True, exist_ok=True)
    owner_file = host.state_dir / OWNER_FILE
    lock = FileLock(str(host.state_dir / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _describe_holder(owner_file)
        if not wait:
            raise HostError(
                f"{holder} is changing the host in {host.root}; wait for it to finish, "
                "or run this again without --no-lock-wait to wait for it"
            ) from None
        notify(f"Waiting for {holder} to finish changing this host "
               f"(up to {timeout:.0f} s; Ctrl-C to give up)...")
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise HostError(
                f"waited {timeout:.0f} s for {_describe_holder(owner_file)} on {host.root}; "
                "check what it is doing (`ps aux | grep pixsim-host`) and retry"
            ) from None
        notify("The other command finished; going on.")
    try:
        from pixsim_host.fsutil import atomic_write

        note = {"pid": os.getpid(), "command": command, "started": time.time()}
        with suppress(OSError):
            atomic_write(owner_file, json.dumps(note) + "\n")
        yield
    finally:
        with suppress(OSError):
            owner_file.unlink()
        lock.release()
