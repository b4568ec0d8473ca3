"""Apply a :class:`ProjectSpec` to a Docker Engine, the way Compose would.

Everything is labelled like Compose labels it (so ``docker compose ps`` sees the host)
plus ``org.pixsim-host.*`` labels carrying the host_id and a hash of each service's
effective config. The hash is what makes ``up`` idempotent: an unchanged service keeps
its container, a changed one is recreated, volumes are never recreated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pixsim_host import tls
from pixsim_host.errors import ContainerCommandFailed, HostError
from pixsim_host.journal import fault_point
from pixsim_host.progress import Progress
from pixsim_host.runtime import LocalRuntime, RuntimeWords, context_digest, reference_build_context
from pixsim_host.runtime.compose import ProjectSpec, ServiceSpec
from pixsim_host.runtime.engine import Engine

if TYPE_CHECKING:
    from pixsim_host.config import HostConfig
    from pixsim_host.hostdir import HostDir
    from pixsim_host.runtime.engine_socket import SocketEngine

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
HOST_ID_LABEL = "org.pixsim-host.host-id"
HASH_LABEL = "org.pixsim-host.config-hash"
CONTEXT_LABEL = "org.pixsim-host.context-hash"
NS = 1_000_000_000
BACKEND = "backend"
HOME_MOUNT = "/data"  # where compose.yaml mounts backend-data, the backend's PIXSIM_HOME

# The backend reads plugins/ only at start-up, so what is in it is part of the backend's
# effective config: a digest of it, as a label, makes `up` recreate the backend when a
# package was added, removed or edited there (by hand, or by `plugins install --no-restart`).
PLUGINS_DIGEST_LABEL = "org.pixsim-host.plugins-digest"
CADDYFILE_DIGEST_LABEL = "org.pixsim-host.caddyfile-digest"


class ServiceFailure(HostError):
    """A service that did not come up; carries its name and its last log lines."""

    def __init__(self, service: str, reason: str, logs: str = "") -> None:
        details = f"Last log lines of {service}:\n{logs}" if logs.strip() else None
        super().__init__(
            f"service {service!r} {reason}; containers are left for inspection "
            f"(`pixsim-host logs {service}`, `pixsim-host status`)",
            details=details,
        )
        self.service = service


@dataclass
class ContainerState:
    service: str
    id: str
    name: str
    status: str  # created, running, restarting, exited, dead, paused
    health: str | None
    started_at: str | None
    exit_code: int | None
    restart_count: int
    ports: list[str] = field(default_factory=list)
    config_hash: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "container": self.name,
            "state": self.status,
            "health": self.health,
            "started_at": self.started_at,
            "ports": self.ports,
        }


@dataclass
class ApplyResult:
    actions: dict[str, str]  # service -> created | recreated | started | unchanged
    containers: dict[str, ContainerState]
    watcher: EventWatcher  # still open: the caller keeps watching while it verifies
    runtime: DockerRuntime | None = None
    notes: list[str] = field(default_factory=list)

    def check_alive(self, service: str) -> None:
        """Fail if ``service``'s container died or restarted since ``apply`` started it."""
        assert self.runtime is not None
        started = self.containers[service]
        self.watcher.raise_if_died(self.runtime, started.id, service)
        current = self.runtime._state(started.id, service)
        if current.status in ("exited", "dead") or current.restart_count > started.restart_count:
            raise self.runtime.failure(service, f"exited with code {current.exit_code} while starting")

    def close(self) -> None:
        self.watcher.close()


def container_name(project: str, service: str) -> str:
    return f"{project}-{service}-1"


def network_name(project: str) -> str:
    return f"{project}_default"


def volume_name(project: str, key: str) -> str:
    return f"{project}_{key}"


@dataclass
class ImageBuild:
    """An image pixsim-host builds itself: the reference backend, or the operator's checkout."""

    context: Path
    dockerfile: str
    checkout: bool = False  # the operator's tree: digested by its git state, not byte by byte
    _digest: str | None = None

    def digest(self) -> str:
        if self._digest is None:
            self._digest = checkout_digest(self.context) if self.checkout else context_digest(self.context)
        return self._digest


def checkout_digest(checkout: Path) -> str:
    """What a checkout holds, cheaply: its git commit plus its uncommitted changes, else the
    names, sizes and times of its files (a PixSim7 tree is too big to read whole each `up`)."""
    import subprocess

    git = shutil.which("git")
    if git and (checkout / ".git").exists():
        digest = hashlib.sha256()
        try:
            for argv in (["rev-parse", "HEAD"], ["status", "--porcelain", "-uall"], ["diff", "HEAD"]):
                proc = subprocess.run([git, "-C", str(checkout), *argv], capture_output=True,
                                      timeout=120, check=True)
                digest.update(proc.stdout + b"\0")
            return digest.hexdigest()[:32]
        except (OSError, subprocess.SubprocessError):
            pass
    digest = hashlib.sha256()
    skip = {".git", "node_modules", "__pycache__", ".venv"}
    for path in sorted(checkout.rglob("*")):
        if path.is_file() and not skip & set(path.relative_to(checkout).parts):
            stat = path.stat()
            digest.update(f"{path.relative_to(checkout)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def state_of(data: dict[str, Any], service: str) -> ContainerState:
    """A container's state from the engine's inspect answer."""
    state = data.get("State") or {}
    health = (state.get("Health") or {}).get("Status")
    ports = []
    for port, bindings in sorted(((data.get("NetworkSettings") or {}).get("Ports") or {}).items()):
        for binding in bindings or []:
            ports.append(f"{binding.get('HostIp')}:{binding.get('HostPort')}->{port}")
    return ContainerState(
        service=service,
        id=data["Id"],
        name=data["Name"].lstrip("/"),
        status=str(state.get("Status", "unknown")),
        health=health,
        started_at=state.get("StartedAt") if state.get("Running") else None,
        exit_code=state.get("ExitCode"),
        restart_count=int(data.get("RestartCount") or 0),
        ports=ports,
        config_hash=(data.get("Config") or {}).get("Labels", {}).get(HASH_LABEL, ""),
    )


class DockerRuntime(LocalRuntime):
    """Runs one host's project on one engine; touches only that host's resources."""

    kind = "docker"
    words = RuntimeWords(
        title="Docker",
        stopped="containers removed",
        data_kept="Data volumes are kept; `pixsim-host up` brings the host back with its data.",
        units="containers",
    )
    doctor_checks: ClassVar[tuple[str, ...]] = ("engine", "port", "images", "health")

    @classmethod
    def open(cls, host: HostDir, config: HostConfig, secrets: dict[str, str], *,
             claimed_ports: Callable[[], set[int]] = set) -> DockerRuntime:
        """The runtime for ``host``'s rendered compose.yaml, on the engine from the environment."""
        from pixsim_host.config import REFERENCE_BACKEND_IMAGE
        from pixsim_host.runtime.compose import load_project
        from pixsim_host.runtime.engine import connect
        from pixsim_host.runtime.engine_socket import open_socket_engine

        project = load_project(host.compose_file, secrets)
        if project.name != config.project:
            raise HostError(
                f"compose.yaml names project {project.name!r} but this host is {config.project!r}; "
                "run `pixsim-host render`"
            )
        backend = project.services.get(BACKEND)
        if backend is not None:
            from pixsim_host.plugins import compose_plugin_view

            # With a checkout the backend reads plugins/ and the bundled ones through a view
            # of links (built here): which folders it shows is part of what it loads.
            shown = compose_plugin_view(host, config)
            backend.labels[PLUGINS_DIGEST_LABEL] = context_digest(host.plugins_dir) + (
                f"-{hashlib.sha256(shown.encode()).hexdigest()[:12]}" if shown else "")
        proxy = project.services.get(tls.PROXY)
        caddyfile = host.root / tls.CADDYFILE
        if proxy is not None and caddyfile.is_file():
            # The Caddyfile is bind-mounted: a new one must recreate the proxy to be read.
            proxy.labels[CADDYFILE_DIGEST_LABEL] = hashlib.sha256(caddyfile.read_bytes()).hexdigest()[:32]
        builds = {REFERENCE_BACKEND_IMAGE: ImageBuild(reference_build_context(), "Dockerfile")}
        if config.backend.dockerfile and config.backend.source:
            # The operator's own checkout and Dockerfile, like Compose's `build:`.
            builds[config.backend.image] = ImageBuild(Path(config.backend.source).expanduser(),
                                                      config.backend.dockerfile, checkout=True)
        # The SDK connects on first use (an unchanged host's `up` never needs it) when the
        # engine answers on its unix socket; otherwise it connects now, to say why not.
        reader = open_socket_engine()
        runtime = cls(None if reader is not None else connect(), project, config.host_id, secrets,
                      builds=builds, db_user=config.database.user, db_name=config.database.name)
        runtime.reader = reader
        return runtime

    @classmethod
    def check_unused(cls, config: HostConfig) -> None:
        """Refuse to build a new host where another one's containers or volumes still are."""
        from pixsim_host.runtime.engine import connect

        check_project_unused(connect().api, config.project)
    python = "python"  # what `python` in backend.migrate is, inside the backend's image

    def __init__(self, engine: Engine | None, project: ProjectSpec, host_id: str,
                 secrets: dict[str, str], builds: dict[str, ImageBuild] | None = None,
                 db_user: str = "pixsim", db_name: str = "pixsim") -> None:
        self._engine = engine  # None: connected on first use
        self._read_api_version: tuple[int, int] | None = None  # from a SocketEngine read
        self._known_states: dict[str, ContainerState] | None = None
        self.reader: SocketEngine | None = None  # reads on the engine's unix socket, if it has one
        self.project = project
        self.host_id = host_id
        self.secrets = secrets
        self.builds = builds or {}
        self.db_user = db_user
        self.db_name = db_name
        self._image_ids: dict[str, str] | None = None
        self._precreation: threading.Thread | None = None
        self._precreated: set[str] = set()  # container ids _precreate made

    @property
    def engine(self) -> Engine:
        """The Docker SDK's connection, made on first use."""
        if self._engine is None:
            from pixsim_host.runtime.engine import connect

            self._engine = connect()
        return self._engine

    @property
    def api(self) -> Any:
        return self.engine.api

    def _supports_start_interval(self) -> bool:
        if self._engine is None and self._read_api_version is not None:
            from pixsim_host.runtime.engine import START_INTERVAL_API

            return self._read_api_version >= START_INTERVAL_API
        return self.engine.supports_start_interval

    def unchanged(self, pull: str) -> ApplyResult | None:
        """The running host as it is, when every container already matches the spec
        (see ``unchanged_start``); None when ``up`` has to converge."""
        return unchanged_start(self, pull)

    # ---- the runtime protocol (see pixsim_host.runtime) --------------------------------

    def service_names(self) -> list[str]:
        return sorted(self.project.services)

    def service_levels(self) -> list[list[str]]:
        return self.project.levels()

    def prepare(self, pull: str, progress: Progress) -> None:
        self._image_ids = self.ensure_images(pull, progress)

    def start(self, progress: Progress, deadline: float, *,
              verified_elsewhere: frozenset[str] = frozenset(),
              only: frozenset[str] | None = None) -> ApplyResult:
        if self._image_ids is None:
            self.prepare("missing", progress)
        assert self._image_ids is not None
        return self.apply(self._image_ids, progress, deadline, verified_elsewhere=verified_elsewhere,
                          only=only)

    def states(self) -> dict[str, ContainerState]:
        if self._engine is None and self._known_states is not None:
            return dict(self._known_states)  # read by `unchanged` just now, SDK not needed
        return self.containers()

    # ---- inspection -------------------------------------------------------------

    def _owned_filters(self) -> dict[str, Any]:
        return {"label": [f"{PROJECT_LABEL}={self.project.name}"]}

    def containers(self) -> dict[str, ContainerState]:
        """This host's containers by service (all states)."""
        from pixsim_host.runtime.engine_socket import EngineReadError

        self._await_precreation()  # all of them, also those being created for a later start

        if self.reader is not None:
            try:
                return self._containers(self.reader.containers(f"{PROJECT_LABEL}={self.project.name}"),
                                        self.reader.inspect_container)
            except EngineReadError:
                pass  # the SDK's path gives the engine's own error
        return self._containers(self.api.containers(all=True, filters=self._owned_filters()),
                                self.api.inspect_container)

    def _containers(self, summaries: list[dict[str, Any]],
                    inspect: Callable[[str], dict[str, Any] | None]) -> dict[str, ContainerState]:
        found: dict[str, ContainerState] = {}
        for summary in summaries:
            labels = summary.get("Labels") or {}
            owner = labels.get(HOST_ID_LABEL)
            if owner and owner != self.host_id:
                raise HostError(
                    f"Docker project {self.project.name!r} belongs to another host "
                    f"({labels.get('org.pixsim-host.host-name', '?')}, host_id {owner}); "
                    "two hosts cannot share a project name: init this host in another directory "
                    "with another --name"
                )
            service = labels.get(SERVICE_LABEL)
            if not service or labels.get("com.docker.compose.oneoff") == "True":
                # One-off containers (a migration, `docker compose run`) are not the service
                # itself, even when they carry its name and its image.
                continue
            data = inspect(summary["Id"])
            if data is not None:  # None: removed since the list
                found[service] = state_of(data, service)
        return found

    def _state(self, container_id: str, service: str) -> ContainerState:
        return state_of(self.api.inspect_container(container_id), service)

    # ---- images -----------------------------------------------------------------

    def image_id(self, image: str) -> str | None:
        data = self._inspect_image(image)
        return str(data["Id"]) if data else None

    def _inspect_image(self, image: str) -> dict[str, Any] | None:
        from pixsim_host.runtime.engine_socket import EngineReadError

        if self.reader is not None:
            with contextlib.suppress(EngineReadError):  # else the SDK gives the engine's error
                return self.reader.inspect_image(image)
        from docker.errors import ImageNotFound, NotFound

        try:
            return dict(self.api.inspect_image(image))
        except (ImageNotFound, NotFound):
            return None

    def ensure_images(self, policy: str, progress: Progress) -> dict[str, str]:
        """Image ids by service, pulling or building what the policy allows."""
        ids: dict[str, str] = {}
        settled: dict[str, str] = {}  # image -> id, as the policy wants it (services share images)
        for service in self.project.services.values():
            image = service.image
            if image in settled:
                ids[service.name] = settled[image]
                continue
            current = self.image_id(image)
            build = self.builds.get(image)
            if build is not None:
                wanted = build.digest()
                labels = ((self._inspect_image(image) or {}).get("Config") or {}).get("Labels") or {}
                if current is None or labels.get(CONTEXT_LABEL) != wanted:
                    progress(service.name, f"building {image}")
                    self._build(image, build, wanted)
            elif policy == "always" or (current is None and policy == "missing"):
                progress(service.name, f"pulling {image}")
                self._pull(image)
            elif current is None:
                raise HostError(
                    f"image {image} (service {service.name}) is not present and --pull never "
                    "forbids pulling it; load or build it, or run with --pull missing"
                )
            image_id = self.image_id(image)
            if image_id is None:
                raise HostError(f"image {image} is still missing after pulling; check its name")
            ids[service.name] = settled[image] = image_id
        return ids

    def _pull(self, image: str) -> None:
        from docker.errors import APIError

        repository, tag = _split_image(image)
        try:
            for event in self.api.pull(repository, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise HostError(_pull_error(image, str(event["error"])))
        except APIError as exc:
            raise HostError(_pull_error(image, str(exc.explanation or exc))) from None

    def _build(self, image: str, build: ImageBuild, digest: str) -> None:
        from docker.errors import APIError, BuildError

        if not (build.context / build.dockerfile).is_file():
            if not build.checkout:
                raise HostError(
                    f"cannot build {image}: the reference backend's Dockerfile is missing from this "
                    "installation; reinstall pixsim-host or set backend.image to your own image"
                )
            raise HostError(f"cannot build {image}: {build.context / build.dockerfile} does not exist; "
                            "fix backend.dockerfile (a path inside backend.source)")
        tail: list[str] = []
        try:
            for event in self.api.build(path=str(build.context), dockerfile=build.dockerfile, tag=image,
                                        rm=True, forcerm=True, decode=True,
                                        labels={CONTEXT_LABEL: digest}):
                if "stream" in event:
                    tail = (tail + str(event["stream"]).splitlines())[-15:]
                if "error" in event:
                    base = "python:3.11-slim" if not build.checkout else "its base images"
                    raise HostError(
                        f"building {image} failed: {str(event['error']).strip()}; {base} must be "
                        "present or pullable",
                        details="\n".join(tail),
                    )
        except (APIError, BuildError) as exc:
            raise HostError(f"building {image} failed: {exc}") from None

    # ---- desired state ----------------------------------------------------------

    def _create_body(self, service: ServiceSpec, image_id: str) -> dict[str, Any]:
        project = self.project.name
        labels = {
            **service.labels,
            PROJECT_LABEL: project,
            SERVICE_LABEL: service.name,
            "com.docker.compose.container-number": "1",
            "com.docker.compose.oneoff": "False",
            "com.docker.compose.project.working_dir": str(self.project.directory),
            HOST_ID_LABEL: self.host_id,
            "org.pixsim-host.image-id": image_id,
        }
        body: dict[str, Any] = {
            "Image": service.image,
            "Env": [f"{k}={v}" for k, v in sorted(service.environment.items())],
            "Labels": labels,
            "ExposedPorts": {f"{p.target}/{p.protocol}": {} for p in service.ports},
            "StopTimeout": int(service.stop_grace_period),
            "HostConfig": {
                "RestartPolicy": {"Name": service.restart if service.restart != "no" else ""},
                "NetworkMode": network_name(project),
                "PortBindings": {
                    f"{p.target}/{p.protocol}": [{"HostIp": p.host_ip, "HostPort": str(p.published)}]
                    for p in service.ports
                },
                "Mounts": [
                    {
                        "Type": m.type,
                        "Source": volume_name(project, m.source) if m.type == "volume" else m.source,
                        "Target": m.target,
                        "ReadOnly": m.read_only,
                    }
                    for m in service.mounts
                ],
            },
            "NetworkingConfig": {
                "EndpointsConfig": {network_name(project): {"Aliases": service.aliases}}
            },
        }
        if service.command is not None:
            body["Cmd"] = service.command
        if service.healthcheck is not None:
            check = service.healthcheck
            health: dict[str, Any] = {"Test": check.test}
            if check.test != ["NONE"]:
                health.update(Interval=int(check.interval * NS), Timeout=int(check.timeout * NS),
                              Retries=check.retries, StartPeriod=int(check.start_period * NS))
                if self._supports_start_interval():
                    # Docker 25+: probe every second while starting, so health is not bound to
                    # the interval. Older engines get active probing from wait_ready instead.
                    health["StartInterval"] = int((check.start_interval or 1.0) * NS)
            body["Healthcheck"] = health
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
        labels[HASH_LABEL] = digest
        return body

    # ---- apply ------------------------------------------------------------------

    def ensure_network_and_volumes(self) -> None:
        from docker.errors import NotFound

        project = self.project.name
        base = {PROJECT_LABEL: project, HOST_ID_LABEL: self.host_id}
        name = network_name(project)
        # Check every owner before creating anything: a refused host must leave nothing
        # behind (a network labelled with its host_id would lock the real owner out).
        missing: list[str] = []
        try:
            existing = self.api.inspect_network(name)
            self._check_owner(existing.get("Labels") or {}, f"network {name}")
        except NotFound:
            missing.append("")
        for key in self.project.volumes:
            vname = volume_name(project, key)
            try:
                existing = self.api.inspect_volume(vname)
                self._check_owner(existing.get("Labels") or {}, f"volume {vname}")
            except NotFound:
                missing.append(key)
        if "" in missing:
            self.api.create_network(
                name, driver="bridge", check_duplicate=True,
                labels={**self.project.network_labels, **base,
                        "com.docker.compose.network": "default"},
            )
        for key, labels in self.project.volumes.items():
            if key in missing:
                self.api.create_volume(
                    volume_name(project, key),
                    labels={**labels, **base, "com.docker.compose.volume": key},
                )

    def _check_owner(self, labels: dict[str, str], what: str) -> None:
        owner = labels.get(HOST_ID_LABEL)
        if owner and owner != self.host_id:
            raise HostError(
                f"{what} belongs to another host (host_id {owner}); this host cannot use it. "
                "Give this host another name with `pixsim-host init` in a new directory"
            )

    def apply(self, image_ids: dict[str, str], progress: Progress, deadline: float,
              verified_elsewhere: frozenset[str] = frozenset(),
              only: frozenset[str] | None = None) -> ApplyResult:
        """Converge containers on the spec, level by level, waiting for health between levels.

        Services in ``verified_elsewhere`` (the backend, checked over HTTP by the caller,
        which is faster and stricter than its container healthcheck) are started, not waited
        for. The returned watcher stays open so the caller still sees a crash; close it.
        """
        self._await_precreation()
        current = self.containers()
        self._preflight_ports(image_ids, current)
        self.ensure_network_and_volumes()
        if only is None and tls.PROXY in current and tls.PROXY not in self.project.services:
            # tls.mode was turned off: the proxy would go on holding tls.port.
            progress(tls.PROXY, "removing (tls.mode is off)")
            self._remove(current.pop(tls.PROXY))
        if only is not None:
            # The services started later (after the migrations) that have no container yet get
            # theirs created, not started, meanwhile: creating one takes tenths of a second.
            later = [name for level in self.project.levels() for name in level
                     if name not in only and name not in current]
            if later:
                self._precreation = threading.Thread(
                    target=self._precreate, args=(later, image_ids, progress), daemon=True)
                self._precreation.start()
        actions: dict[str, str] = {}
        watcher = EventWatcher(self.api, self.project.name)
        try:
            for level in self.project.levels():
                level = [name for name in level if only is None or name in only]
                if not level:
                    continue
                with ThreadPoolExecutor(max_workers=len(level)) as pool:
                    futures = {
                        name: pool.submit(self._converge, self.project.services[name],
                                          image_ids[name], current.get(name), progress)
                        for name in level
                    }
                    for name, future in futures.items():
                        actions[name], current[name] = future.result()
                waiting = [name for name in level if name not in verified_elsewhere]
                with ThreadPoolExecutor(max_workers=max(1, len(waiting))) as pool:
                    waits = [pool.submit(self.wait_ready, name, current[name], deadline,
                                         watcher, progress) for name in waiting]
                    for wait in waits:
                        wait.result()
        except BaseException:
            watcher.close()
            raise
        return ApplyResult(actions, current, watcher, self)

    def _precreate(self, names: list[str], image_ids: dict[str, str], progress: Progress) -> None:
        """Create (not start) these services' containers; any failure is left to converging,
        which creates them itself and says what went wrong."""
        for name in names:
            service = self.project.services[name]
            try:
                progress(name, "creating")
                created = self.api.create_container_from_config(
                    self._create_body(service, image_ids[name]),
                    name=container_name(self.project.name, name))
            except Exception:  # noqa: BLE001 - converging retries and reports it
                return
            self._precreated.add(str(created["Id"]))

    def discard_unstarted(self) -> None:
        """The containers _precreate made for a start that will not come (the migrations
        failed): removed while still never started, so the host is left as it was."""
        self._await_precreation()
        for container_id in sorted(self._precreated):
            try:
                state = self.api.inspect_container(container_id)["State"]["Status"]
            except Exception:  # noqa: BLE001 - gone already, or the engine: nothing to undo
                continue
            if state == "created":
                self.remove_container(container_id)
        self._precreated.clear()

    def _await_precreation(self) -> None:
        thread = self._precreation
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            self._precreation = None

    def _converge(self, service: ServiceSpec, image_id: str, existing: ContainerState | None,
                  progress: Progress) -> tuple[str, ContainerState]:
        body = self._create_body(service, image_id)
        wanted = body["Labels"][HASH_LABEL]
        if existing is not None and existing.config_hash == wanted:
            if existing.status == "running":
                return "unchanged", existing
            made_now = existing.id in self._precreated  # by _precreate, for this very start
            progress(service.name, "starting")
            self._start(service, existing.id)
            return "created" if made_now else "started", self._state(existing.id, service.name)
        action = "created"
        if existing is not None:
            progress(service.name, "recreating (config changed)")
            # v=False: a recreate never takes a volume with it. Killed before the create below,
            # the service has no container: the next `up` creates it.
            self.api.remove_container(existing.id, force=True, v=False)
            fault_point(f"docker.removed.{service.name}")
            action = "recreated"
        else:
            progress(service.name, "creating")
        from docker.errors import APIError

        try:
            created = self.api.create_container_from_config(
                body, name=container_name(self.project.name, service.name)
            )
        except APIError as exc:
            if exc.status_code == 409:
                raise HostError(
                    f"a container named {container_name(self.project.name, service.name)} "
                    "already exists and is not this host's; remove it (`docker rm -f NAME`) "
                    "or give this host another name"
                ) from None
            raise HostError(f"cannot create {service.name}: {exc.explanation or exc}") from None
        self._start(service, created["Id"])
        return action, self._state(created["Id"], service.name)

    def _start(self, service: ServiceSpec, container_id: str) -> None:
        from docker.errors import APIError

        try:
            self.api.start(container_id)
        except APIError as exc:
            text = str(exc.explanation or exc)
            if "port is already allocated" in text or "address already in use" in text:
                port = service.ports[0] if service.ports else None
                where = f"{port.host_ip}:{port.published}" if port else "its port"
                raise HostError(
                    f"{service.name} cannot listen on {where}: the port is already in use; "
                    "choose another with `pixsim-host config set backend.port PORT`"
                ) from None
            raise HostError(f"cannot start {service.name}: {text}") from None

    def _preflight_ports(self, image_ids: dict[str, str],
                         current: dict[str, ContainerState]) -> None:
        """Fail before anything is created if a port this host needs is taken by others."""
        from pixsim_host.ports import pick_port, port_is_free

        for service in self.project.services.values():
            existing = current.get(service.name)
            if existing is not None and existing.status in ("running", "restarting"):
                held = {p.split("->")[0].rsplit(":", 1)[-1] for p in existing.ports}
            else:
                held = set()
            for port in service.ports:
                if str(port.published) in held or port_is_free(port.host_ip, port.published):
                    continue
                holder = self._port_holder(port.published)
                suggestion = pick_port(port.host_ip, set(), start=port.published + 1)
                if service.labels.get("org.pixsim-host.role") == "http-service":
                    raise HostError(
                        f"port {port.published} on {port.host_ip} ({service.name}) is already in use "
                        f"by {holder}; free it, or give {service.name} another port in backend.services "
                        f"({{name: {service.name}, port: {suggestion}}})"
                    )
                raise HostError(
                    f"port {port.published} on {port.host_ip} is already in use by {holder}; "
                    f"free it, or move this host with `pixsim-host config set backend.port "
                    f"{suggestion}`"
                )

    def _port_holder(self, port: int) -> str:
        for summary in self.api.containers():
            for binding in summary.get("Ports") or []:
                if binding.get("PublicPort") == port:
                    labels = summary.get("Labels") or {}
                    name = (summary.get("Names") or ["?"])[0].lstrip("/")
                    host = labels.get("org.pixsim-host.host-name")
                    return f"container {name}" + (f" of pixsim host {host!r}" if host else "")
        return f"another program (see `ss -ltnp 'sport = :{port}'`)"

    # ---- waiting ----------------------------------------------------------------

    def wait_ready(self, service: str, state: ContainerState, deadline: float,
                   watcher: EventWatcher, progress: Progress) -> None:
        """Return when ``service`` is healthy; fail at once if its container dies."""
        spec = self.project.services[service]
        check = spec.healthcheck
        progress(service, "waiting for health")
        active = check is not None and check.test != ["NONE"]
        # PostgreSQL and Redis are asked directly, in their own protocol, every 0.1 s: the
        # engine runs their healthchecks once a second at best (readiness.py).
        ready_now = self._readiness_probe(service, state.id) if active else None
        while True:
            watcher.raise_if_died(self, state.id, service)
            current = self._state(state.id, service)
            if current.status in ("exited", "dead") or current.restart_count > state.restart_count:
                raise self.failure(service, f"exited with code {current.exit_code} while starting")
            if current.status == "running":
                if not active:
                    progress(service, "running")
                    return
                if current.health == "healthy":
                    progress(service, "healthy")
                    return
                if current.health == "unhealthy":
                    raise self.failure(service, "is unhealthy (its healthcheck keeps failing)")
                if ready_now is not None and ready_now():
                    progress(service, "healthy")
                    return
                if ready_now is None and not self.engine.supports_start_interval \
                        and check is not None and self._probe(state.id, check.test, check.timeout):
                    progress(service, "healthy")
                    return
            if time.monotonic() > deadline:
                raise self.failure(service, "did not become healthy before the timeout (--timeout)")
            time.sleep(0.1 if ready_now is not None else 0.2)

    def _readiness_probe(self, service: str, container_id: str,
                         inspected: dict[str, Any] | None = None) -> Callable[[], bool] | None:
        """A direct readiness check of db or redis at its container's address, if it has one."""
        from pixsim_host.runtime import readiness

        if service not in ("db", "redis"):
            return None
        data = inspected if inspected is not None else self.api.inspect_container(container_id)
        networks = (data.get("NetworkSettings") or {}).get("Networks") or {}
        address = next((str(net["IPAddress"]) for net in networks.values() if net.get("IPAddress")),
                       None)
        if address is None:
            return None
        if service == "db":
            return lambda: readiness.postgres_ready(address, 5432, self.db_user, self.db_name)
        password = self.secrets.get("REDIS_PASSWORD")
        return lambda: readiness.redis_ready(address, 6379, password)

    def probe_health(self, state: ContainerState) -> str | None:
        """The health the service would report if its check ran now."""
        spec = self.project.services.get(state.service)
        if spec is None or spec.healthcheck is None or spec.healthcheck.test == ["NONE"]:
            return state.health
        ok = self._probe(state.id, spec.healthcheck.test, spec.healthcheck.timeout)
        return "healthy" if ok else "starting"

    def _probe(self, container_id: str, test: list[str], timeout: float) -> bool:
        """Run the healthcheck's command now, as the engine would."""
        from docker.errors import APIError

        command = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
        try:
            exec_id = self.api.exec_create(container_id, command, stdout=True, stderr=True)["Id"]
            self.api.exec_start(exec_id)
            return bool(self.api.exec_inspect(exec_id).get("ExitCode") == 0)
        except APIError:
            return False

    def failure(self, service: str, reason: str, tail: int = 30) -> ServiceFailure:
        return ServiceFailure(service, reason, self.log_tail(service, tail))

    def log_tail(self, service: str, tail: int = 30) -> str:
        from pixsim_host.envfile import redact

        try:
            state = self.containers().get(service)
            if state is None:
                return ""
            raw = self.api.logs(state.id, stdout=True, stderr=True, tail=tail)
        except Exception:  # logs are a courtesy on an error path; never mask the real error
            return ""
        return redact(raw.decode("utf-8", "replace"), self.secrets.values())

    # ---- other lifecycle --------------------------------------------------------

    def stop_and_remove(self, progress: Progress) -> list[str]:
        """Stop every container at once, then remove them and the network.

        All at once rather than in reverse dependency order: each service shuts down
        cleanly on its own signal (PostgreSQL's fast shutdown, Redis' save, the backend's
        SIGTERM), and nothing is served meanwhile, so waiting for one before signalling
        the next only makes `down` slower.
        """
        targets = sorted(self.containers().values(), key=lambda state: state.service)
        for state in targets:
            progress(state.service, "stopping")
        with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
            list(pool.map(self._remove, targets))
        removed = [state.name for state in targets]
        if self.reader is not None:  # the SDK is not needed to stop and remove
            status, message = self.reader.change("DELETE", f"/networks/{network_name(self.project.name)}")
            if status not in (204, 404):
                raise HostError(f"cannot remove network {network_name(self.project.name)}: "
                                f"{message or f'HTTP {status}'}")
            return removed
        from docker.errors import APIError, NotFound

        try:
            self.api.remove_network(network_name(self.project.name))
        except NotFound:
            pass
        except APIError as exc:
            raise HostError(f"cannot remove network {network_name(self.project.name)}: "
                            f"{exc.explanation or exc}") from None
        return removed

    def _remove(self, state: ContainerState) -> None:
        spec = self.project.services.get(state.service)
        timeout = int(spec.stop_grace_period) if spec else 10
        if self.reader is not None:
            steps = [("POST", f"/containers/{state.id}/stop?t={timeout}", (204, 304, 404), "stop"),
                     ("DELETE", f"/containers/{state.id}?force=1", (204, 404), "remove")]
            if state.status not in ("running", "restarting", "paused"):
                steps = steps[1:]
            for method, path, fine, what in steps:
                status, message = self.reader.change(method, path, timeout=timeout + 60)
                if status not in fine:
                    raise HostError(f"cannot {what} {state.name}: {message or f'HTTP {status}'}")
            return
        if state.status in ("running", "restarting", "paused"):
            self.api.stop(state.id, timeout=timeout)
        self.api.remove_container(state.id, v=False, force=True)

    def volumes(self) -> list[str]:
        found = self.api.volumes(filters={"label": f"{PROJECT_LABEL}={self.project.name}"})
        names = []
        for volume in found.get("Volumes") or []:
            owner = (volume.get("Labels") or {}).get(HOST_ID_LABEL)
            if owner in (None, self.host_id):
                names.append(str(volume["Name"]))
        return sorted(names)

    def remove_volumes(self, names: list[str]) -> None:
        for name in names:
            self.api.remove_volume(name)

    def restart(self, services: list[str], progress: Progress) -> None:
        current = self.containers()
        for name in services:
            if name not in current:
                raise HostError(f"service {name!r} has no container; run `pixsim-host up` first")
            progress(name, "restarting")
            spec = self.project.services.get(name)
            self.api.restart(current[name].id, timeout=int(spec.stop_grace_period) if spec else 10)

    def stream_logs(self, services: list[str], tail: int, follow: bool) -> Iterator[tuple[str, str]]:
        """(service, line) pairs; several services are merged as lines arrive."""
        from pixsim_host.envfile import redact

        current = self.containers()
        targets = [current[name] for name in services if name in current]
        secrets = list(self.secrets.values())
        lines: queue.Queue[tuple[str, str] | None] = queue.Queue()

        def pump(state: ContainerState) -> None:
            try:
                stream = self.api.logs(state.id, stdout=True, stderr=True, stream=True,
                                       follow=follow, tail=tail)
                buffer = b""
                for chunk in stream:
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        lines.put((state.service, redact(line.decode("utf-8", "replace"), secrets)))
                if buffer:
                    lines.put((state.service, redact(buffer.decode("utf-8", "replace"), secrets)))
            finally:
                lines.put(None)

        for state in targets:
            threading.Thread(target=pump, args=(state,), daemon=True).start()
        finished = 0
        while finished < len(targets):
            item = lines.get()
            if item is None:
                finished += 1
                continue
            yield item


    # ---- data in and out (backup and restore) ------------------------------------

    def export_proxy_ca(self, target: Path, deadline: float) -> None:
        """Copy the proxy's local CA root certificate (made by Caddy as it starts) out of its
        container to ``target`` (0600)."""
        import tempfile

        container = self.running_container(tls.PROXY)
        with tempfile.TemporaryDirectory(dir=target.parent) as work:
            copy = Path(work) / "root.crt"
            while True:
                try:
                    self.copy_out(container, tls.container_root_certificate(), copy)
                    break
                except HostError:
                    if time.monotonic() > deadline:
                        raise self.failure(tls.PROXY, "made no local CA before the timeout "
                                                      "(--timeout)") from None
                    time.sleep(0.2)
            from pixsim_host.fsutil import atomic_write

            atomic_write(target, copy.read_bytes(), mode=0o600)

    def running_container(self, service: str) -> str:
        state = self.containers().get(service)
        if state is None or state.status != "running":
            raise HostError(f"service {service!r} is not running; start the host with `pixsim-host up`")
        return state.id

    def exec_to_file(self, container_id: str, command: list[str], target: Path,
                     environment: dict[str, str] | None = None) -> str:
        """Run ``command`` in the container, streaming its stdout into ``target``.

        Returns its stderr. The output never sits whole in memory: a database dump can be
        larger than the machine's RAM.
        """
        exec_id = self.api.exec_create(container_id, command, stdout=True, stderr=True,
                                       environment=environment)["Id"]
        errors: list[bytes] = []
        with target.open("wb") as handle:
            for out, err in self.api.exec_start(exec_id, stream=True, demux=True):
                if out:
                    handle.write(out)
                if err:
                    errors.append(err)
        stderr = b"".join(errors).decode("utf-8", "replace")
        code = self.api.exec_inspect(exec_id).get("ExitCode")
        if code != 0:
            raise HostError(f"{command[0]} failed in the container (exit {code}): "
                            f"{_first_line(stderr)}")
        return stderr

    def exec_run(self, container_id: str, command: list[str],
                 environment: dict[str, str] | None = None) -> str:
        """Run ``command`` in the container; its output, or a HostError if it failed."""
        exec_id = self.api.exec_create(container_id, command, stdout=True, stderr=True,
                                       environment=environment)["Id"]
        output = self.api.exec_start(exec_id).decode("utf-8", "replace")
        code = self.api.exec_inspect(exec_id).get("ExitCode")
        if code != 0:
            raise ContainerCommandFailed(command[0], code, output)
        return str(output)

    def copy_out(self, container_id: str, path: str, target: Path) -> None:
        """Copy one file out of a container to ``target`` (streamed)."""
        import tarfile
        import tempfile

        from docker.errors import NotFound

        try:
            stream, _ = self.api.get_archive(container_id, path)
        except NotFound:
            raise HostError(f"{path} does not exist in the container") from None
        with tempfile.TemporaryFile() as spool:
            for chunk in stream:
                spool.write(chunk)
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r|") as archive:
                for member in archive:
                    if member.isfile():
                        source = archive.extractfile(member)
                        assert source is not None
                        with target.open("wb") as handle:
                            shutil.copyfileobj(source, handle)
                        return
        raise HostError(f"{path} in the container is not a regular file")

    def copy_in(self, container_id: str, directory: str, files: dict[str, Path]) -> None:
        """Copy host files into a (possibly stopped) container's ``directory``."""
        import tarfile
        import tempfile

        with tempfile.TemporaryFile() as spool:
            with tarfile.open(fileobj=spool, mode="w") as archive:
                for name, path in files.items():
                    info = archive.gettarinfo(str(path), arcname=name)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mode = 0o644
                    with path.open("rb") as handle:
                        archive.addfile(info, handle)
            spool.seek(0)
            if not self.api.put_archive(container_id, directory, spool):
                raise HostError(f"could not copy files into {directory} in the container")

    def oneoff(self, service: str, command: list[str], image_id: str) -> str:
        """A stopped helper container with the service's image and volumes, no network.

        Used to prepare a volume's data before the service itself first starts.
        """
        spec = self.project.services[service]
        body = self._create_body(spec, image_id)
        body["Cmd"] = command
        body.pop("Healthcheck", None)
        body["ExposedPorts"] = {}
        body["Labels"] = {**body["Labels"], SERVICE_LABEL: f"{service}-oneoff",
                          "com.docker.compose.oneoff": "True", HASH_LABEL: ""}
        body["HostConfig"] = {**body["HostConfig"], "PortBindings": {}, "NetworkMode": "none",
                              "RestartPolicy": {"Name": ""}}
        body["NetworkingConfig"] = {}
        created = self.api.create_container_from_config(body, name=None)
        return str(created["Id"])

    # ---- the backend's own jobs (migrations) and exec ---------------------------------

    def backend_code(self) -> str:
        """What identifies the backend's code: its image id (new image, new code)."""
        if self._image_ids is None:
            self.prepare("missing", lambda service, message: None)
        assert self._image_ids is not None
        return self._image_ids.get(BACKEND, "")

    def available_extensions(self) -> set[str]:
        """The PostgreSQL extensions the running database server could create."""
        db = self.running_container("db")
        output = self.exec_run(db, ["psql", "-X", "-q", "-t", "-A", "-U", self.db_user, "-d", self.db_name,
                                    "-c", "SELECT name FROM pg_available_extensions"])
        return {line.strip() for line in output.splitlines() if line.strip()}

    def run_job(self, name: str, argv: list[str], deadline: float, progress: Progress) -> tuple[int, str]:
        """Run ``argv`` to completion in a one-off container of the backend: same image,
        environment, volumes and network. Returns its exit code and its output (masked)."""
        from docker.errors import APIError

        from pixsim_host.envfile import redact

        body = self._oneoff_body(BACKEND, argv, f"{BACKEND}-{name}")
        progress(BACKEND, f"{name}: {' '.join(argv)}")
        container = str(self.api.create_container_from_config(body, name=None)["Id"])
        try:
            self.api.start(container)
            remaining = max(1.0, deadline - time.monotonic())
            try:
                code = int(self.api.wait(container, timeout=remaining).get("StatusCode", 1))
            except Exception as exc:  # requests' ReadTimeout: the job outlived --timeout
                if isinstance(exc, APIError):
                    raise
                raise HostError(f"{name} ({' '.join(argv)}) did not finish before the timeout; "
                                "retry with a larger --timeout") from None
            output = self.api.logs(container, stdout=True, stderr=True).decode("utf-8", "replace")
        finally:
            self.remove_container(container)
        return code, redact(output, self.secrets.values())

    def exec_service(self, service: str, argv: list[str], interactive: bool) -> int:
        """Run ``argv`` in ``service``'s environment; its exit code.

        In the running container when there is one; for the backend and its workers
        otherwise in a one-off container of the same image, environment, volumes and network
        (what `docker compose run --rm` does), so a host whose first migration failed can be
        repaired. Standard input is passed on; on a terminal the Docker CLI relays the TTY.
        """
        import os
        import shutil
        import subprocess

        extra = self._exec_environment(service)
        state = self.containers().get(service)
        docker_cli = shutil.which("docker")
        if state is not None and state.status == "running":
            if interactive and docker_cli:
                # A terminal session needs a pseudo-terminal relay: the CLI is that relay. The
                # variables' values travel in its environment, never on its command line.
                names = [arg for name in extra for arg in ("-e", name)]
                return subprocess.run([docker_cli, "exec", "-it", *names, state.id, *argv],
                                      env={**os.environ, **extra}, check=False).returncode
            exec_id = self.api.exec_create(state.id, argv, stdin=True, stdout=True, stderr=True,
                                           tty=False, environment=extra or None)["Id"]
            self._relay(self.api.exec_start(exec_id, socket=True))
            return int(self.api.exec_inspect(exec_id).get("ExitCode") or 0)
        if service not in self.project.services or service in ("db", "redis"):
            # Their data is theirs alone: never a second PostgreSQL or Redis on it.
            raise HostError(f"service {service!r} is not running; start the host with `pixsim-host up`")
        body = self._oneoff_body(service, argv, f"{service}-exec")
        body.update(AttachStdin=True, AttachStdout=True, AttachStderr=True, OpenStdin=True,
                    StdinOnce=True, Tty=bool(interactive and docker_cli))
        container = str(self.api.create_container_from_config(body, name=None)["Id"])
        try:
            if body["Tty"]:
                assert docker_cli is not None
                subprocess.run([docker_cli, "start", "-ai", container], check=False)
            else:
                sock = self.api.attach_socket(container, params={"stdin": 1, "stdout": 1,
                                                                 "stderr": 1, "stream": 1})
                self.api.start(container)
                self._relay(sock)
            return int(self.api.wait(container).get("StatusCode", 1))
        finally:
            self.remove_container(container)

    def _exec_environment(self, service: str) -> dict[str, str]:
        """What a command in ``service`` needs besides the container's own variables."""
        if service != "db":
            return {}
        # psql (and pg_dump, ...) connect as the host's role, to its database, without arguments.
        return {"PGUSER": self.db_user, "PGDATABASE": self.db_name, "PGHOST": "127.0.0.1",
                "PGPASSWORD": self.secrets.get("POSTGRES_PASSWORD", "")}

    def _oneoff_body(self, service: str, argv: list[str], role: str) -> dict[str, Any]:
        """A one-off container of ``service``: its image, environment, volumes and network."""
        spec = self.project.services[service]
        image_id = self.backend_code() if service == BACKEND else (self._image_ids or {}).get(service) \
            or self.backend_code()
        body = self._create_body(spec, image_id)
        body["Cmd"] = argv
        body.pop("Healthcheck", None)
        body["ExposedPorts"] = {}
        body["Labels"] = {**body["Labels"], SERVICE_LABEL: role, "com.docker.compose.oneoff": "True",
                          HASH_LABEL: ""}
        body["HostConfig"] = {**body["HostConfig"], "PortBindings": {}, "RestartPolicy": {"Name": ""}}
        body["NetworkingConfig"] = {"EndpointsConfig": {network_name(self.project.name): {}}}
        return body

    def _relay(self, sock: Any) -> None:
        """Standard input into a hijacked engine connection, its output (masked) out of it."""
        import os
        import socket
        import sys

        from docker.utils.socket import frames_iter

        from pixsim_host.envfile import redact

        raw = getattr(sock, "_sock", sock)

        def pump() -> None:
            try:
                fd = sys.stdin.fileno()
                while chunk := os.read(fd, 65536):
                    raw.sendall(chunk)
            except (OSError, ValueError, AttributeError):
                pass  # no standard input (closed, or not a file): the command gets EOF
            finally:
                with contextlib.suppress(OSError):
                    raw.shutdown(socket.SHUT_WR)

        threading.Thread(target=pump, daemon=True).start()
        secrets = list(self.secrets.values())
        try:
            for stream, data in frames_iter(sock, False):  # type: ignore[no-untyped-call]
                target = sys.stderr if stream == 2 else sys.stdout
                target.write(redact(data.decode("utf-8", "replace"), secrets))
                target.flush()
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def remove_container(self, container_id: str) -> None:
        from docker.errors import NotFound

        with contextlib.suppress(NotFound):
            self.api.remove_container(container_id, force=True, v=False)

    def start_container(self, container_id: str) -> None:
        self.api.start(container_id)

    def dump_database(self, target: Path, progress: Progress) -> None:
        db = self.running_container("db")
        progress("db", "dumping the database (pg_dump, custom format)")
        # Uncompressed (-Z0): the bundle's gzip compresses it, and backup scans it for secrets.
        self.exec_to_file(db, ["pg_dump", "-Fc", "-Z0", "-U", self.db_user, "-d", self.db_name],
                          target)

    def dump_redis(self, target: Path, progress: Progress) -> None:
        redis = self.running_container("redis")
        progress("redis", "saving and copying the Redis data")
        self.exec_run(redis, ["redis-cli", "SAVE"])
        self.copy_out(redis, "/data/dump.rdb", target)

    def load_redis(self, rdb: Path, deadline: float, progress: Progress) -> None:
        from pixsim_host.runtime import wait_until

        if self._image_ids is None:
            self.prepare("missing", progress)
        assert self._image_ids is not None
        self.ensure_network_and_volumes()
        progress("redis", "loading the Redis data into its volume")
        helper = self.oneoff("redis", ["redis-server", "--appendonly", "no", "--dir", "/data",
                                       "--save", "", "--port", "6399", "--bind", "127.0.0.1"],
                             self._image_ids["redis"])
        try:
            self.copy_in(helper, "/data", {"dump.rdb": rdb})
            self.start_container(helper)
            wait_until(lambda: self._redis_ping(helper), deadline, "the Redis loader")
            # Rebuild the append-only file from the loaded data: Redis ignores dump.rdb at
            # start-up when appendonly is on, so this is what makes the data survive.
            self.exec_run(helper, ["redis-cli", "-p", "6399", "CONFIG", "SET", "appendonly", "yes"])
            wait_until(lambda: self._aof_done(helper), deadline, "the Redis append-only rewrite")
            self.exec_run(helper, ["redis-cli", "-p", "6399", "SAVE"])
        finally:
            self.remove_container(helper)

    def _redis_ping(self, container: str) -> bool:
        try:
            return "PONG" in self.exec_run(container, ["redis-cli", "-p", "6399", "PING"])
        except HostError:
            return False

    def _aof_done(self, container: str) -> bool:
        from pixsim_host.runtime import aof_rewritten

        return aof_rewritten(self.exec_run(container, ["redis-cli", "-p", "6399", "INFO", "persistence"]))

    def restore_database(self, dump: Path, progress: Progress) -> None:
        db = self.running_container("db")
        progress("db", "restoring the database (pg_restore)")
        self.copy_in(db, "/tmp", {"pixsim-restore.dump": dump})
        try:
            self.exec_run(db, ["pg_restore", "--clean", "--if-exists", "--no-owner", "--exit-on-error",
                               "-U", self.db_user, "-d", self.db_name, "/tmp/pixsim-restore.dump"])
        except ContainerCommandFailed as exc:
            if "unsupported version" not in exc.output:  # pg_restore's own words
                raise
            # The dump is newer than this image's pg_restore reads (a native host's PostgreSQL
            # 16 dump, a PostgreSQL 15 image): convert it to SQL with a newer local pg_restore.
            self._restore_as_sql(db, dump, progress)
        finally:
            with contextlib.suppress(HostError):
                self.exec_run(db, ["rm", "-f", "/tmp/pixsim-restore.dump"])

    def _restore_as_sql(self, db: str, dump: Path, progress: Progress) -> None:
        import subprocess
        import tempfile

        from pixsim_host.runtime.native import local_pg_tool

        converter = local_pg_tool("pg_restore")
        if converter is None:
            raise HostError(
                "the bundle's database dump was made by a newer pg_dump than this host's database "
                "image reads; use a database.image of PostgreSQL 16 or newer, or install "
                "`pixsim-host[native]` so pixsim-host can convert the dump"
            )
        progress("db", "the dump is newer than the image's pg_restore: converting it to SQL with "
                       f"{converter}")
        with tempfile.TemporaryDirectory(prefix="pixsim-restore-sql-") as tmp:
            script = Path(tmp) / "pixsim-restore.sql"
            proc = subprocess.run([str(converter), "--clean", "--if-exists", "--no-owner", "-f",
                                   str(script), str(dump)], capture_output=True, text=True,
                                  timeout=3600, check=False)
            if proc.returncode != 0:
                raise HostError(f"converting the dump with {converter} failed: "
                                f"{_first_line(proc.stderr)}; use a database.image of PostgreSQL 16 "
                                "or newer")
            self.copy_in(db, "/tmp", {"pixsim-restore.sql": script})
        try:
            self.exec_run(db, ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", self.db_user,
                               "-d", self.db_name, "-f", "/tmp/pixsim-restore.sql"])
        finally:
            with contextlib.suppress(HostError):
                self.exec_run(db, ["rm", "-f", "/tmp/pixsim-restore.sql"])

    def dump_home(self, target: Path, progress: Progress) -> None:
        """The backend's PIXSIM_HOME (volume backend-data at /data) streamed into ``target``,
        a tar whose names are relative to the home."""
        from pixsim_host.bundle_data import IterReader, relative_home_archive

        state = self.containers().get(BACKEND)
        if state is None:
            raise HostError("the backend container does not exist; start the host with `pixsim-host up`")
        progress(BACKEND, "archiving PIXSIM_HOME (the backend-data volume)")
        stream, _ = self.api.get_archive(state.id, HOME_MOUNT)
        for name in relative_home_archive(IterReader(iter(stream)), target, HOME_MOUNT.strip("/")):
            progress(BACKEND, f"left out {name} (a link out of PIXSIM_HOME or a special file)")

    def load_home(self, archive: Path, progress: Progress) -> None:
        """Fill the fresh backend-data volume with a (checked) home archive, before the backend starts."""
        from pixsim_host.bundle_data import check_home_archive

        count = check_home_archive(archive)
        if self._image_ids is None:
            self.prepare("missing", progress)
        assert self._image_ids is not None
        self.ensure_network_and_volumes()
        progress(BACKEND, f"loading PIXSIM_HOME ({count} files) into its volume")
        helper = self.oneoff(BACKEND, ["true"], self._image_ids[BACKEND])
        try:
            with archive.open("rb") as handle:
                if not self.api.put_archive(helper, HOME_MOUNT, handle):
                    raise HostError(f"could not copy PIXSIM_HOME into {HOME_MOUNT} in the container")
        finally:
            self.remove_container(helper)

    def schema_revisions(self) -> dict[str, list[str]]:
        """Every migration chain's recorded revisions (alembic-style version tables)."""
        from pixsim_host.bundle_data import read_schema_revisions

        db = self.running_container("db")
        return read_schema_revisions(lambda sql: self.exec_run(
            db, ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-U", self.db_user,
                 "-d", self.db_name, "-c", sql]))

    def empty_database(self) -> None:
        db = self.running_container("db")
        # Two -c: psql runs each alone, and DROP DATABASE refuses to run in a transaction.
        self.exec_run(db, ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", self.db_user,
                           "-d", "postgres",
                           "-c", f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)',
                           "-c", f'CREATE DATABASE "{self.db_name}" OWNER "{self.db_user}"'])

    def server_version(self) -> str:
        db = self.running_container("db")
        return self.exec_run(db, ["psql", "-X", "-At", "-U", self.db_user, "-d", self.db_name,
                                  "-c", "SHOW server_version"]).strip()

    def set_database_password(self, password: str) -> None:
        # Passed through the environment, never the command line.
        db = self.running_container("db")
        self.exec_run(db, ["sh", "-c", _SET_PASSWORD_SCRIPT],
                      environment={"PGUSER": self.db_user, "PGDATABASE": self.db_name,
                                   "NEW_PASSWORD": password})

    def restamp_identity(self, host_id: str) -> None:
        from pixsim_host.runtime import restamp_sql

        db = self.running_container("db")
        self.exec_run(db, ["psql", "-v", "ON_ERROR_STOP=1", "-q", "-U", self.db_user,
                           "-d", self.db_name, "-c", restamp_sql(host_id)])

    def project_resources(self) -> tuple[list[str], list[str]]:
        """(containers, volumes) of this host's project: what a fresh restore must not find."""
        label = f"{PROJECT_LABEL}={self.project.name}"
        containers = [c["Id"] for c in self.api.containers(all=True, filters={"label": [label]})]
        volumes = [v["Name"] for v in (self.api.volumes(filters={"label": label}).get("Volumes") or [])]
        return containers, volumes


# psql interpolates :"role" and :'pw' (quoted safely) only in input it reads, not in -c.
_SET_PASSWORD_SCRIPT = (
    'psql -v ON_ERROR_STOP=1 -q -v pw="$NEW_PASSWORD" -v role="$PGUSER" <<\'SQL\'\n'
    "ALTER ROLE :\"role\" PASSWORD :'pw';\n"
    "SQL\n"
)


def check_project_unused(api: Any, project: str) -> None:
    """A new host must not adopt another's containers or volumes (the origin may run here)."""
    label = f"{PROJECT_LABEL}={project}"
    if api.containers(all=True, filters={"label": [label]}) or (
            api.volumes(filters={"label": label}).get("Volumes")):
        raise HostError(
            f"Docker project {project!r} already has containers or volumes on this engine "
            "(is the origin host still here?); `pixsim-host down --volumes` it first, or make a "
            "new host from the bundle with `pixsim-host clone`"
        )


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


class EventWatcher:
    """Engine events for one project, so a container that dies fails ``up`` at once."""

    def __init__(self, api: Any, project: str) -> None:
        self._died: dict[str, int] = {}
        self._lock = threading.Lock()
        # `since` has a one-second resolution; events older than this watcher (such as
        # the stop of a restart that just happened) are dropped by their timeNano.
        self._start_ns = time.time_ns()
        self._stream = api.events(
            since=int(time.time()) - 1,
            filters={"type": "container", "label": [f"{PROJECT_LABEL}={project}"],
                     "event": ["die", "oom"]},
            decode=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                if int(event.get("timeNano") or 0) < self._start_ns:
                    continue
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                with self._lock:
                    self._died[str(event.get("id"))] = int(attributes.get("exitCode", -1) or -1)
        except Exception:  # the stream closes when the watcher does; nothing to report
            return

    def raise_if_died(self, runtime: DockerRuntime, container_id: str, service: str) -> None:
        with self._lock:
            code = self._died.get(container_id)
        if code is not None:
            raise runtime.failure(service, f"exited with code {code} while starting")

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a finished stream is fine
            self._stream.close()


def _split_image(image: str) -> tuple[str, str]:
    if "@" in image:
        repository, digest = image.split("@", 1)
        return repository, digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = image.rsplit(":", 1)
        return repository, tag
    return image, "latest"


def _pull_error(image: str, reason: str) -> str:
    first = reason.strip().splitlines()[0] if reason.strip() else "unknown error"
    return (f"cannot pull image {image}: {first}; check the image name and your network, or "
            "load/build it locally and run with --pull never")


# ---- `up` on a host that already runs as configured --------------------------------------
# `up` on a Docker host that already runs exactly as configured: read, don't converge.
#
# Most `up`s change nothing (a boot unit, a script, a user making sure). Converging reads the
# same things and then does nothing, but through the Docker SDK (imported and connected:
# about a quarter of a second) and a dozen engine calls. Here the engine's view is read over
# its unix socket with the standard library (``engine_socket``): the project's containers
# (one list call, filtered by the project's label), each one's inspect, and each image's. The
# host counts as unchanged only when
#
# * every service of the spec has exactly one container, this host's, and no other service
#   has one;
# * every image is present (and a built one was built from the current context), and each
#   container carries the config hash that converging would give it now, image id included
#   (so a re-tagged image, an edited compose.yaml or plugins folder means converging);
# * every container runs, and every service with a healthcheck (the backend aside, which the
#   caller verifies over HTTP) reports healthy; db and redis, while the engine's first check
#   is still pending (a whole interval before Docker 25), answer their own protocol instead.
#
# Anything else, a failed read included, returns None and `up` converges as always. Nothing
# here writes to the engine. The caller still verifies the backend's health, identity and
# plugins over HTTP, as on every `up`.


class _NoEvents(EventWatcher):
    """Nothing was started, so there are no deaths to hear of; check_alive reads instead."""

    def __init__(self) -> None:  # no event stream
        pass

    def raise_if_died(self, runtime: DockerRuntime, container_id: str, service: str) -> None:
        del runtime, container_id, service

    def close(self) -> None:
        pass


@dataclass
class UnchangedResult(ApplyResult):
    reader: SocketEngine | None = field(default=None, repr=False)

    def check_alive(self, service: str) -> None:
        assert self.runtime is not None and self.reader is not None
        started = self.containers[service]
        from pixsim_host.runtime.engine_socket import EngineReadError

        try:
            data = self.reader.inspect_container(started.id)
        except EngineReadError:
            return  # the engine is busy: the HTTP probes that follow tell the truth anyway
        if data is None:
            raise self.runtime.failure(service, "lost its container while being verified")
        current = state_of(data, service)
        if current.status in ("exited", "dead") or current.restart_count > started.restart_count:
            raise self.runtime.failure(service, f"exited with code {current.exit_code} while starting")

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


def unchanged_start(runtime: DockerRuntime, pull: str) -> UnchangedResult | None:
    """The host's containers if nothing needs converging (module docstring), else None."""
    from pixsim_host.runtime.engine_socket import EngineReadError, open_socket_engine

    if pull == "always":
        return None  # the images may have moved upstream: only a pull can tell
    reader = runtime.reader or open_socket_engine()
    if reader is None:
        return None
    try:
        states = _matching_states(runtime, reader)
    except EngineReadError:
        states = None
    if states is None:
        reader.close()
        return None
    runtime._known_states = states
    return UnchangedResult({name: "unchanged" for name in states}, states, _NoEvents(), runtime,
                           reader=reader)


def _matching_states(runtime: DockerRuntime, reader: SocketEngine) -> dict[str, ContainerState] | None:
    services = runtime.project.services
    summaries: dict[str, str] = {}  # service -> container id
    for summary in reader.containers(f"{PROJECT_LABEL}={runtime.project.name}"):
        labels = summary.get("Labels") or {}
        if labels.get("com.docker.compose.oneoff") == "True":
            continue
        name = labels.get(SERVICE_LABEL)
        if labels.get(HOST_ID_LABEL) != runtime.host_id or name not in services or name in summaries:
            return None  # another host's, a service the spec dropped, a duplicate: converge
        summaries[str(name)] = str(summary["Id"])
    if set(summaries) != set(services):
        return None
    image_ids: dict[str, str] = {}
    for image in sorted({service.image for service in services.values()}):
        found = reader.inspect_image(image)
        if found is None:
            return None
        build = runtime.builds.get(image)
        if build is not None and ((found.get("Config") or {}).get("Labels") or {}) \
                .get(CONTEXT_LABEL) != build.digest():
            return None  # the build context changed: converging rebuilds it
        image_ids[image] = str(found["Id"])
    runtime._read_api_version = reader.api_version
    states: dict[str, ContainerState] = {}
    for name, service in sorted(services.items()):
        wanted = runtime._create_body(service, image_ids[service.image])["Labels"][HASH_LABEL]
        data = reader.inspect_container(summaries[name])
        if data is None:
            return None
        state = state_of(data, name)
        checked = service.healthcheck is not None and service.healthcheck.test != ["NONE"]
        if state.config_hash != wanted or state.status != "running":
            return None
        if checked and name != BACKEND and state.health != "healthy":
            # Before Docker 25 the engine's first check waits a whole interval: db and redis
            # are asked directly instead, as converging's wait does.
            ready_now = runtime._readiness_probe(name, state.id, data) \
                if state.health == "starting" else None
            if ready_now is None or not ready_now():
                return None
        states[name] = state
    runtime._image_ids = {name: image_ids[service.image] for name, service in services.items()}
    return states
