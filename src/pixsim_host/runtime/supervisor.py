"""The native host's supervisor: brings back a crashed PostgreSQL, Redis, backend or worker.

``up`` starts one per host (``python -m pixsim_host.runtime.supervisor HOSTDIR``), detached,
when none is alive; ``down`` stops it first, so it never restarts what ``down`` stops. The
policy is Docker's ``restart: unless-stopped``:

- a service whose pid file names a process that is gone crashed (or was killed): it is
  started again, with exactly what ``up`` starts (``NativeRuntime._launch`` and ``_spawn``);
- a service without a pid file was stopped on purpose (``down``, ``restart``): left alone;
- restarts back off: 0.5 s before the first, doubling up to 30 s while the service keeps
  dying within 10 s of its start; once it stayed up 10 s, the next crash waits 0.5 s again.

The pid files (with their start tokens) are the truth: a service is only ever started when
its record names no live process, and only under the host's lock, so a concurrent ``up``
or ``down`` never races it (while another command holds the lock, the supervisor waits).
Each restart (count, time, exit code when known) is recorded in ``.pixsim-host/supervisor.json``,
which ``status`` shows. The secrets live only in its memory: it reads the host's ``.env``
itself. It exits when the host directory (its config) disappears, or its own pid file no
longer names it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pixsim_host.config import load_config
from pixsim_host.envfile import read_secrets
from pixsim_host.errors import HostError
from pixsim_host.fsutil import atomic_write
from pixsim_host.hostdir import HostDir
from pixsim_host.locking import host_lock
from pixsim_host.runtime import native as native_runtime
from pixsim_host.runtime import procs
from pixsim_host.runtime.supervisor_control import pid_file, restarts, state_file

BASE_DELAY = 0.5  # seconds before the first restart of a crashed service
MAX_DELAY = 30.0
RESET_AFTER = 10.0  # a service that ran this long starts over at BASE_DELAY
POLL = 0.5
CONFIG_GONE = 5.0  # seconds without pixsim-host.yaml before the supervisor ends
HEALTH_WAIT = 60.0  # how long a restarted PostgreSQL or Redis may take to answer

# ---- the process ----------------------------------------------------------------------------


@dataclass
class Backoff:
    delay: float = BASE_DELAY  # what the next restart waits
    due: float | None = None  # monotonic time of the next restart of a dead service


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _uptime(started_at: str) -> float | None:
    try:
        started = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    return (datetime.now(UTC) - started).total_seconds()


def _log(message: str) -> None:
    print(f"{_now_iso()} {message}", flush=True)


class Supervisor:
    def __init__(self, host: HostDir) -> None:
        self.host = host
        self.stopping = False
        self.backoff: dict[str, Backoff] = {}
        self.recorded = restarts(host)
        self._runtime: native_runtime.NativeRuntime | None = None
        self._opened_at: tuple[float, float] | None = None
        self._config_missing_since: float | None = None

    # -- housekeeping

    def mine(self) -> bool:
        record = procs.read_record(pid_file(self.host))
        return record is not None and record.pid == os.getpid() and procs.alive(record)

    def gone(self) -> bool:
        """The host directory was deleted (or its config for CONFIG_GONE s: not just an editor
        replacing it), or another supervisor (or none) is recorded."""
        if not self.host.root.is_dir() or not self.mine():
            return True
        if self.host.config_file.is_file():
            self._config_missing_since = None
            return False
        if self._config_missing_since is None:
            self._config_missing_since = time.monotonic()
        return time.monotonic() - self._config_missing_since > CONFIG_GONE

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))

    def runtime(self, fresh: bool = False) -> native_runtime.NativeRuntime:
        """The host's runtime as ``up`` opens it, re-read when its config or .env changed."""
        stamp = (self.host.config_file.stat().st_mtime, self.host.secrets_file.stat().st_mtime)
        if fresh or self._runtime is None or stamp != self._opened_at:
            config = load_config(self.host.config_file)
            self._runtime = native_runtime.NativeRuntime.open(
                self.host, config, read_secrets(self.host.secrets_file))
            self._opened_at = stamp
        return self._runtime

    def save(self) -> None:
        atomic_write(state_file(self.host),
                     json.dumps({"services": self.recorded}, indent=2) + "\n", mode=0o600)

    # -- the loop

    def run(self) -> int:
        # `up` writes our pid file right after starting us: wait for it (and yield to
        # another supervisor if the file names someone else).
        deadline = time.monotonic() + 10.0
        while not self.mine():
            if time.monotonic() > deadline or self.stopping:
                _log("not the host's recorded supervisor; exiting")
                return 0
            time.sleep(0.05)
        _log(f"supervising {self.host.root} (pid {os.getpid()})")
        last_problem = ""
        while not self.stopping:
            if self.gone():
                _log("the host directory or this supervisor's pid file is gone; exiting")
                return 0
            procs.reap_children()
            problem = ""
            try:
                self.tick()
            except HostError as exc:
                problem = exc.message
            except OSError as exc:
                problem = exc.strerror or type(exc).__name__
            if problem and problem != last_problem:  # once, not every half second
                _log(f"cannot check the host now: {problem}")
            last_problem = problem
            self.sleep(POLL)
        _log("stopped")
        return 0

    def tick(self) -> None:
        runtime = self.runtime()
        now = time.monotonic()
        due: list[str] = []
        for level in runtime.service_levels():
            for service in level:
                record = procs.read_record(runtime.pid_file(service))
                backoff = self.backoff.setdefault(service, Backoff())
                if record is None or procs.alive(record):
                    backoff.due = None  # running, or stopped on purpose
                    continue
                if backoff.due is None:
                    lived = _uptime(record.started_at)
                    if lived is None or lived >= RESET_AFTER:
                        backoff.delay = BASE_DELAY
                    backoff.due = now + backoff.delay
                    _log(f"{service} (pid {record.pid}) is gone; restarting it in {backoff.delay:g} s")
                if backoff.due <= now:
                    due.append(service)
        if not due:
            return
        try:
            with host_lock(self.host, wait=False, command="supervisor (restarting crashed services)",
                           notify=lambda _message: None):
                self.restart_all(due)
        except HostError as exc:
            if "is changing the host" not in exc.message:
                raise
            # Another command (up, down, restart) has the host: it decides; look again later.

    def restart_all(self, services: list[str]) -> None:
        runtime = self.runtime(fresh=True)  # exactly what `up` would start now
        for service in services:
            if self.stopping:
                return
            record = procs.read_record(runtime.pid_file(service))
            if record is None or procs.alive(record) or service not in runtime.services:
                self.backoff[service].due = None  # brought back or stopped meanwhile
                continue
            self.restart(runtime, service, record)

    def restart(self, runtime: native_runtime.NativeRuntime, service: str,
                record: procs.PidRecord) -> None:
        backoff = self.backoff[service]
        code = procs.exit_code(record.pid)  # known only for a process this supervisor started
        entry = self.recorded.setdefault(service, {"restarts": 0})
        entry.update({"last_exit_code": code, "last_crash_pid": record.pid,
                      "backoff_seconds": backoff.delay})
        try:
            started = runtime.start_again(service)
        except HostError as exc:
            entry["last_error"] = exc.message
            _log(f"{service} could not be started again: {exc.message}")
        else:
            entry["restarts"] = int(entry.get("restarts", 0)) + 1
            entry["last_restart_at"] = _now_iso()
            entry["last_error"] = None
            how = f"exit code {code}" if code is not None else "exit code unknown"
            _log(f"{service} restarted (pid {started.pid}; it had ended, {how}; "
                 f"restart {entry['restarts']}, after {backoff.delay:g} s)")
            if service in (native_runtime.DB, native_runtime.REDIS):
                self.wait_healthy(runtime, service, started)
        backoff.delay = min(MAX_DELAY, backoff.delay * 2)
        backoff.due = None
        self.save()

    def wait_healthy(self, runtime: native_runtime.NativeRuntime, service: str,
                     record: procs.PidRecord) -> None:
        """What depends on PostgreSQL or Redis is restarted once it answers again."""
        deadline = time.monotonic() + HEALTH_WAIT
        while not self.stopping and procs.alive(record) and time.monotonic() < deadline:
            if runtime._healthy(service):
                _log(f"{service} is healthy again")
                return
            self.sleep(0.2)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m pixsim_host.runtime.supervisor HOSTDIR", file=sys.stderr)
        return 2
    supervisor = Supervisor(HostDir(Path(argv[0]).resolve()))

    def ask_to_stop(_signum: int, _frame: object) -> None:
        supervisor.stopping = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, ask_to_stop)
    with contextlib.suppress(KeyboardInterrupt):
        return supervisor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
