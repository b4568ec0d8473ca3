"""How a rendered host runs: the boundary every runtime that runs services itself shares.

``stack`` (up, status, down, restart, logs) and ``backup`` (backup, restore, clone) are
written once against :class:`Runtime`. A runtime only knows how one of the host's three
services (``db``, ``redis``, ``backend``) is started, stopped and inspected, and how data
goes in and out of db and redis:

- ``DockerRuntime`` (``runtime/docker.py``): containers on a Docker Engine, from the
  rendered ``compose.yaml``;
- ``NativeRuntime`` (``runtime/native.py``): local processes (PostgreSQL and Redis from
  the ``native`` extra or the user's binaries), data under the host directory.

Kubernetes is driven differently (kubectl applies the whole host at once): ``stack``
dispatches it before a :class:`Runtime` is ever opened.

Kept free of imports: the render path imports this package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from pixsim_host.errors import HostError

Progress = Callable[[str, str], None]  # (service, message)


class ServiceState(Protocol):
    """One service as the runtime sees it now."""

    service: str
    name: str  # the container, or the process
    status: str  # running, exited, ... (Docker's words; the native runtime uses the same)
    health: str | None
    started_at: str | None  # ISO 8601, UTC
    ports: list[str]

    def as_json(self) -> dict[str, Any]: ...


class Started(Protocol):
    """What ``Runtime.start`` did; still watching the services it started until closed."""

    actions: dict[str, str]  # service -> created | recreated | started | unchanged

    def check_alive(self, service: str) -> None:
        """Raise the service's failure (with its last log lines) if it died since it started."""

    def close(self) -> None: ...


class Runtime(Protocol):
    kind: str  # "docker" or "native"

    # ---- services ---------------------------------------------------------------------
    def service_names(self) -> list[str]: ...

    def service_levels(self) -> list[list[str]]:
        """Services grouped in start order: each group depends only on earlier groups."""

    def prepare(self, pull: str, progress: Progress) -> None:
        """Everything the services need before they start (images; binaries, data dirs)."""

    def start(self, progress: Progress, deadline: float, *,
              verified_elsewhere: frozenset[str] = frozenset(),
              only: frozenset[str] | None = None) -> Started:
        """Converge on the config, level by level, waiting for health between levels.

        Unchanged running services are left alone; changed ones are replaced. Services in
        ``verified_elsewhere`` (the backend: the caller checks it over HTTP) are started,
        not waited for.
        """

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
        """Where this host's data lives (volume names; data directories)."""

    def remove_volumes(self, names: list[str]) -> None: ...

    def restart(self, services: list[str], progress: Progress) -> None: ...

    def stream_logs(self, services: list[str], tail: int, follow: bool) -> Iterator[tuple[str, str]]:
        """(service, line) pairs, secrets masked."""

    # ---- data in and out (backup, restore, clone) ---------------------------------------
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


def wait_until(check: Callable[[], bool], deadline: float, what: str) -> None:
    import time

    while not check():
        if time.monotonic() > deadline:
            raise HostError(f"{what} did not finish before the timeout; retry with a larger --timeout")
        time.sleep(0.1)
