"""Local background processes that outlive the command that started them.

Each one is recorded in a pid file holding its pid *and its start time* (on Linux the boot id
and the start tick from ``/proc``, elsewhere ``ps``'s start time). A pid alone is not proof
of anything: after a reboot, or once the process died and the pid was reused, that pid may
be another program. A record is trusted only while a process with that pid and that start
time exists, so a stale pid file is recognised and never signalled.

POSIX only (Linux, macOS, the BSDs).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pixsim_host.fsutil import atomic_write

MAX_LOG_BYTES = 20 * 1024 * 1024  # a log past this is moved to <name>.1 at the next start
# Processes started by this process: polling them reaps them, so a dead one is no zombie.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass
class PidRecord:
    pid: int
    start: str  # the process's start token when it was recorded
    config_hash: str = ""
    started_at: str = ""  # ISO 8601, UTC
    command: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_token(pid: int) -> str | None:
    """What identifies process ``pid`` among all processes this machine ever ran; None if
    there is no such process (or only its zombie)."""
    if pid <= 0:
        return None
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return None
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            text = stat.read_text()
        except OSError:
            return None
        fields = text[text.rfind(")") + 2:].split()
        if not fields or fields[0] in ("Z", "X"):
            return None
        return f"{boot_id()}:{fields[19]}"
    try:
        out = subprocess.run(["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True,
                             text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not out or out.startswith("Z"):
        return None
    return out.split(None, 1)[1] if " " in out else None


def alive(record: PidRecord | None) -> bool:
    """Whether the recorded process is running now: same pid *and* same start."""
    return record is not None and start_token(record.pid) == record.start


def read_record(path: Path) -> PidRecord | None:
    """The record in ``path``; None if there is none. A damaged file reads as a dead record."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return PidRecord(pid=0, start="unreadable")
    try:
        data = json.loads(text)
        return PidRecord(pid=int(data["pid"]), start=str(data["start"]),
                         config_hash=str(data.get("config_hash", "")),
                         started_at=str(data.get("started_at", "")),
                         command=[str(a) for a in data.get("command", [])])
    except (ValueError, KeyError, TypeError, RecursionError):
        return PidRecord(pid=0, start="unreadable")


def write_record(path: Path, record: PidRecord) -> None:
    atomic_write(path, json.dumps(record.as_json(), indent=2) + "\n", mode=0o600)


def _rotate(log: Path) -> None:
    with contextlib.suppress(OSError):
        if log.stat().st_size > MAX_LOG_BYTES:
            os.replace(log, log.with_name(log.name + ".1"))


def open_log(path: Path) -> TextIO:
    """``path`` opened for appending text; created readable by this user only."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a",
                     encoding="utf-8")


def spawn(argv: list[str], *, env: dict[str, str], cwd: Path, log: Path,
          account: tuple[int, int] | None = None, stdin_data: bytes | None = None,
          banner: str = "", mask: list[str] | None = None,
          relay_file: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached (its own session, no terminal), output appended to ``log``.

    ``account`` (uid, gid) runs it as another user (only root can); ``stdin_data`` is
    written to its standard input, which is then closed (how a secret reaches a program
    without its command line or a file). With ``mask`` (secret values) the output goes
    through a relay (``runtime/logmask.py``) that masks them before they reach the file;
    the relay's record goes to ``relay_file``.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    _rotate(log)
    extra: dict[str, Any] = {}
    if account is not None:
        extra = {"user": account[0], "group": account[1], "extra_groups": []}
    # Logs may hold what a service prints about its data: readable by this user only.
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as out:
        if banner:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            out.write(f"=== {stamp} pixsim-host: {banner} ===\n".encode())
            out.flush()
        sink: Any = out
        relay = None
        if mask is not None:
            relay, sink = _start_relay(log, mask, relay_file)
        try:
            proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
                stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                start_new_session=True, close_fds=True, umask=0o077, **extra,
            )
        finally:
            if relay is not None:
                os.close(sink)  # the service holds the pipe now; EOF reaches the relay when it ends
    _CHILDREN[proc.pid] = proc
    if stdin_data is not None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(stdin_data)
        with contextlib.suppress(OSError):
            proc.stdin.close()
    return proc


def _start_relay(log: Path, mask: list[str], relay_file: Path | None) -> tuple[subprocess.Popen[bytes], int]:
    """The masking relay, reading a new pipe; returns it and the pipe's writing end."""
    read_end, write_end = os.pipe()
    secrets_read, secrets_write = os.pipe()
    try:
        relay = subprocess.Popen(
            [sys.executable, "-m", "pixsim_host.runtime.logmask", str(log), str(secrets_read)],
            stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(secrets_read,), start_new_session=True, close_fds=True, umask=0o077,
        )
    finally:
        os.close(read_end)
        os.close(secrets_read)
    # Through a pipe, not argv or the environment: no secret in a process listing.
    with os.fdopen(secrets_write, "wb") as channel:
        channel.write(json.dumps(mask).encode())
    _CHILDREN[relay.pid] = relay
    if relay_file is not None:
        write_record(relay_file, record_for(relay, ["logmask", str(log)], ""))
    return relay, write_end


def stop_relay(relay_file: Path, timeout: float = 5.0) -> None:
    """Wait for a service's log relay to drain and end (it does once the service is gone)."""
    record = read_record(relay_file)
    if record is not None and alive(record) and not wait_gone(record, timeout):
        terminate(record, grace=1.0)
    relay_file.unlink(missing_ok=True)


def record_for(proc: subprocess.Popen[bytes], argv: list[str], config_hash: str) -> PidRecord:
    token = start_token(proc.pid)
    return PidRecord(pid=proc.pid, start=token or "gone", config_hash=config_hash,
                     started_at=datetime.now(UTC).isoformat(timespec="seconds"), command=argv)


def exit_code(pid: int) -> int | None:
    """The exit code of a process this process started and that ended; None otherwise."""
    child = _CHILDREN.get(pid)
    return None if child is None else child.poll()


def reap_children() -> None:
    """Collect the exit of every process this process started that ended (no zombies)."""
    for child in list(_CHILDREN.values()):
        child.poll()


def wait_gone(record: PidRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(record):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(record: PidRecord, *, first: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Ask the recorded process to stop with ``first``, SIGKILL after ``grace`` seconds.

    Only a process that still matches its record is ever signalled.
    """
    if not alive(record):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, first)
        # A stopped process (SIGSTOP, a debugger) only acts on the signal once continued.
        os.kill(record.pid, signal.SIGCONT)
    if wait_gone(record, grace):
        return
    if alive(record):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
    wait_gone(record, 10.0)


def supported() -> bool:
    return os.name == "posix" and sys.platform != "cygwin"
