"""A host's stack as a whole: bring it up and prove it, take it down, report on it.

Written once for every runtime: commands call these, :func:`open_runtime` (the one place
that reads ``config.runtime``) picks the runtime (Docker, native or Kubernetes, see
``pixsim_host.runtime``) that starts, stops and inspects the services, and ``health``
does the HTTP probes.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pixsim_host import replace_journal, tls
from pixsim_host.config import HostConfig
from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.progress import Progress, quiet
from pixsim_host.restore_journal import (
    check_no_unfinished_restore,
    unfinished_message,
    unfinished_restore,
)
from pixsim_host.runtime import BACKEND, DataRuntime, job_runtime, require_data_movement
from pixsim_host.services import migrate_lines, stray_dotenv_notes

if TYPE_CHECKING:
    from pixsim_host.health import BackendReport
    from pixsim_host.runtime import Runtime, RuntimeType, Started

PULL_POLICIES = ("missing", "always", "never")


@dataclass
class UpReport:
    host_id: str
    name: str
    url: str
    client_url: str
    actions: dict[str, str]
    services: dict[str, dict[str, Any]]
    backend: dict[str, Any]
    elapsed: float
    plugins: list[str] = field(default_factory=list)  # enabled, as the backend reports
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "host_id": self.host_id,
            "name": self.name,
            "backend_url": self.url,
            "frontend": f"VITE_BACKEND_URL={self.client_url}",
            "actions": self.actions,
            "services": self.services,
            "backend": self.backend,
            "plugins_enabled": self.plugins,
            "elapsed_seconds": round(self.elapsed, 3),
            "notes": self.notes,
        }


def runtime_type(config: HostConfig) -> RuntimeType:
    """The class of the host's runtime: the one place that reads ``config.runtime``."""
    found = runtime_type_named(config.runtime)
    assert found is not None  # the config validated the name
    return found


def runtime_type_named(kind: str) -> RuntimeType | None:
    """The runtime class called ``kind`` (docker, native, kubernetes), None if there is none."""
    if kind == "kubernetes":
        from pixsim_host.runtime.kubernetes import KubernetesRuntime

        return KubernetesRuntime
    if kind == "native":
        from pixsim_host.runtime.native import NativeRuntime

        return NativeRuntime
    if kind == "docker":
        from pixsim_host.runtime.docker import DockerRuntime

        return DockerRuntime
    return None


def open_runtime(host: HostDir, config: HostConfig, notes: list[str] | None = None, *,
                 refresh: bool = True) -> Runtime:
    """The runtime of this host, on its rendered files and its secrets.

    The rendered files are brought up to date first (``refresh``; doctor, which only
    reads, passes False); what that did goes into ``notes``.
    """
    from pixsim_host.envfile import read_secrets

    secrets = read_secrets(host.secrets_file)
    rendered: list[str] = []
    edited: list[str] = []
    if refresh:
        from pixsim_host.render import refresh_rendered

        rendered, edited = refresh_rendered(host, config)
    runtime = runtime_type(config).open(host, config, secrets,
                                        claimed_ports=lambda: _claimed_ports(config))
    if notes is not None:
        if rendered:
            notes.append(f"re-rendered {', '.join(rendered)} from pixsim-host.yaml")
        if edited and runtime.applies_rendered_files:
            notes.append(
                f"{', '.join(edited)} differs from what pixsim-host.yaml renders (edited by hand?); "
                "it is applied as it is: run `pixsim-host render` to discard the edits"
            )
    return runtime


def _claimed_ports(config: HostConfig) -> set[int]:
    """The ports the other hosts registered on this machine claim."""
    from pixsim_host.hosts import load_registry

    try:
        return set(load_registry().port_claims(config.host_id))
    except HostError:
        return set()  # a damaged registry: `doctor` reports it; choosing ports goes on


def open_data_runtime(host: HostDir, config: HostConfig) -> DataRuntime:
    """The host's runtime for moving data (backup, restore, clone), or the one error."""
    return require_data_movement(open_runtime(host, config), config.name)


def require_host_plugins(config: HostConfig) -> None:
    """Refuse (one line) to install or remove a plugin package the host's backend never loads."""
    kind = runtime_type(config)
    if not kind.runs_host_plugins:
        from pixsim_host.errors import NotSupportedByRuntime

        raise NotSupportedByRuntime(
            f"host {config.name!r} runs on {kind.words.title}, whose backend loads only the plugins "
            "its image carries, not the host's plugins/ folder; build the package into "
            "backend.image, and switch plugins on or off with `pixsim-host plugins enable|disable`",
            runtime=kind.kind, capability="runs_host_plugins",
        )


def check_restorable(config: HostConfig) -> None:
    """Refuse to build a new host where another one's resources still are (the origin?)."""
    runtime_type(config).check_unused(config)


def prepare(runtime: Runtime, host: HostDir, pull: str, progress: Progress) -> HostConfig | None:
    """``runtime.prepare``, then save what it settled in the config (a runtime never writes
    the config itself); the settled config, or None when nothing changed."""
    runtime.prepare(pull, progress)
    settled = runtime.settled_config()
    if settled is not None:
        from pixsim_host.render import apply_config

        apply_config(host, settled)
    return settled


def up(host: HostDir, config: HostConfig, *, pull: str = "missing", timeout: float = 120.0,
       progress: Progress) -> UpReport:
    from pixsim_host.health import ProbeError, wait_for_backend
    from pixsim_host.plugins import check_plugin_lists, verify_registration

    if pull not in PULL_POLICIES:
        raise HostError(f"--pull must be one of {', '.join(PULL_POLICIES)}, not {pull!r}")
    check_no_unfinished_restore(host)  # never "verified" on the half-replaced data of a restore
    started = time.monotonic()
    deadline = started + timeout
    notes: list[str] = []
    runtime = open_runtime(host, config, notes)
    notes += runtime.notes()
    for note in notes:
        progress("host", note)
    check_plugin_lists(host, config)
    progress = replace_journal.watching(host, progress)  # status never verifies a half replacement
    unchanged = _unchanged_and_verified(runtime, host, config, pull)
    if unchanged is None:
        config = prepare(runtime, host, pull, progress) or config
        _restart_if_hung(runtime, config, progress)
    for note in stray_dotenv_notes(config):
        progress("host", note)
        notes.append(note)
    jobs = job_runtime(runtime)
    data_actions: dict[str, str] = {}
    if jobs is not None and unchanged is None:
        # The backend never starts on an unmigrated database: db and redis first, then the
        # extensions check and the migrations, and only then the backend and its workers.
        from pixsim_host.schema import prepare_database

        try:
            data_actions = prepare_database(jobs, host, config, deadline, progress).actions
        except BaseException:
            # The backend's container made ahead of a start that will not come; what failed
            # is what the caller must hear, not a failure to tidy up.
            with contextlib.suppress(Exception):
                jobs.discard_unstarted()
            raise
    if jobs is not None and not migrate_lines(config):
        note = (f"backend.migrate is empty: no schema migrations run for {config.backend.image}; "
                "set it to the image's own (PixSim7: `python scripts/migrate_all.py --scope all`)")
        progress("host", note)
        notes.append(note)
    if unchanged is None:
        result = runtime.start(progress, deadline, verified_elsewhere=frozenset({BACKEND}))
        verified = None
    else:
        result, verified = unchanged
        progress(BACKEND, "healthy, identity verified")
    notes += result.notes
    try:
        with runtime.backend_endpoint(config, progress) as endpoint:

            def still_running() -> None:
                result.check_alive(BACKEND)
                endpoint.check()

            try:
                report = verified or wait_for_backend(endpoint.url, config.host_id, deadline,
                                                      still_running, progress)
            except ProbeError as exc:
                raise runtime.failure(BACKEND, f"did not pass its checks before the timeout ({exc})") \
                    from None
            plugins = verify_registration(host, config, report.url, notes,
                                          backend_log=lambda: runtime.log_tail(BACKEND, 80))
    finally:
        result.close()
    if tls.enabled(config):  # the same identity through the proxy, over HTTPS
        notes += tls.verify_proxy(host, config, runtime, deadline, progress)
    replace_journal.finished(host)
    url, client_url = runtime.public_backend(config)
    return UpReport(
        host_id=config.host_id,
        name=config.name,
        url=url,
        client_url=client_url,
        # db and redis were started before the migrations: what that start did is theirs.
        actions={**result.actions, **{name: action for name, action in data_actions.items()
                                      if result.actions.get(name, "unchanged") == "unchanged"}},
        services=runtime.service_report(result),
        backend={"health": report.health, "ready": report.ready, "version": report.version,
                 "server": report.info},
        plugins=plugins,
        elapsed=time.monotonic() - started,
        notes=notes,
    )


def _unchanged_and_verified(runtime: Runtime, host: HostDir, config: HostConfig,
                            pull: str) -> tuple[Started, BackendReport] | None:
    """A host already running as configured, with its backend passing every contract check
    now: nothing to prepare, migrate or converge (``runtime.unchanged``). None when ``up``
    has work to do, or the backend does not pass yet (converging then waits, restarts a
    hung one, and says why)."""
    from pixsim_host.health import ProbeError, verify_now
    from pixsim_host.schema import migrations_due

    started = runtime.unchanged(pull)
    if started is None:
        return None
    try:
        jobs = job_runtime(runtime)
        if jobs is not None and migrations_due(host, config, jobs.backend_code()):
            started.close()
            return None
        with runtime.backend_endpoint(config, quiet) as endpoint:
            return started, verify_now(endpoint.url, config.host_id)
    except ProbeError:
        started.close()
        return None
    except BaseException:
        started.close()
        raise


def _restart_if_hung(runtime: Runtime, config: HostConfig, progress: Progress) -> None:
    """A backend that runs but answers nothing is restarted, not waited for until the timeout."""
    from pixsim_host.health import backend_hung

    if runtime.watches_backend:
        return
    state = runtime.states().get(BACKEND)
    if state is None or state.status != "running" or not backend_hung(config.local_url):
        return
    progress(BACKEND, "running but not answering (hung); restarting it")
    runtime.restart([BACKEND], progress)


def backend_running(host: HostDir, config: HostConfig) -> bool:
    runtime = open_runtime(host, config)
    state = runtime.states().get(BACKEND)
    return state is not None and state.status == "running"


def down(host: HostDir, config: HostConfig, *, progress: Progress,
         runtime: Runtime | None = None) -> list[str]:
    """Stop and remove the host's services; its data is kept. What was removed."""
    runtime = runtime or open_runtime(host, config)
    removed = list(runtime.stop_and_remove(progress))
    replace_journal.finished(host)  # nothing is left half-replaced
    return removed


def host_volumes(host: HostDir, config: HostConfig, runtime: Runtime | None = None) -> list[str]:
    runtime = runtime or open_runtime(host, config)
    return list(runtime.volumes())


def remove_volumes(host: HostDir, config: HostConfig, names: list[str],
                   runtime: Runtime | None = None) -> None:
    from pixsim_host.schema import forget_migrations

    runtime = runtime or open_runtime(host, config)
    runtime.check_stopped()
    runtime.remove_volumes(names)
    # A new, empty database comes next: it has to be migrated again.
    forget_migrations(host)


def status(host: HostDir, config: HostConfig) -> dict[str, Any]:
    """Per service state and health, plus the backend's own view; ``healthy`` sums it up."""
    from pixsim_host.health import backend_hung, probe_status

    runtime = open_runtime(host, config)
    found = runtime.states()
    services: dict[str, dict[str, Any]] = {}
    healthy = True
    for name in runtime.service_names():
        state = found.get(name)
        if state is None:
            services[name] = {"state": "missing", "health": None}
            healthy = False
            continue
        if state.health == "starting":
            # Engines before Docker 25 wait a whole interval before the first check;
            # run it now so status tells the truth right after `up`.
            state.health = runtime.probe_health(state)
        services[name] = state.as_json()
        services[name]["uptime_seconds"] = _uptime(state.started_at)
        # The backend is judged by its HTTP checks below; its container healthcheck lags.
        if state.status != "running" or (state.health not in (None, "healthy") and name != BACKEND):
            healthy = False
        if state.status in ("exited", "dead"):
            # A crashed service: say why, from its own last words.
            services[name]["last_log_lines"] = runtime.log_tail(name, 15).splitlines()
    backend: dict[str, Any] = {"url": runtime.public_backend(config)[0]}
    # "starting": some of a workload's replicas are ready already, so it answers.
    if found.get(BACKEND) is not None and found[BACKEND].status in ("running", "starting"):
        try:
            with runtime.backend_endpoint(config, quiet) as endpoint:
                report, why = probe_status(endpoint.url, config.host_id)
                if report is None and backend_hung(endpoint.url):
                    why = (f"the backend runs but answers nothing, not even / ({why}): it is hung; "
                           "`pixsim-host up` restarts it")
        except HostError as exc:  # the way to the backend (a port-forward) failed
            report, why = None, exc.message
        healthy = record_backend_probe(backend, report, why) and healthy
    else:
        backend["verified"] = False
        healthy = False
    half = replace_journal.unfinished(host)
    restoring = unfinished_restore(host)
    if restoring is not None:  # the data may be half replaced: never "verified"
        half = unfinished_message(host, restoring)
    if half is not None:  # never "verified" while up's replacement of a service is unfinished
        backend["verified"], backend["problem"], healthy = False, half, False
    return {"host_id": config.host_id, "name": config.name, "healthy": healthy,
            **runtime.status_fields(), "services": services, "backend": backend}


def record_backend_probe(backend: dict[str, Any], report: Any, why: str) -> bool:
    """Put one status probe's outcome into ``backend``; whether it verified the host."""
    backend["health"] = report.health if report else None
    backend["verified"] = report is not None
    if report is None:
        backend["problem"] = why
    return report is not None


def _uptime(started_at: str | None) -> float | None:
    if not started_at:
        return None
    from datetime import UTC, datetime

    text = started_at.rstrip("Z").split(".")[0]
    try:
        started = datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        return None
    return round((datetime.now(UTC) - started).total_seconds(), 1)
