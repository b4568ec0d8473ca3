"""How a rendered host runs: the boundary every runtime shares.

``stack`` (up, status, down, restart, logs), ``doctor`` and ``backup`` (backup, restore,
clone) are written once against :class:`Runtime`; ``stack.open_runtime`` is the one place
that picks a runtime from the config. A runtime knows how the host's services (``db``,
``redis``, ``backend``) are started, stopped and inspected, and where its backend answers:

- ``DockerRuntime`` (``runtime/docker.py``): containers on a Docker Engine, from the
  rendered ``compose.yaml``;
- ``NativeRuntime`` (``runtime/native.py``): local processes (PostgreSQL and Redis from
  the ``native`` extra or the user's binaries), data under the host directory;
- ``KubernetesRuntime`` (``runtime/kubernetes.py``): the rendered ``kubernetes/`` folder
  applied with kubectl, workloads rolled out, the backend reached through a port-forward
  or its public URL.

What a runtime may lack is a capability it declares (``moves_data``: backup, restore and
clone); :func:`require_data_movement` is the one check, with the one error.

Kept free of imports: the render path imports this package.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from pixsim_host.errors import HostError, NotSupportedByRuntime
from pixsim_host.progress import Progress

if TYPE_CHECKING:
    from pixsim_host.config import HostConfig
    from pixsim_host.hostdir import HostDir

__all__ = ["Progress"]
BACKEND = "backend"


class ServiceState(Protocol):
    """One service as the runtime sees it now."""

    service: str
    name: str  # the container, the process, or the workload
    status: str  # running, exited, ... (Docker's words; the other runtimes use the same)
    health: str | None
    started_at: str | None  # ISO 8601, UTC
    ports: list[str]

    def as_json(self) -> dict[str, Any]: ...


class Started(Protocol):
    """What ``Runtime.start`` did; still watching the services it started until closed."""

    actions: dict[str, str]  # service -> created | recreated | started | unchanged | applied...
    notes: list[str]  # what the user should know about what start did

    def check_alive(self, service: str) -> None:
        """Raise the service's failure (with its last log lines) if it died since it started."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class RuntimeWords:
    """How messages name a runtime's things, so commands never ask which runtime it is."""

    title: str  # "Docker", "the native runtime", "Kubernetes"
    stopped: str  # what ``down`` removed: "containers removed"
    data_kept: str  # where ``down`` keeps the data, one sentence
    units: str  # what runs the services: "containers", "processes", "workloads"


@dataclass
class BackendEndpoint:
    """Where the backend can be reached from here, for as long as the context is open."""

    url: str
    check: Callable[[], None] = field(default=lambda: None)  # raises if the way there broke


class Runtime(Protocol):
    kind: ClassVar[str]  # "docker", "native" or "kubernetes": for messages and JSON, never to branch on
    words: ClassVar[RuntimeWords]
    # Capabilities and traits the commands ask about instead of the runtime's kind:
    moves_data: bool  # dump and load the database and Redis (backup, restore, clone)
    runs_jobs: bool  # runs migrations and `exec` itself (see JobRuntime)
    applies_rendered_files: bool  # a hand-edited rendered file is what runs
    labels_log_lines: bool  # stream_logs' lines already say which pod or service wrote them
    watches_backend: bool  # the platform itself restarts a backend that hangs (liveness probe)
    runs_host_plugins: ClassVar[bool]  # the backend loads the packages in the host's plugins/
    doctor_checks: ClassVar[tuple[str, ...]]  # which of doctor's runtime checks apply (engine, port, ...)

    # ---- services ---------------------------------------------------------------------
    def service_names(self) -> list[str]: ...

    def service_levels(self) -> list[list[str]]:
        """Services grouped in start order: each group depends only on earlier groups."""

    def notes(self) -> list[str]:
        """Advice about how this host is set up to run (said once per ``up``)."""

    def prepare(self, pull: str, progress: Progress) -> None:
        """Everything the services need before they start (images; binaries, data dirs)."""

    def settled_config(self) -> HostConfig | None:
        """The config with what ``prepare`` settled (ports it allocated), for the caller to
        save; None when nothing changed. A runtime never writes the config itself."""

    def unchanged(self, pull: str) -> Started | None:
        """What ``start`` would find when every service already runs, healthy, exactly as
        configured (checked by reading only, cheaply); None when ``prepare`` and ``start``
        have work to do, or the runtime cannot tell. The caller still verifies the backend."""

    def start(self, progress: Progress, deadline: float, *,
              verified_elsewhere: frozenset[str] = frozenset(),
              only: frozenset[str] | None = None) -> Started:
        """Converge on the config, level by level, waiting for health between levels.

        Unchanged running services are left alone; changed ones are replaced. Services in
        ``verified_elsewhere`` (the backend: the caller checks it over HTTP) are started,
        not waited for.
        """

    def service_report(self, started: Started) -> dict[str, dict[str, Any]]:
        """Each service as ``up`` reports it, once the whole host passed its checks."""

    def public_backend(self, config: HostConfig) -> tuple[str, str]:
        """(where reports say the backend is, the URL a client is given)."""

    def backend_endpoint(self, config: HostConfig,
                         progress: Progress) -> contextlib.AbstractContextManager[BackendEndpoint]:
        """The backend's URL from this machine (a port-forward is held open meanwhile)."""

    def status_fields(self) -> dict[str, Any]:
        """What ``status --json`` says about the runtime itself (besides the services)."""

    def states(self) -> Mapping[str, ServiceState]:
        """This host's services that exist (running or not), by name."""

    def probe_health(self, state: Any) -> str | None:
        """The health the service would report if its check ran now."""

    def failure(self, service: str, reason: str, tail: int = 30) -> HostError: ...

    def log_tail(self, service: str, tail: int = 30) -> str:
        """The service's last log lines, secrets masked ('' when there are none)."""

    def stop_and_remove(self, progress: Progress) -> list[str]:
        """Stop every service in reverse order; data is kept. Returns what was stopped."""

    def volumes(self) -> list[str]:
        """Where this host's data lives (volume names; data directories; claims)."""

    def check_stopped(self) -> None:
        """Refuse (one line) to delete the data of a host whose services still exist."""

    def remove_volumes(self, names: list[str]) -> None: ...

    def restart(self, services: list[str], progress: Progress) -> None: ...

    def stream_logs(self, services: list[str], tail: int, follow: bool) -> Iterator[tuple[str, str]]:
        """(service, line) pairs, secrets masked."""


class DataRuntime(Runtime, Protocol):
    """A runtime that moves data in and out: what backup, restore and clone need."""

    def dump_database(self, target: Path, progress: Progress) -> None:
        """``pg_dump -Fc`` of the host's database into ``target`` (streamed)."""

    def dump_redis(self, target: Path, progress: Progress) -> None:
        """Redis ``SAVE``, then its ``dump.rdb`` copied to ``target``."""

    def load_redis(self, rdb: Path, deadline: float, progress: Progress) -> None:
        """Fill the host's fresh, stopped Redis with ``rdb``; persistent once Redis starts."""

    def restore_database(self, dump: Path, progress: Progress) -> None:
        """``pg_restore`` a custom-format dump into the running database (replacing objects)."""

    def set_database_password(self, password: str) -> None:
        """Make the database role's password ``password`` (this host's .env)."""

    def restamp_identity(self, host_id: str) -> None:
        """Rewrite the host_id the backend recorded in its database (a clone is a new host)."""

    def dump_home(self, target: Path, progress: Progress) -> None:
        """The backend's PIXSIM_HOME as a tar in ``target``, names relative to the home (so a
        bundle restores on any runtime); links out of the home are left out, and said."""

    def load_home(self, archive: Path, progress: Progress) -> None:
        """Replace the (fresh, backend stopped) PIXSIM_HOME with ``archive``, checked first."""

    def schema_revisions(self) -> dict[str, list[str]]:
        """Each migration chain's recorded revisions: {alembic version table: [revisions]}."""

    def empty_database(self) -> None:
        """Drop and create the host's database (running, nothing connected that matters): a
        restore then leaves nothing behind that the dump does not hold (a half-run migration)."""

    def server_version(self) -> str:
        """The running PostgreSQL's ``SHOW server_version`` (like ``16.3`` or ``18.1 (Debian ...)``)."""


class JobRuntime(Runtime, Protocol):
    """A runtime that runs the backend's own jobs itself: migrations before the backend
    starts, and ``exec``. (Kubernetes runs migrations as part of the rollout instead.)"""

    python: str  # the interpreter that `python` in backend.migrate means

    def backend_code(self) -> str:
        """What identifies the backend's code (image id, checkout revision): new code is
        what makes migrations due again."""

    def available_extensions(self) -> set[str]:
        """The extensions the running PostgreSQL could create."""

    def run_job(self, name: str, argv: list[str], deadline: float, progress: Progress) -> tuple[int, str]:
        """Run ``argv`` to completion in the backend's environment; exit code and masked output."""

    def exec_service(self, service: str, argv: list[str], interactive: bool) -> int:
        """Run ``argv`` in a service's environment (interactive on a terminal); its exit code."""

    def discard_unstarted(self) -> None:
        """Remove what was made ahead for services that were never started, because the
        migrations before them failed: the host is left as it was."""


def job_runtime(runtime: Runtime) -> JobRuntime | None:
    """``runtime`` as one that runs the backend's jobs itself, or None."""
    return cast(JobRuntime, runtime) if runtime.runs_jobs else None


class RuntimeType(Protocol):
    """A runtime's class: what is known about it before it is opened (doctor, restore)."""

    @property
    def kind(self) -> str: ...

    @property
    def words(self) -> RuntimeWords: ...

    @property
    def doctor_checks(self) -> tuple[str, ...]: ...

    @property
    def runs_host_plugins(self) -> bool: ...

    def open(self, host: HostDir, config: HostConfig, secrets: dict[str, str], *,
             claimed_ports: Callable[[], set[int]] = ...) -> Runtime:
        """The runtime of ``host`` (its rendered files, its secrets); ``claimed_ports`` says
        which ports other hosts claim, should the runtime have to choose some."""

    def check_unused(self, config: HostConfig) -> None:
        """Refuse to build a new host where another one's resources still are."""

    def settle_config(self, config: HostConfig, claimed_ports: set[int]) -> HostConfig:
        """``config`` with what this runtime must fix before the host is first saved (the
        native runtime's PostgreSQL and Redis ports), avoiding ``claimed_ports``."""


def require_data_movement(runtime: Runtime, host_name: str) -> DataRuntime:
    """``runtime`` as one that moves data, or the one error for a runtime that cannot."""
    if not runtime.moves_data:
        raise NotSupportedByRuntime(
            f"host {host_name!r} runs on {runtime.words.title}, where pixsim-host does not move "
            "data (backup, restore, clone); there use up, down, status, logs and restart, and "
            "dump the database with pg_dump by hand (see docs/kubernetes.md)",
            runtime=runtime.kind, capability="moves_data",
        )
    return cast(DataRuntime, runtime)


class LocalRuntime:
    """What the runtimes that run services on this machine (Docker, native) share:
    the backend answers at the config's local URL, data moves in and out."""

    kind: ClassVar[str]
    words: ClassVar[RuntimeWords]
    moves_data = True
    runs_jobs = True
    applies_rendered_files = True
    labels_log_lines = False
    watches_backend = False
    runs_host_plugins: ClassVar[bool] = True
    # Which of doctor's runtime checks apply (the others are skipped, saying why).
    doctor_checks: ClassVar[tuple[str, ...]] = ("port", "health")

    @classmethod
    def check_unused(cls, config: HostConfig) -> None:
        """Refuse to build a new host where another one's resources still are (the origin?)."""
        del config

    @classmethod
    def settle_config(cls, config: HostConfig, claimed_ports: set[int]) -> HostConfig:
        del claimed_ports
        return config

    def states(self) -> Mapping[str, ServiceState]:
        raise NotImplementedError

    def notes(self) -> list[str]:
        return []

    def settled_config(self) -> HostConfig | None:
        return None

    def unchanged(self, pull: str) -> Started | None:
        del pull
        return None

    def discard_unstarted(self) -> None:
        return None  # nothing is made ahead of its start

    def service_report(self, started: Started) -> dict[str, dict[str, Any]]:
        del started
        services = {}
        for name, state in sorted(self.states().items()):
            services[name] = state.as_json()
            # Every service passed our own checks just now, whatever the engine's lagging
            # healthcheck says yet (before Docker 25 it waits a whole interval).
            services[name].update(health="healthy", engine_health=state.health, verified=True)
        return services

    def public_backend(self, config: HostConfig) -> tuple[str, str]:
        # Behind the TLS proxy, reports give its https:// URL (the backend's is loopback's).
        return config.tls_url or config.local_url, config.client_url

    @contextlib.contextmanager
    def backend_endpoint(self, config: HostConfig, progress: Progress) -> Iterator[BackendEndpoint]:
        del progress
        yield BackendEndpoint(config.local_url)

    def status_fields(self) -> dict[str, Any]:
        return {}

    def check_stopped(self) -> None:
        if self.states():
            raise HostError(f"the host still has {self.words.units}; run `pixsim-host down` first")


# ---- shared by the runtimes ---------------------------------------------------------------

IDENTITY_TABLE = "pixsim_host_identity"  # where the reference backend keeps its host_id


def restamp_sql(host_id: str) -> str:
    """SQL that rewrites the recorded host_id, if the backend keeps one (a validated UUID)."""
    return (f"DO $$ BEGIN IF to_regclass('{IDENTITY_TABLE}') IS NOT NULL THEN "
            f"UPDATE {IDENTITY_TABLE} SET host_id = '{host_id}'; END IF; END $$;")


def aof_rewritten(info_persistence: str) -> bool:
    """Whether Redis' ``INFO persistence`` says the append-only file is on and fully written."""
    return all(flag in info_persistence for flag in (
        "aof_enabled:1", "aof_rewrite_in_progress:0", "aof_rewrite_scheduled:0",
        "aof_last_bgrewrite_status:ok"))


def reference_build_context() -> Path:
    """The reference backend's source: the Docker build context and the native program."""
    from importlib import resources

    return Path(str(resources.files("pixsim_reference_backend")))


def context_digest(context: Path) -> str:
    """A digest of a build context's files, so an image is rebuilt (or a process restarted)
    when its source changes."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(context.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(context)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:32]


def wait_until(check: Callable[[], bool], deadline: float, what: str) -> None:
    import time

    while not check():
        if time.monotonic() > deadline:
            raise HostError(f"{what} did not finish before the timeout; retry with a larger --timeout")
        time.sleep(0.1)
