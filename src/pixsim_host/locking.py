"""One command at a time per host.

filelock takes an OS lock (flock on POSIX), which the kernel releases when the process
dies, so a killed command never leaves a lock that blocks the next one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir

WAIT_SECONDS = 600.0


@contextmanager
def host_lock(host: HostDir, *, wait: bool = True) -> Iterator[None]:
    from filelock import FileLock, Timeout

    host.state_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(host.state_dir / "lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise HostError(
                f"another pixsim-host command is changing the host in {host.root}; "
                "wait for it to finish, or retry without --no-wait"
            ) from None
        sys.stderr.write("Another pixsim-host command is changing this host; waiting for it...\n")
        try:
            lock.acquire(timeout=WAIT_SECONDS)
        except Timeout:
            raise HostError(
                f"waited {WAIT_SECONDS:.0f} s for another pixsim-host command on {host.root}; "
                "check what it is doing (`ps aux | grep pixsim-host`)"
            ) from None
    try:
        yield
    finally:
        lock.release()
