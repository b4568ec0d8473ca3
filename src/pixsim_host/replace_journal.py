"""``up``'s journal of the services it replaces (a container recreated, a process restarted).

Replacing a service stops the old one before the new one runs. ``up`` writes this journal
as the first replacement begins and removes it once the host is verified; a SIGKILL, an
interrupt or a failure in between leaves it, so ``status`` never calls such a host verified
(it names what was being replaced), and the next ``up`` converges the rest (a service whose
old container or process is gone is simply created) and removes it. ``down`` removes it with
the services.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from pixsim_host import journal
from pixsim_host.hostdir import HostDir
from pixsim_host.progress import Progress

NAME = "up-replace"
# What the runtimes say as a replacement begins (docker: recreating, native: restarting).
_REPLACING = ("recreating", "restarting")


def watching(host: HostDir, progress: Progress) -> Progress:
    """``progress``, journaling each service ``up`` starts to replace as it says so."""
    journal.release(host, NAME)  # a journal left by an earlier run is taken over afresh
    replacing: list[str] = []
    lock = threading.Lock()  # a level's services converge in parallel

    def report(service: str, line: str) -> None:
        if line.startswith(_REPLACING) or "; restarting" in line:
            with lock:
                if service not in replacing:
                    replacing.append(service)
                    journal.write(host, NAME, {"command": "up", "replacing": list(replacing)})
        progress(service, line)

    return report


def finished(host: HostDir) -> None:
    """The host is verified (or its services are gone): nothing is left half-replaced."""
    journal.clear(host, NAME)


def unfinished(host: HostDir) -> str | None:
    """What a replacement left unverified, in one line (for ``status``); None when nothing."""
    record = journal.read(host, NAME, "up's journal of replaced services",
                          "run `pixsim-host up` to finish bringing the host up")
    if record is None:
        return None
    services = ", ".join(sorted(str(s) for s in record.get("replacing") or [])) or "services"
    when = record.get("started_at") or "earlier"
    if _other_process_alive(record):
        return f"`pixsim-host up` (pid {record.get('pid')}, started {when}) is replacing {services}"
    return (f"`pixsim-host up` (started {when}) began replacing {services} and did not verify the "
            "host (it was interrupted or failed); run `pixsim-host up` to finish")


def _other_process_alive(record: dict[str, Any]) -> bool:
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
