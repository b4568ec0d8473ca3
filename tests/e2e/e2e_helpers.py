"""Helpers for the end-to-end tests that drive the real CLI against a real Docker engine.

Imported by name (``from e2e_helpers import ...``), like ``tests/unit/unit_helpers.py``:
pytest puts this directory on ``sys.path`` when it loads ``tests/e2e/conftest.py``.

* Every command runs as a user runs it: ``python -m pixsim_host ...`` in a subprocess, with
  no stdin (so never a TTY), a timeout (a hung command fails its test instead of hanging the
  run), and its output checked against the secrets of every host these tests created: no
  command may ever print one (``cli``, ``spawn``, ``assert_no_secret``).
* Commands use a host registry (``$PIXSIM_HOST_HOME``) the tests chose, never the user's:
  the module's own (``registry_home``, an autouse fixture a test module imports), another
  one pushed with ``use_registry``, or the ``home`` a command is given.
* Every host is created with ``init`` under a unique name and a free port (``Host.init``).
  Its teardown (``destroy``) runs ``down --volumes --yes`` and then checks that no
  container, network or volume of its Docker project, nor any volume its containers
  mounted, is left; whatever is left is removed anyway, so a failing test leaks nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import docker
import httpx
import pytest
import yaml
from docker.errors import APIError, NotFound

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
HOST_ID_LABEL = "org.pixsim-host.host-id"
# A new host of the reference backend: its database, Redis, the backend and its worker.
SERVICES = ("backend", "db", "redis", "worker")
IMAGES = ("pgvector/pgvector:pg16", "redis:7-alpine", "python:3.11-slim")
SECRET_NAMES = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "SECRET_KEY")
CLI_TIMEOUT = 240.0  # a hung command fails its test instead of hanging the run
REGISTRY_ENV = "PIXSIM_HOST_HOME"
CLI = (sys.executable, "-m", "pixsim_host")

# Secret values of every host created in this session; no command output may contain one.
_SECRETS: set[str] = set()
# Ports handed out in this session, so two hosts of these tests never get the same one.
_PORTS: set[int] = set()
# The host registries ($PIXSIM_HOST_HOME) in use, innermost last: commands use the last one
# unless given another.
_REGISTRY: list[Path] = []


# ---- running the CLI ------------------------------------------------------------------------


@dataclass
class Run:
    args: list[str]
    code: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (f"`pixsim-host {' '.join(self.args)}` exited {self.code} after {self.elapsed:.1f} s"
                f"\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}")


@contextlib.contextmanager
def use_registry(home: Path) -> Iterator[Path]:
    """Commands use the host registry ``home`` until the block ends."""
    _REGISTRY.append(home)
    try:
        yield home
    finally:
        _REGISTRY.remove(home)


@pytest.fixture(scope="module", autouse=True)
def registry_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A host registry of the module's own, so its tests neither read nor fill the user's."""
    with use_registry(tmp_path_factory.mktemp("registry")) as home:
        yield home


def cli_env(env: Mapping[str, str] | None = None, *, home: Path | None = None,
            tmpdir: Path | None = None) -> dict[str, str]:
    """The environment of a command: ``env`` (default: this process's) without
    ``$PIXSIM_HOST_DIR``, without colours, with the registry ``home`` (default: the one in use)
    and, when given, ``tmpdir`` for the command's temporary (staging) directories."""
    environment = dict(os.environ if env is None else env)
    environment.pop("PIXSIM_HOST_DIR", None)
    environment["NO_COLOR"] = "1"
    registry = home if home is not None else (_REGISTRY[-1] if _REGISTRY else None)
    assert registry is not None, "no registry home: use the registry_home fixture"
    environment[REGISTRY_ENV] = str(registry)
    if tmpdir is not None:
        environment["TMPDIR"] = str(tmpdir)
    return environment


def cli(*args: str | Path, env: Mapping[str, str] | None = None, home: Path | None = None,
        tmpdir: Path | None = None, timeout: float = CLI_TIMEOUT, input_text: str | None = None) -> Run:
    """Run the real CLI with no stdin (so never a TTY), or ``input_text`` piped in, and check
    it printed no secret."""
    argv = [str(a) for a in args]
    environment = cli_env(env, home=home, tmpdir=tmpdir)
    started = time.monotonic()
    stdin = {"input": input_text} if input_text is not None else {"stdin": subprocess.DEVNULL}
    proc = subprocess.run([*CLI, *argv], capture_output=True, text=True,
                          env=environment, timeout=timeout, **stdin)
    return assert_no_secret(Run(argv, proc.returncode, proc.stdout, proc.stderr,
                                time.monotonic() - started))


class Spawned(subprocess.Popen[str]):
    """The real CLI started in the background (``spawn``); ``finish`` waits for its ``Run``."""

    def __init__(self, argv: list[str], environment: dict[str, str]) -> None:
        self.argv = argv
        self.started = time.monotonic()
        super().__init__([*CLI, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=environment)

    def finish(self, timeout: float = CLI_TIMEOUT) -> Run:
        """Wait for the command, and check it printed no secret."""
        stdout, stderr = self.communicate(timeout=timeout)
        return assert_no_secret(Run(self.argv, self.returncode, stdout, stderr,
                                    time.monotonic() - self.started))


def spawn(*args: str | Path, home: Path | None = None) -> Spawned:
    """Start the real CLI in the background, with no stdin and its output piped."""
    return Spawned([str(a) for a in args], cli_env(home=home))


def assert_no_secret(run: Run) -> Run:
    """``run`` printed no secret of any host created here; reported without the secrets."""
    leaked = [value for value in _SECRETS if value in run.output]
    if leaked:
        # Report where, without printing the secrets themselves into the test log.
        shown = str(run)
        for value in leaked:
            shown = shown.replace(value, "<SECRET>")
        raise AssertionError(f"{len(leaked)} secret(s) appear (as <SECRET>) in the output of {shown}")
    return run


def assert_ok(run: Run) -> Run:
    assert run.code == 0, str(run)
    assert "Traceback" not in run.output, str(run)
    return run


def assert_clean_failure(run: Run) -> None:
    """A failing command: non-zero exit, one ``Error:`` line, and never a traceback."""
    assert run.code != 0, str(run)
    assert "Traceback" not in run.output, str(run)
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, str(run)


def free_port() -> int:
    """A port free on 127.0.0.1 now, below the kernel's ephemeral range and not yet used here."""
    for _ in range(500):
        port = random.randint(20000, 32000)
        if port in _PORTS:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS.add(port)
        return port
    raise AssertionError("no free port found on 127.0.0.1")


def unique_name(prefix: str = "e2e") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def read_env(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines of a host's .env (comments and other lines skipped)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


# ---- hosts ----------------------------------------------------------------------------------


@dataclass
class Host:
    """A host directory made by ``init``, ``restore`` or ``clone``, as its files describe it."""

    dir: Path
    name: str = ""
    port: int = 0
    host_id: str = ""
    project: str = ""
    home: Path | None = None  # its registry directory, when not the one in use
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)  # never in a test log

    @classmethod
    def load(cls, directory: Path, home: Path | None = None) -> Self:
        """Read the host's config and .env; its secrets join those no output may contain."""
        host = cls(directory, home=home)
        host.config = yaml.safe_load(host.config_file.read_text())
        host.name = str(host.config["name"])
        host.port = int(host.config["backend"]["port"])
        host.host_id = str(host.config["host_id"])
        host.project = str(host.config["project"])
        assert re.fullmatch(r"pixsim-[a-z0-9-]+", host.project), host.project
        host.secrets = read_env(directory / ".env")
        assert set(host.secrets) >= set(SECRET_NAMES), f"{directory / '.env'} lacks a secret"
        _SECRETS.update(value for value in host.secrets.values() if value)
        return host

    @classmethod
    def init(cls, root: Path, *, name: str | None = None, port: int | None = None,
             home: Path | None = None, prefix: str = "e2e", dirname: str | None = None) -> Self:
        """``pixsim-host init`` a new host in ``root / (dirname or name)``: a unique name (or
        ``name``) and a free port (or ``port``)."""
        name = name or unique_name(prefix)
        port = port if port is not None else free_port()
        directory = root / (dirname or name)
        assert_ok(cli("init", directory, "--yes", "--name", name, "--port", str(port), home=home))
        host = cls.load(directory, home)
        assert (host.name, host.port) == (name, port), f"init made {host.name!r} on port {host.port}"
        return host

    @property
    def config_file(self) -> Path:
        return self.dir / "pixsim-host.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, *args: str | Path, **kwargs: Any) -> Run:
        return cli(*args, "--dir", self.dir, home=self.home, **kwargs)

    def up_ok(self, *args: str) -> dict[str, Any]:
        """``up --json`` that must succeed, with this host's backend answering; its report."""
        report: dict[str, Any] = assert_ok(self.run("up", "--json", *args)).json()
        assert report["backend"]["server"]["server_id"] == self.host_id, report["backend"]
        return report

    def http(self) -> httpx.Client:
        # trust_env=False: loopback traffic must never go to a configured proxy.
        return httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)


H = TypeVar("H", bound=Host)


def assert_answers_as(host: Host) -> None:
    """What a client sees at the host's URL: this host, healthy, ready, with its database and
    Redis connected."""
    with host.http() as http:
        health, ready, info = http.get("/health"), http.get("/ready"), http.get("/api/v1/server/info")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "healthy", health.text
    assert health.json()["database"] == "connected", health.text
    assert health.json()["redis"] == "connected", health.text
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready", ready.text
    assert info.status_code == 200, info.text
    assert info.json()["server_id"] == host.host_id, info.text
    assert info.json()["server_name"] == host.name, info.text


# ---- Docker resources -----------------------------------------------------------------------


def project_filter(project: str) -> dict[str, str]:
    return {"label": f"{PROJECT_LABEL}={project}"}


def project_resources(client: docker.DockerClient, project: str) -> dict[str, list[str]]:
    """The names of the containers, networks and volumes labelled with a Docker project."""
    flt = project_filter(project)
    return {
        "containers": sorted(c.name for c in client.containers.list(all=True, filters=flt)),
        "networks": sorted(n.name for n in client.networks.list(filters=flt)),
        "volumes": sorted(v.name for v in client.volumes.list(filters=flt)),
    }


def project_containers(client: docker.DockerClient, host: Host) -> list[Any]:
    """Every container of the host's Docker project, freshly inspected."""
    return client.containers.list(all=True, filters=project_filter(host.project))


def containers(client: docker.DockerClient, host: Host) -> dict[str, Any]:
    """The host's containers by service, freshly inspected."""
    return {c.labels[SERVICE_LABEL]: c for c in project_containers(client, host)}


def volume_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.volumes.get(name)
    except NotFound:
        return False
    return True


def remove_labelled(client: docker.DockerClient, label: str) -> None:
    """Remove containers, then networks, then volumes carrying ``label`` (key=value)."""
    flt = {"label": label}
    # Containers first: networks and volumes in use cannot be removed.
    for container in client.containers.list(all=True, filters=flt):
        with contextlib.suppress(NotFound):
            container.remove(force=True, v=True)
    for network in client.networks.list(filters=flt):
        with contextlib.suppress(NotFound, APIError):
            network.remove()
    for volume in client.volumes.list(filters=flt):
        with contextlib.suppress(NotFound, APIError):
            volume.remove(force=True)


def remove_project(client: docker.DockerClient, project: str, volumes: list[str]) -> None:
    """Force-remove everything labelled with the Docker ``project``, and the ``volumes`` named."""
    remove_labelled(client, f"{PROJECT_LABEL}={project}")
    for name in volumes:
        with contextlib.suppress(NotFound, APIError):
            client.volumes.get(name).remove(force=True)


def destroy(client: docker.DockerClient, host: Host) -> None:
    """``down --volumes --yes``, then nothing of the host's Docker project may remain.

    Whatever remains is removed here anyway (so a failing test leaks nothing) before the
    assertions report it.
    """
    mounted: set[str] = set()
    for container in project_containers(client, host):
        for mount in container.attrs.get("Mounts") or []:
            if mount.get("Type") == "volume" and mount.get("Name"):
                mounted.add(mount["Name"])
    run = host.run("down", "--volumes", "--yes")
    left = project_resources(client, host.project)
    # Volumes the containers used (named or anonymous) must be gone too.
    stray = sorted(name for name in mounted - set(left["volumes"]) if volume_exists(client, name))
    if any(left.values()) or stray:
        remove_project(client, host.project, stray)
    assert_ok(run)
    assert not any(left.values()), f"left behind by `down --volumes --yes`: {left}"
    assert not stray, f"volumes left behind by `down --volumes --yes`: {stray}"


def destroy_all(client: docker.DockerClient, hosts: list[H]) -> None:
    """Tear down every host even if one teardown fails; then report the first failure."""
    errors: list[BaseException] = []
    for host in hosts:
        try:
            destroy(client, host)
        except BaseException as exc:  # every host is torn down before the first failure is raised
            errors.append(exc)
    if errors:
        raise errors[0]


def host_maker(client: docker.DockerClient, require_images: Callable[..., None], root: Path,
               host_type: type[H], prefix: str = "e2e") -> Iterator[Callable[..., H]]:
    """The body of a ``make_host`` fixture (``yield from`` it): ``make(name=, port=, home=)``
    creates a host of the test's own (``Host.init``); all are torn down, and checked, when the
    test ends."""
    require_images(*IMAGES)
    hosts: list[H] = []

    def make(*, name: str | None = None, port: int | None = None, home: Path | None = None) -> H:
        host = host_type.init(root / f"h{len(hosts)}", name=name, port=port, home=home, prefix=prefix)
        hosts.append(host)
        return host

    yield make
    destroy_all(client, hosts)
