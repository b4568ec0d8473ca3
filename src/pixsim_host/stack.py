"""A host's stack as a whole: bring it up and prove it, take it down, report on it.

Commands call these; the runtime (Docker or native, see ``pixsim_host.runtime``) starts,
stops and inspects the services, and ``health`` does the HTTP probes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pixsim_host.config import REFERENCE_BACKEND_IMAGE, HostConfig
from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir

if TYPE_CHECKING:
    from pixsim_host.runtime import Runtime, ServiceState

Progress = Callable[[str, str], None]
PULL_POLICIES = ("missing", "always", "never")
BACKEND = "backend"
# The backend reads plugins/ only at start-up, so what is in it is part of the backend's
# effective config: a digest of it, as a label, makes `up` recreate the backend when a
# package was added, removed or edited there (by hand, or by `plugins install --no-restart`).
PLUGINS_DIGEST_LABEL = "org.pixsim-host.plugins-digest"


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


def open_runtime(host: HostDir, config: HostConfig, notes: list[str] | None = None) -> Runtime:
    """The runtime of this host (Docker or native), on its rendered files and its secrets."""
    if config.runtime == "kubernetes":
        raise HostError(
            f"this command drives Docker, but host {config.name!r} runs on Kubernetes; there use "
            "up, down, status, logs and restart, and change plugins with `pixsim-host config set "
            "plugins.disabled [...]` then `pixsim-host up`"
        )
    from pixsim_host.envfile import read_secrets
    from pixsim_host.render import refresh_rendered

    secrets = read_secrets(host.secrets_file)
    rendered, edited = refresh_rendered(host, config)
    if notes is not None:
        if rendered:
            notes.append(f"re-rendered {', '.join(rendered)} from pixsim-host.yaml")
        if edited and config.runtime == "docker":
            notes.append(
                f"{', '.join(edited)} differs from what pixsim-host.yaml renders (edited by hand?); "
                "it is applied as it is: run `pixsim-host render` to discard the edits"
            )
    if config.runtime == "native":
        from pixsim_host.runtime.native import NativeRuntime

        return NativeRuntime(host, config, secrets)
    return _docker_runtime(host, config, secrets)


def _docker_runtime(host: HostDir, config: HostConfig, secrets: dict[str, str]) -> Runtime:
    from pixsim_host.runtime.compose import load_project
    from pixsim_host.runtime.docker import DockerRuntime, context_digest
    from pixsim_host.runtime.engine import connect

    project = load_project(host.compose_file, secrets)
    if project.name != config.project:
        raise HostError(
            f"compose.yaml names project {project.name!r} but this host is {config.project!r}; "
            "run `pixsim-host render`"
        )
    backend = project.services.get(BACKEND)
    if backend is not None:
        backend.labels[PLUGINS_DIGEST_LABEL] = context_digest(host.plugins_dir)
    return DockerRuntime(connect(), project, config.host_id, secrets,
                         buildable_images=frozenset({REFERENCE_BACKEND_IMAGE}),
                         db_user=config.database.user, db_name=config.database.name)


def check_restorable(config: HostConfig) -> None:
    """Refuse to build a new host where another one's resources still are (the origin?)."""
    if config.runtime == "docker":
        from pixsim_host.runtime.docker import check_project_unused
        from pixsim_host.runtime.engine import connect

        check_project_unused(connect().api, config.project)


def up(host: HostDir, config: HostConfig, *, pull: str = "missing", timeout: float = 120.0,
       progress: Progress) -> UpReport:
    from pixsim_host.health import ProbeError, wait_for_backend

    if config.runtime == "kubernetes":
        from pixsim_host.runtime import kubernetes

        return kubernetes.up(host, config, timeout=timeout, progress=progress)
    if pull not in PULL_POLICIES:
        raise HostError(f"--pull must be one of {', '.join(PULL_POLICIES)}, not {pull!r}")
    started = time.monotonic()
    deadline = started + timeout
    notes: list[str] = []
    runtime = open_runtime(host, config, notes)
    for note in notes:
        progress("host", note)
    _check_plugin_lists(host, config)
    runtime.prepare(pull, progress)
    result = runtime.start(progress, deadline, verified_elsewhere=frozenset({BACKEND}))
    try:
        def still_running() -> None:
            result.check_alive(BACKEND)

        try:
            report = wait_for_backend(config.local_url, config.host_id, deadline, still_running, progress)
        except ProbeError as exc:
            raise runtime.failure(BACKEND, f"did not pass its checks before the timeout ({exc})") from None
    finally:
        result.close()
    plugins = _verify_plugins(host, config, report.url, notes)
    services = {}
    for name, state in sorted(runtime.states().items()):
        services[name] = _service_json(state)
        # Every service passed our own checks just now, whatever the engine's lagging
        # healthcheck says yet (before Docker 25 it waits a whole interval).
        services[name].update(health="healthy", engine_health=state.health, verified=True)
    return UpReport(
        host_id=config.host_id,
        name=config.name,
        url=config.local_url,
        client_url=config.client_url,
        actions=result.actions,
        services=services,
        backend={"health": report.health, "ready": report.ready, "version": report.version,
                 "server": report.info},
        plugins=plugins,
        elapsed=time.monotonic() - started,
        notes=notes,
    )


def _restart_if_hung(runtime: Runtime, config: HostConfig, progress: Progress) -> None:
    """A backend that runs but answers nothing is restarted, not waited for until the timeout."""
    from pixsim_host.health import backend_hung

    state = runtime.states().get(BACKEND)
    if state is None or state.status != "running" or not backend_hung(config.local_url):
        return
    progress(BACKEND, "running but not answering (hung); restarting it")
    runtime.restart([BACKEND], progress)


def stray_dotenv_notes(config: HostConfig) -> list[str]:
    """Warnings about a ``.env`` in the backend's working directory.

    PixSim7 calls ``load_dotenv()`` there, so a variable the host does not set would come,
    unnoticed, from the operator's checkout.
    """
    from pathlib import Path

    from pixsim_host.backend_env import Endpoints, backend_environment
    from pixsim_host.services import dotenv_keys

    workdir = config.native.backend_workdir or config.backend.source
    if not workdir:
        return []
    path = Path(workdir).expanduser() / ".env"
    contract = {key.upper() for key in backend_environment(config, Endpoints("", "", "", "", ""))}
    stray = sorted(key for key in dotenv_keys(path) if key.upper() not in contract)
    if not stray:
        return []
    shown = ", ".join(stray[:8]) + (f" and {len(stray) - 8} more" if len(stray) > 8 else "")
    return [f"{path} sets {shown}, which this host does not: the backend reads that file at start-up "
            "and will use them; move what the host needs into pixsim-host.yaml and remove the file"]


def _check_plugin_lists(host: HostDir, config: HostConfig) -> None:
    """Refuse a plugin set that would abort the backend's start-up (hand-edited config)."""
    from pixsim_host.plugins import load_catalog, trap_problems, with_installed

    saved = load_catalog(host)
    if saved is None:
        return
    problems = trap_problems(with_installed(saved, host, config), set(config.plugins.disabled))
    if problems:
        raise HostError(
            f"plugins.disabled in pixsim-host.yaml would abort the backend's start-up "
            f"({'; '.join(problems)}); enable them again with `pixsim-host plugins enable ID`"
        )


def _verify_plugins(host: HostDir, config: HostConfig, url: str,
                    notes: list[str] | None = None) -> list[str]:
    """Record what the backend loaded, and fail if it is not what the config asks for."""
    from pixsim_host.plugins import verify_registration

    return verify_registration(host, config, url, notes)


def backend_running(host: HostDir, config: HostConfig) -> bool:
    runtime = open_runtime(host, config)
    state = runtime.states().get(BACKEND)
    return state is not None and state.status == "running"


def _service_json(state: ServiceState) -> dict[str, Any]:
    return state.as_json()


def down(host: HostDir, config: HostConfig, *, progress: Progress) -> list[str]:
    if config.runtime == "kubernetes":
        from pixsim_host.runtime import kubernetes

        return kubernetes.down(host, config, progress=progress)
    runtime = open_runtime(host, config)
    return list(runtime.stop_and_remove(progress))


def host_volumes(host: HostDir, config: HostConfig) -> list[str]:
    if config.runtime == "kubernetes":
        from pixsim_host.runtime import kubernetes

        return kubernetes.claims(host, config)
    runtime = open_runtime(host, config)
    return list(runtime.volumes())


def remove_volumes(host: HostDir, config: HostConfig, names: list[str]) -> None:
    if config.runtime == "kubernetes":
        from pixsim_host.runtime import kubernetes

        return kubernetes.delete_claims(host, config, names)
    runtime = open_runtime(host, config)
    if runtime.states():
        raise HostError("the host still has containers; run `pixsim-host down` first")
    runtime.remove_volumes(names)


def status(host: HostDir, config: HostConfig) -> dict[str, Any]:
    """Per service state and health, plus the backend's own view; ``healthy`` sums it up."""
    from pixsim_host.health import probe_status

    if config.runtime == "kubernetes":
        from pixsim_host.runtime import kubernetes

        return kubernetes.status(host, config)
    runtime = open_runtime(host, config)
    containers = runtime.states()
    services: dict[str, dict[str, Any]] = {}
    healthy = True
    for name in runtime.service_names():
        state = containers.get(name)
        if state is None:
            services[name] = {"state": "missing", "health": None}
            healthy = False
            continue
        if state.health == "starting":
            # Engines before Docker 25 wait a whole interval before the first check;
            # run it now so status tells the truth right after `up`.
            state.health = runtime.probe_health(state)
        services[name] = _service_json(state)
        services[name]["uptime_seconds"] = _uptime(state.started_at)
        # The backend is judged by its HTTP checks below; its container healthcheck lags.
        if state.status != "running" or (state.health not in (None, "healthy") and name != BACKEND):
            healthy = False
        if state.status in ("exited", "dead"):
            # A crashed service: say why, from its own last words.
            services[name]["last_log_lines"] = runtime.log_tail(name, 15).splitlines()
    backend: dict[str, Any] = {"url": config.local_url}
    if containers.get(BACKEND) is not None and containers[BACKEND].status == "running":
        healthy = record_backend_probe(backend, *probe_status(config.local_url, config.host_id)) \
            and healthy
    else:
        backend["verified"] = False
        healthy = False
    return {"host_id": config.host_id, "name": config.name, "healthy": healthy,
            "services": services, "backend": backend}


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


def change_host(host: HostDir, old: HostConfig, new: HostConfig, *, progress: Progress,
                timeout: float = 120.0,
                undo: Callable[[], None] | None = None) -> UpReport | None:
    """Save ``new``, apply it to a running host and verify; on failure put ``old`` back.

    ``undo`` reverts files the change made (installed plugins); ``up`` recreates the
    backend when the plugins folder changed, since it reads it only at start-up.
    Returns None when the host is not running (the change waits for the next ``up``).
    """
    from pixsim_host.config import save_config
    from pixsim_host.render import render_host, write_rendered

    rendered = render_host(host, new)
    running = backend_running(host, old)
    save_config(new, host.config_file)
    write_rendered(host, rendered)
    if not running:
        return None
    try:
        return up(host, new, timeout=timeout, progress=progress)
    except HostError as failure:
        progress("host", "rolling back to the previous configuration")
        save_config(old, host.config_file)
        write_rendered(host, render_host(host, old))
        if undo is not None:
            undo()
        try:
            up(host, old, timeout=timeout, progress=progress)
        except HostError as again:
            raise HostError(
                f"{failure.message}; rolling back failed too ({again.message}); "
                "see `pixsim-host status` and `pixsim-host logs backend`",
                details=failure.details,
            ) from None
        raise HostError(
            f"{failure.message}. The previous configuration was put back and the host is "
            "healthy again",
            details=failure.details,
        ) from None
