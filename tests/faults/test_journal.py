"""The journal tools themselves: private atomic journals, interrupts deferred across steps
that must not be cut, and a fault point that does nothing unless asked."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest
from unit_helpers import MakeHost, run_cli

from pixsim_host import journal
from pixsim_host.hostdir import HostDir


def test_a_journal_is_private_and_remembers_when_its_change_began(tmp_path: Path) -> None:
    host = HostDir(tmp_path)
    journal.write(host, "demo", {"step": 1})
    path = tmp_path / ".pixsim-host" / "demo-in-progress.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = journal.read(host, "demo", "the demo journal", "fix it")
    assert first is not None and first["step"] == 1 and first["pid"] == os.getpid()
    journal.write(host, "demo", {"step": 2})
    second = journal.read(host, "demo", "the demo journal", "fix it")
    assert second is not None and second["step"] == 2
    assert second["started_at"] == first["started_at"]
    assert journal.is_active(host, "demo")
    journal.clear(host, "demo")
    assert not path.exists() and not journal.is_active(host, "demo")
    assert journal.read(host, "demo", "the demo journal", "fix it") is None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupts_wait_until_the_steps_are_done(signum: int) -> None:
    done = []
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), journal.deferred_interrupts() as seen:
        os.kill(os.getpid(), signum)
        os.kill(os.getpid(), signum)  # a second one waits too
        done.append("first step")
        done.append("second step")
    assert done == ["first step", "second step"]
    assert seen.received == [signum, signum]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_steps_without_an_interrupt_go_on() -> None:
    with journal.deferred_interrupts() as seen:
        journal.fault_point("not-named")  # no PIXSIM_HOST_FAULT_POINT: nothing happens
    assert seen.received == []


def test_a_named_fault_point_signals_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(journal.FAULT_POINT_ENV, "elsewhere, here:INT")
    journal._fault_points.cache_clear()
    try:
        journal.fault_point("elsewhere:nothing")
        with pytest.raises(KeyboardInterrupt):
            journal.fault_point("here")
    finally:
        monkeypatch.delenv(journal.FAULT_POINT_ENV)
        journal._fault_points.cache_clear()


def test_a_deferred_signal_goes_to_the_handler_it_would_have_met() -> None:
    called: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: called.append(signum))
    try:
        with journal.deferred_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            assert called == []  # not during the steps
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert called == [signal.SIGTERM]  # once, after them (a supervisor's own "stop")


# ---- journals as hostile input ---------------------------------------------------------------

# Each journal, and a command that reads it: `up` refuses a half-restored host, `config set`
# first rolls back a plugin change, `status` names a replacement that did not finish.
JOURNAL_READERS = {
    "restore": ("up",),
    "plugins-change": ("config", "set", "backend.port", "18999"),
    "up-replace": ("status",),
}


@pytest.mark.parametrize("name", sorted(JOURNAL_READERS))
def test_a_damaged_journal_is_one_error_line_never_a_traceback(make_host: MakeHost, name: str) -> None:
    from hypothesis import given
    from test_input_properties import EXAMPLES, mutations

    from pixsim_host.config import load_config
    from pixsim_host.plugin_change import PluginChangeRun

    host = make_host()
    hostdir = HostDir(host)
    if name == "plugins-change":
        PluginChangeRun(hostdir, load_config(host / "pixsim-host.yaml"), "plugins disable romance").begin()
    else:
        journal.write(hostdir, name, {"kind": "over-existing", "replacing": ["backend"],
                                      "safety_backup": str(host / "backups" / "safety.tar.gz")})
    journal.release(hostdir, name)
    path = journal.journal_path(hostdir, name)
    base = path.read_bytes()
    config = (host / "pixsim-host.yaml").read_bytes()

    @EXAMPLES
    @given(content=mutations(base))
    def run(content: bytes) -> None:
        path.write_bytes(content)
        try:
            result = run_cli(*JOURNAL_READERS[name], "--dir", str(host))
        finally:
            path.unlink(missing_ok=True)
            (host / "pixsim-host.yaml").write_bytes(config)
        assert "Traceback" not in result.output, result.output[:3000]
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
        assert len(errors) == (0 if result.returncode in (0, 4) else 1), result.output[:3000]
        assert not errors or result.stderr.count("\n") <= 2, result.output[:3000]  # + a warning

    run()
