"""A systemd unit that brings a host up at boot (``pixsim-host boot install|remove``).

One unit per host directory: ``pixsim-host-<directory name>-<digest of its path>.service``,
a oneshot that runs ``pixsim-host up --dir DIR`` (which verifies the host, and on the native
runtime starts its supervisor) and, when stopped, ``pixsim-host down --dir DIR``. A system
unit (``/etc/systemd/system``) when root, else a user unit (``~/.config/systemd/user``), which
runs at boot only with lingering (``loginctl enable-linger``). The unit holds no secret:
``up`` reads them from the host's ``.env``. Every unit is checked with ``systemd-analyze
verify`` before it is written, when that program is here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixsim_host.config import HostConfig
from pixsim_host.errors import HostError
from pixsim_host.fsutil import atomic_write
from pixsim_host.hostdir import HostDir

UNIT_PREFIX = "pixsim-host-"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")


def unit_name(host: HostDir) -> str:
    """Named after the host's directory: readable, and unique per directory."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", host.root.name).strip("-.") or "host"
    digest = hashlib.sha256(str(host.root).encode()).hexdigest()[:8]
    return f"{UNIT_PREFIX}{base[:40]}-{digest}.service"


def user_unit_dir() -> Path:
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "systemd" / "user"


def entry_point() -> list[str]:
    """How to run this pixsim-host: its script beside the interpreter, else ``python -m``."""
    script = Path(sys.executable).parent / "pixsim-host"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "pixsim_host"]


def _quote(word: str) -> str:
    """One word of an Exec line: systemd's own quoting, specifiers and variables escaped."""
    if any(ord(c) < 32 for c in word):
        raise HostError(f"{word!r} holds a control character, which a systemd unit cannot carry; "
                        "move the host to a plainer path")
    escaped = word.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_./:@+=,-]+", escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _command(words: list[str]) -> str:
    return " ".join(_quote(word) for word in words)


def render_unit(host: HostDir, config: HostConfig, *, user: bool) -> str:
    program = entry_point()
    directory = str(host.root)
    description = f"PixSim7 host {config.name} ({directory})".replace("%", "%%")
    return "\n".join([
        "# Written by `pixsim-host boot install`; `pixsim-host boot remove` deletes it.",
        "[Unit]",
        f"Description={' '.join(description.split())}",
        "Wants=network-online.target",
        # Ordering only: a host on Docker needs its engine up first; harmless without one.
        "After=network-online.target docker.service",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart={_command([*program, 'up', '--dir', directory])}",
        f"ExecStop={_command([*program, 'down', '--dir', directory])}",
        "TimeoutStartSec=600",
        "TimeoutStopSec=300",
        "",
        "[Install]",
        f"WantedBy={'default.target' if user else 'multi-user.target'}",
        "",
    ])


@dataclass
class BootUnit:
    name: str
    path: Path
    scope: str  # system | user
    text: str = ""
    verified: bool | None = None  # None: systemd-analyze is not installed
    notes: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"unit": self.name, "path": str(self.path), "scope": self.scope,
                "verified": self.verified, "notes": self.notes, "next_steps": self.next_steps}


def locate(host: HostDir, *, user: bool) -> BootUnit:
    """Where the host's unit goes: a user unit with --user or when not root."""
    as_user = user or os.geteuid() != 0
    name = unit_name(host)
    where = user_unit_dir() if as_user else SYSTEM_UNIT_DIR
    return BootUnit(name, where / name, "user" if as_user else "system")


def systemd_running() -> bool:
    """Whether systemd manages this machine (sd_booted: /run/systemd/system exists)."""
    return Path("/run/systemd/system").is_dir()


def verify(unit: BootUnit) -> None:
    """``systemd-analyze verify`` on the unit's text, in a file of its own name; a problem
    it reports (even a warning: an unknown key is ignored at boot) fails here."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unit.verified = None
        unit.notes.append("systemd-analyze is not installed, so the unit was not verified "
                          "(Debian/Ubuntu: apt-get install systemd)")
        return
    with tempfile.TemporaryDirectory(prefix="pixsim-host-unit-") as scratch:
        path = Path(scratch) / unit.name
        path.write_text(unit.text, encoding="utf-8")
        argv = [analyze, "verify", str(path)]
        env = dict(os.environ)
        if unit.scope == "user":
            argv.insert(1, "--user")
            if not env.get("XDG_RUNTIME_DIR"):  # no login session: a private runtime dir
                runtime_dir = Path(scratch) / "runtime"
                runtime_dir.mkdir(mode=0o700)
                env["XDG_RUNTIME_DIR"] = str(runtime_dir)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HostError(f"systemd-analyze verify could not run ({exc}); check systemd-analyze, "
                            "or retry") from None
    problems = [line.replace(str(path), unit.name) for line in (done.stdout + done.stderr).splitlines()
                if line.strip()]
    if done.returncode != 0 or problems:
        raise HostError(f"systemd-analyze verify rejects the unit {unit.name}: "
                        f"{'; '.join(problems) or f'exit {done.returncode}'}; nothing was written "
                        "(see `pixsim-host boot install --print`)")
    unit.verified = True


def _systemctl(unit: BootUnit, *args: str) -> list[str]:
    return ["systemctl", *(["--user"] if unit.scope == "user" else []), *args]


def _run_or_advise(unit: BootUnit, commands: list[list[str]]) -> None:
    """Run the systemctl commands when systemd runs this machine; else say what to run."""
    if not systemd_running() or shutil.which("systemctl") is None:
        unit.notes.append("systemd is not running on this machine (not PID 1), so nothing was "
                          "enabled; on a machine that boots with systemd, run the next steps")
        unit.next_steps.extend(" ".join(command) for command in commands)
        return
    for command in commands:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            unit.notes.append(f"`{' '.join(command)}` could not run ({exc}); run it yourself")
            unit.next_steps.append(" ".join(command))
            continue
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            unit.notes.append(f"`{' '.join(command)}` failed ({last[0]}); run it yourself")
            unit.next_steps.append(" ".join(command))


def install(host: HostDir, config: HostConfig, *, user: bool, write: bool) -> BootUnit:
    """The host's unit, rendered and verified; written and enabled when ``write``."""
    unit = locate(host, user=user)
    unit.text = render_unit(host, config, user=unit.scope == "user")
    verify(unit)
    if not write:
        return unit
    try:
        unit.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(unit.path, unit.text, mode=0o644)
    except OSError as exc:
        raise HostError(f"cannot write {unit.path}: {exc.strerror or exc}; run as root for a system "
                        "unit, or pass --user") from None
    _run_or_advise(unit, [_systemctl(unit, "daemon-reload"), _systemctl(unit, "enable", unit.name)])
    if unit.scope == "user":
        account = _user_name()
        unit.notes.append("a user unit runs at boot only when the user's manager starts without a "
                          f"login: enable lingering with `loginctl enable-linger {account}`")
        unit.next_steps.append(f"loginctl enable-linger {account}")
    return unit


def remove(host: HostDir, *, user: bool) -> tuple[BootUnit, bool]:
    """Delete the host's unit (disabling it first where systemd runs); whether one was there."""
    unit = locate(host, user=user)
    if not unit.path.is_file():
        return unit, False
    if systemd_running() and shutil.which("systemctl") is not None:
        _run_or_advise(unit, [_systemctl(unit, "disable", unit.name)])
    else:
        for wants in unit.path.parent.glob(f"*.wants/{unit.name}"):  # what `enable` made
            wants.unlink(missing_ok=True)
    try:
        unit.path.unlink()
    except OSError as exc:
        raise HostError(f"cannot delete {unit.path}: {exc.strerror or exc}; run as root for a "
                        "system unit, or pass --user for a user unit") from None
    _run_or_advise(unit, [_systemctl(unit, "daemon-reload")])
    return unit, True


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
