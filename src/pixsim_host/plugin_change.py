"""A plugin change (enable, disable, install, remove) that an interrupt never leaves halfway.

Before any file changes, a journal records the config as it was and the folders the change
adds to or takes out of plugins/. The files then change with atomic steps only: the config
and rendered files replaced whole, a new package renamed in from a staging directory, a
removed one renamed aside (deleted only once the change is verified). Ctrl-C and SIGTERM
wait until those steps are done. Then the backend restarts and is verified; a failure or
an interrupt there puts the old files back and restarts again. The journal goes when the
change is finished either way.

A SIGKILL (or a second interrupt) leaves the journal; the next command that takes the
host's lock, or ``status``, rolls the change back (or finishes it, when it was verified
already) through :func:`recover`, and says so in one line.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixsim_host import journal, stack
from pixsim_host.config import HostConfig, load_config
from pixsim_host.errors import HostError
from pixsim_host.fsutil import atomic_write
from pixsim_host.hostdir import HostDir
from pixsim_host.journal import deferred_interrupts, fault_point, terminate_as_interrupt
from pixsim_host.progress import Progress
from pixsim_host.render import apply_config, render_host

JOURNAL = "plugins-change"
_WHAT = "the plugin change journal"
_FIX = "a plugin change did not finish: delete the file and check `pixsim-host plugins list`"
# Staging directories of installs and the folders of removals waiting for verification.
_INSTALL_PREFIX = "install-"
_PARKED_PREFIX = "removed-"
_PUT_BACK = "pixsim-host.yaml and plugins/ are as before it"


class PluginChangeRun:
    """One plugin change of this process, journaled from its first step to its end."""

    def __init__(self, host: HostDir, old: HostConfig, command: str) -> None:
        self.host, self.old, self.command = host, old, command
        self.record: dict[str, Any] = {
            "command": command, "phase": "applying",
            "config_before": host.config_file.read_text(encoding="utf-8"),
            "installed": None, "removed": None, "parked": None,
        }

    def begin(self) -> None:
        self._save()

    def _save(self) -> None:
        journal.write(self.host, JOURNAL, self.record)

    def installing(self, target: Path) -> None:
        """Journal a package about to be renamed into plugins/ (``install_package``'s hook)."""
        with deferred_interrupts():
            self.record["installed"] = str(target)
            self._save()
        fault_point("plugins.installing")

    def park(self, folder: Path) -> None:
        """Take ``folder`` out of plugins/ by renaming it aside (journaled first)."""
        self.host.state_dir.mkdir(parents=True, exist_ok=True)
        parked = Path(tempfile.mkdtemp(dir=self.host.state_dir, prefix=_PARKED_PREFIX)) / folder.name
        with deferred_interrupts():
            self.record.update(removed=str(folder), parked=str(parked))
            self._save()
            fault_point("plugins.parking")
            folder.rename(parked)

    def abandon(self) -> None:
        """The change stops before the config changed: its folders are put back."""
        with deferred_interrupts():
            _undo_files(self.host, self.record)
            _sweep(self.host)
            journal.clear(self.host, JOURNAL)

    def apply(self, new: HostConfig, *, restart: bool, timeout: float,
              progress: Progress) -> stack.UpReport | None:
        """Save ``new`` and, when ``restart`` and the backend runs, restart and verify it;
        the report, or None when nothing was restarted (the change waits for ``up``)."""
        try:
            rendered = render_host(self.host, new)  # a config that cannot render changes nothing
            running = restart and stack.backend_running(self.host, self.old)
        except BaseException:
            self.abandon()
            raise
        try:
            with deferred_interrupts():
                self.record["plugins_after"] = new.plugins.model_dump(mode="json")  # what is applied
                self._save()
                apply_config(self.host, new, rendered)
                fault_point("plugins.config-written")
        except KeyboardInterrupt:
            with deferred_interrupts():
                _undo_files(self.host, self.record)
                _sweep(self.host)
                journal.clear(self.host, JOURNAL)
            raise HostError(f"interrupted before the backend was restarted: the change was undone "
                            f"({_PUT_BACK})", exit_code=130) from None
        if not running:
            self._finish()
            return None
        try:
            with terminate_as_interrupt():
                fault_point("plugins.restarting")
                report = stack.up(self.host, new, timeout=timeout, progress=progress)
                with deferred_interrupts():
                    self.record["phase"] = "verified"
                    self._save()
                fault_point("plugins.verified")
        except BaseException as failure:  # a failed check, Ctrl-C, SIGTERM: roll back
            self._roll_back(failure, timeout, progress)
            raise
        self._finish()
        return report

    def _finish(self) -> None:
        with deferred_interrupts():
            _sweep(self.host)
            journal.clear(self.host, JOURNAL)

    def _roll_back(self, failure: BaseException, timeout: float, progress: Progress) -> None:
        interrupted = not isinstance(failure, Exception)
        why = "interrupted" if interrupted else (
            failure.message if isinstance(failure, HostError) else f"{type(failure).__name__}: {failure}")
        progress("host", f"{'interrupted' if interrupted else 'the change failed'}: rolling back to "
                         "the previous plugin set")
        try:
            with deferred_interrupts():
                _undo_files(self.host, self.record)
                self.record["phase"] = "rolled-back"
                self._save()
            fault_point("plugins.rolling-back")
            with terminate_as_interrupt():
                stack.up(self.host, self.old, timeout=timeout, progress=progress)
        except KeyboardInterrupt:
            journal.release(self.host, JOURNAL)
            raise HostError(
                f"{why}, and interrupted again while the previous plugin set was being restarted: "
                f"the change was undone on disk ({_PUT_BACK}) but the backend may still run the new "
                "set; run `pixsim-host up` to apply the previous one and verify it",
                exit_code=130) from None
        except HostError as again:
            self._finish()
            raise HostError(
                f"{why}; rolling back failed too ({again.message}); {_PUT_BACK}: see "
                "`pixsim-host status` and `pixsim-host logs backend`",
                details=getattr(failure, "details", None)) from None
        self._finish()
        if interrupted:
            raise HostError("interrupted: the plugin change was rolled back and the host verified "
                            f"with its previous plugin set ({_PUT_BACK})", exit_code=130) from None
        if isinstance(failure, HostError):
            raise HostError(f"{failure.message}. The previous configuration was put back and the "
                            "host is healthy again", details=failure.details) from None


def _inside(path: Any, parent: Path, *, depth: int = 1) -> Path | None:
    """``path`` (from a journal, a file anyone could edit) when it lies ``depth`` levels
    inside ``parent``, else None: recovery never touches anything else."""
    if not isinstance(path, str) or not path:
        return None
    candidate = Path(path)
    above = candidate
    for _ in range(depth):
        above = above.parent
    return candidate if above == parent and ".." not in candidate.parts else None


def _undo_files(host: HostDir, record: dict[str, Any]) -> None:
    """Put the config and plugins/ back as the journal says they were (each step idempotent)."""
    before = record.get("config_before")
    previous = _previous_config(host, before) if isinstance(before, str) and before.strip() else None
    installed = _inside(record.get("installed"), host.plugins_dir)
    if installed is not None and (installed.exists() or installed.is_symlink()):
        host.state_dir.mkdir(parents=True, exist_ok=True)
        aside = Path(tempfile.mkdtemp(dir=host.state_dir, prefix=_PARKED_PREFIX)) / installed.name
        installed.rename(aside)  # out of plugins/ at once; deleted by the sweep
    removed = _inside(record.get("removed"), host.plugins_dir)
    parked = _inside(record.get("parked"), host.state_dir, depth=2)
    if removed is not None and parked is not None and parked.exists() and not removed.exists():
        parked.rename(removed)
    if previous is not None and isinstance(before, str):
        current = host.config_file.read_text(encoding="utf-8") if host.config_file.is_file() else None
        if current != before:
            atomic_write(host.config_file, before, mode=0o644)
        # Rendered again even when the config is back already: a kill may have come between
        # the config and its rendered files.
        apply_config(host, previous)


def _previous_config(host: HostDir, text: str) -> HostConfig:
    """The journal's config from before the change, validated before anything is put back
    (the journal is a file anyone could have edited)."""
    check = host.state_dir / ".config-before.yaml"
    atomic_write(check, text, mode=0o600)
    try:
        return load_config(check)
    except HostError as exc:
        raise HostError(
            f"{journal.journal_path(host, JOURNAL)} holds a config from before the change that is "
            f"not valid ({exc.message}); nothing was rolled back: delete that file and check "
            "`pixsim-host config show` and `pixsim-host plugins list`") from None
    finally:
        check.unlink(missing_ok=True)


def _sweep(host: HostDir) -> None:
    """Delete what plugin changes left in the state directory (staging, parked folders)."""
    if not host.state_dir.is_dir():
        return
    for path in host.state_dir.iterdir():
        if path.is_dir() and not path.is_symlink() and path.name.startswith(
                (_INSTALL_PREFIX, _PARKED_PREFIX)):
            shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Recovered:
    """What :func:`recover` did: its one line, and whether the change was rolled back
    (a running backend may then still run the interrupted plugin set until ``up``)."""
    message: str
    rolled_back: bool


def recover(host: HostDir, *, applies_next: bool) -> Recovered | None:
    """Roll back (or finish, when it was verified) a plugin change a killed command left;
    None when there was none. The caller holds the lock; ``applies_next``: the caller goes
    on to apply the host's config (``up``)."""
    record = journal.read(host, JOURNAL, _WHAT, _FIX)
    if record is None or journal.is_active(host, JOURNAL):
        return None
    command = record.get("command") or "plugin change"
    when = record.get("started_at") or "earlier"
    with deferred_interrupts():
        if record.get("phase") == "verified":
            _sweep(host)
            journal.clear(host, JOURNAL)
            return Recovered(f"`pixsim-host {command}` (started {when}) was interrupted after its "
                             "change was verified; it was finished (what it removed is deleted)",
                             rolled_back=False)
        with contextlib.suppress(FileNotFoundError):
            _undo_files(host, record)
        _sweep(host)
        journal.clear(host, JOURNAL)
    rest = "" if applies_next else "; run `pixsim-host up` to apply that to a running backend"
    return Recovered(f"`pixsim-host {command}` (started {when}) was interrupted before it finished; "
                     f"it was rolled back: {_PUT_BACK}{rest}", rolled_back=True)


def pending(host: HostDir) -> str | None:
    """A plugin change in progress or left unfinished, said in one line (for ``status``)."""
    record = journal.read(host, JOURNAL, _WHAT, _FIX)
    if record is None:
        return None
    command = record.get("command") or "plugin change"
    return (f"`pixsim-host {command}` (started {record.get('started_at') or 'earlier'}) has not "
            "finished")
