"""Starting, stopping and reading a native host's supervisor (``runtime/supervisor.py``).

Used by the native runtime (``up`` starts it, ``down`` stops it first, ``status`` shows its
restart counts); kept apart from the supervisor's loop, which itself drives the runtime.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from pixsim_host.hostdir import HostDir
from pixsim_host.runtime import procs

STOP_GRACE = 15.0
PID_FILE = "supervisor.pid"
STATE_FILE = "supervisor.json"
LOG_NAME = "supervisor.log"


def pid_file(host: HostDir) -> Path:
    # Not in run/: every *.pid there is a service's (leftover workers are found that way).
    return host.state_dir / PID_FILE


def state_file(host: HostDir) -> Path:
    return host.state_dir / STATE_FILE


def running(host: HostDir) -> procs.PidRecord | None:
    """The host's supervisor's record, when it is alive."""
    record = procs.read_record(pid_file(host))
    return record if procs.alive(record) else None


def ensure_running(host: HostDir) -> bool:
    """Start the host's supervisor unless one is alive (the caller holds the host's lock).
    Whether it started one."""
    if running(host) is not None:
        return False
    argv = [sys.executable, "-m", "pixsim_host.runtime.supervisor", str(host.root)]
    env = {key: os.environ[key] for key in ("PATH", "PYTHONPATH", "TZ", "HOME") if key in os.environ}
    env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"})
    proc = procs.spawn(argv, env=env, cwd=host.root, log=host.root / "logs" / LOG_NAME,
                       banner="starting the supervisor")
    record = procs.record_for(proc, argv, "")
    try:
        procs.write_record(pid_file(host), record)
    except BaseException:
        procs.terminate(record, grace=1.0)
        raise
    return True


def stop(host: HostDir) -> bool:
    """Stop the host's supervisor (it finishes a restart under way first) and forget its
    restart counts, as ``down`` forgets a container's. Whether one was running."""
    record = procs.read_record(pid_file(host))
    was_running = procs.alive(record)
    if record is not None and was_running:
        procs.terminate(record, grace=STOP_GRACE)
    pid_file(host).unlink(missing_ok=True)
    state_file(host).unlink(missing_ok=True)
    return was_running


def restarts(host: HostDir) -> dict[str, dict[str, Any]]:
    """What the supervisor recorded per service: restarts, last_restart_at, last_exit_code..."""
    try:
        data = json.loads(state_file(host).read_text(encoding="utf-8"))
        services = data["services"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return {}
    if not isinstance(services, dict):
        return {}
    return {str(name): entry for name, entry in services.items() if isinstance(entry, dict)}
