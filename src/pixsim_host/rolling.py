"""``up`` without downtime, for an upgrade of a native host whose backend is behind its proxy.

As Kamal and every rolling deploy do it, the new backend starts beside the old one and takes
traffic only once it passes every check:

1. the migrations run while the old backend still serves (so they must be ones the old
   code tolerates: `upgrade --with-downtime` takes the stop-migrate-start way instead);
2. the new backend starts on a free loopback port of its own (a *candidate*, not the host's
   recorded backend) and must pass every check of ``up`` there: health, readiness, identity,
   version, the plugin set;
3. the proxy is switched to it by a graceful reload through its admin socket (the
   listeners stay open, requests in progress finish where they began);
4. the old backend is stopped with SIGTERM, and finishes the requests it still has;
5. the new version starts again as the host's own backend, on ``backend.port``, is checked
   the same way, and the proxy is switched back to that port (the host's own Caddyfile);
   the candidate is stopped as gracefully. ``status``, ``up``, ``logs``, the supervisor and
   the registry thus keep finding the backend where they always do;
6. a last ``up`` converges the rest (the workers with the new code) and verifies it all.

A failure before step 3 stops the candidate and leaves the old backend serving: nothing was
switched. ``RollingFailed.switched`` tells the caller which way back applies.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pixsim_host import stack, tls
from pixsim_host.config import HostConfig
from pixsim_host.errors import HostError
from pixsim_host.fsutil import atomic_write
from pixsim_host.hostdir import HostDir
from pixsim_host.journal import fault_point
from pixsim_host.progress import Progress

if TYPE_CHECKING:
    from pixsim_host.runtime.native import NativeRuntime
    from pixsim_host.runtime.procs import PidRecord

SWITCH_CADDYFILE = "Caddyfile.switch"  # in the state directory, only while switched


class RollingFailed(HostError):
    """A rolling ``up`` failed; ``switched`` says whether traffic had gone to the new code."""

    def __init__(self, cause: HostError, *, switched: bool) -> None:
        super().__init__(cause.message, details=cause.details, exit_code=cause.exit_code)
        self.cause = cause
        self.switched = switched


@dataclass
class Rolled:
    report: stack.UpReport
    switch_seconds: float  # from the first proxy switch to the candidate's stop


def available(host: HostDir, config: HostConfig) -> str | None:
    """Why this host cannot be upgraded without downtime, None when it can."""
    if not tls.enabled(config):
        return "no proxy is in front of its backend (tls.mode off)"
    if stack.runtime_type(config).kind != "native":
        return f"on {stack.runtime_type(config).words.title} the backend is replaced in place"
    from pixsim_host.runtime import native_candidate as candidates
    from pixsim_host.runtime.native import NativeRuntime

    runtime = stack.open_runtime(host, config, refresh=False)
    assert isinstance(runtime, NativeRuntime)
    if candidates.backend_record(runtime) is None:
        return "its backend is not running"
    if not candidates.proxy_current(runtime):
        return "its proxy runs an older configuration without the admin socket (an `up` restarts it)"
    return None


def _verify(url: str, host: HostDir, config: HostConfig, runtime: NativeRuntime, service: str,
            process: PidRecord, deadline: float, progress: Progress) -> None:
    """Every check ``up`` makes of a backend, at ``url``."""
    from pixsim_host.health import ProbeError, wait_for_backend
    from pixsim_host.plugins import verify_registration
    from pixsim_host.runtime import procs

    def still_running() -> None:
        if not procs.alive(process):
            code = procs.exit_code(process.pid)
            raise runtime.failure(service, f"exited with code {code} while starting"
                                  if code is not None else "exited while starting")

    try:
        report = wait_for_backend(url, config.host_id, deadline, still_running, progress)
    except ProbeError as exc:
        raise runtime.failure(service, f"did not pass its checks before the timeout ({exc})") from None
    verify_registration(host, config, report.url, [],
                        backend_log=lambda: runtime.log_tail(service, 80))


def rolling_up(host: HostDir, config: HostConfig, *, timeout: float, progress: Progress) -> Rolled:
    """Bring ``config``'s backend in without a moment where none answers (module docstring)."""
    from pixsim_host.plugins import check_plugin_lists
    from pixsim_host.runtime import job_runtime
    from pixsim_host.runtime import native_candidate as candidates
    from pixsim_host.runtime.native import LOCALHOST, NativeRuntime
    from pixsim_host.schema import MigrationFailed, prepare_database

    deadline = time.monotonic() + timeout
    try:
        runtime = stack.open_runtime(host, config)
        assert isinstance(runtime, NativeRuntime)
        check_plugin_lists(host, config)
        config = stack.prepare(runtime, host, "missing", progress) or config
        jobs = job_runtime(runtime)
        if jobs is not None:  # while the old backend serves
            prepare_database(jobs, host, config, deadline, progress)
    except MigrationFailed:
        raise  # the database may have changed: the caller's way back restores it
    except HostError as failure:
        raise RollingFailed(failure, switched=False) from None
    runtime = stack.open_runtime(host, config, refresh=False)
    assert isinstance(runtime, NativeRuntime)
    switch_file = host.state_dir / SWITCH_CADDYFILE
    host_caddyfile = host.root / tls.CADDYFILE
    switched = False
    switch_started = 0.0
    try:
        port = candidates.candidate_port(runtime)
        progress(candidates.CANDIDATE, f"starting the new backend beside the old one, on "
                                       f"{LOCALHOST}:{port}")
        record = candidates.start_candidate(runtime, port)
        fault_point("rolling.candidate-started")
        _verify(f"http://{LOCALHOST}:{port}", host, config, runtime, candidates.CANDIDATE, record,
                deadline, progress)
        progress(candidates.CANDIDATE, "passed every check; switching the proxy to it")
        from pixsim_host.render import render_host

        text = render_host(host, candidates.with_backend_port(config, port)).files[tls.CADDYFILE]
        atomic_write(switch_file, text, mode=0o600)
        switch_started = time.monotonic()
        switched = True  # from here on, traffic may reach the new code
        tls.reload_proxy(config, host, switch_file)
        progress("backend", "stopping the old backend (requests in progress finish first)")
        candidates.stop_backend(runtime)
        progress("backend", f"starting the new version on backend.port {config.backend.port}")
        own = candidates.start_backend(runtime)
        _verify(config.local_url, host, config, runtime, "backend", own, deadline, progress)
        tls.reload_proxy(config, host, host_caddyfile)
        switch_file.unlink(missing_ok=True)
        progress(candidates.CANDIDATE, "back on backend.port; stopping the candidate")
        candidates.stop_candidate(runtime)
        switch_seconds = time.monotonic() - switch_started
    except BaseException as failure:
        _clean_up(runtime, config, host, host_caddyfile, switch_file, switched)
        if isinstance(failure, HostError):
            raise RollingFailed(failure, switched=switched) from None
        if not switched and not isinstance(failure, Exception):
            # Ctrl-C or SIGTERM before the switch: the old backend never stopped serving.
            raise RollingFailed(HostError("interrupted", exit_code=130), switched=False) from None
        raise
    report = stack.up(host, config, timeout=max(30.0, deadline - time.monotonic()), progress=progress)
    return Rolled(report, switch_seconds)


def _clean_up(runtime: NativeRuntime, config: HostConfig, host: HostDir, host_caddyfile: Path,
              switch_file: Path, switched: bool) -> None:
    """After a failure: the proxy on the host's own Caddyfile again, the candidate stopped."""
    from pixsim_host.runtime import native_candidate as candidates
    if switched and candidates.backend_record(runtime) is not None:
        with contextlib.suppress(HostError):
            tls.reload_proxy(config, host, host_caddyfile)
    if not switched or candidates.backend_record(runtime) is not None:
        switch_file.unlink(missing_ok=True)
    candidates.stop_candidate(runtime)
