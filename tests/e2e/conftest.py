"""Shared fixtures for tests that need a real Docker engine.

Fixtures for other e2e tests:

* ``docker_client`` (session): a connected ``docker.DockerClient``. When no engine answers the
  test is skipped, or fails when ``PIXSIM_HOST_E2E=required`` (set by ``scripts/test.sh``) so
  the README's test command can never pass by skipping everything.
* ``require_images`` (session): ``require_images("redis:7-alpine", ...)`` fails the test with a
  clear message when an image is not present locally. Nothing here ever pulls: the test
  engine has no registry, and a pull there would only hang on a name lookup.
* ``e2e_labels`` (session): labels to put on every container, network and volume a test
  creates. Everything carrying this session's run label is removed when the session ends, so
  leftovers of a failing test are cleaned up without touching other sessions' resources.
* ``docker_sandbox`` (function): a ``Sandbox`` that creates labelled networks, volumes and
  containers (from local images only) and removes them when the test ends.
* ``hosts`` (function): native hosts of one test (``native_support.Hosts``); every process
  they ran is gone when it ends.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NoReturn

import docker
import pytest
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from e2e_helpers import remove_labelled
from native_support import Hosts, native_hosts

E2E_ENV = "PIXSIM_HOST_E2E"
TEST_LABEL = "org.pixsim-host.test"
RUN_LABEL = "org.pixsim-host.test-run"

# Public image name -> where its offline stand-in is built from (scripts/build-test-images.sh).
STANDIN_IMAGES = {
    "pgvector/pgvector:pg16": "tests/images/postgres",
    "redis:7-alpine": "tests/images/redis",
    "python:3.11-slim": "tests/images/python",
    "caddy:2.11": "tests/images/caddy",
}


def engine_required() -> bool:
    return os.environ.get(E2E_ENV, "").strip().lower() == "required"


def engine_unavailable(reason: str) -> NoReturn:
    """Skip, or fail when the engine tests are mandatory for this run."""
    if engine_required():
        pytest.fail(f"{reason} ({E2E_ENV}=required)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        # The SDK negotiates the API version, so this also works on API 1.41 engines.
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as exc:
        engine_unavailable(f"no Docker engine reachable: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def require_images(docker_client: docker.DockerClient) -> Callable[..., None]:
    def require(*names: str) -> None:
        missing = []
        for name in names:
            try:
                docker_client.images.get(name)
            except ImageNotFound:
                missing.append(name)
        if missing:
            hints = [
                f"{n} (stand-in built from {STANDIN_IMAGES[n]})" if n in STANDIN_IMAGES else n
                for n in missing
            ]
            pytest.fail(
                "image(s) missing from the local engine, and tests never pull: "
                + ", ".join(hints)
                + ". Build the stand-ins with: bash scripts/build-test-images.sh",
                pytrace=False,
            )

    return require


@pytest.fixture(scope="session")
def e2e_labels(docker_client: docker.DockerClient) -> Iterator[dict[str, str]]:
    run_id = uuid.uuid4().hex[:12]
    yield {TEST_LABEL: "1", RUN_LABEL: run_id}
    remove_labelled(docker_client, f"{RUN_LABEL}={run_id}")


class Sandbox:
    """Creates labelled containers, networks and volumes for one test and removes them after.

    Containers are only ever created from local images (``containers.create`` never pulls,
    unlike ``containers.run``).
    """

    def __init__(self, client: docker.DockerClient, labels: Mapping[str, str]) -> None:
        self.client = client
        self.labels = dict(labels)
        self.prefix = f"pixsim-host-test-{uuid.uuid4().hex[:8]}"
        self._containers: list[Any] = []
        self._networks: list[Any] = []
        self._volumes: list[Any] = []
        self._count = 0

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{self.prefix}-{kind}{self._count}"

    def network(self) -> Any:
        net = self.client.networks.create(self._name("net"), driver="bridge", labels=self.labels)
        self._networks.append(net)
        return net

    def volume(self) -> Any:
        vol = self.client.volumes.create(name=self._name("vol"), labels=self.labels)
        self._volumes.append(vol)
        return vol

    def container(
        self,
        image: str,
        command: str | list[str] | None = None,
        *,
        network: str | None = None,
        aliases: Iterable[str] = (),
        environment: Mapping[str, str] | None = None,
        volumes: Mapping[str, dict[str, str]] | None = None,
        files: Mapping[str, tuple[bytes, int]] | None = None,
        start: bool = True,
    ) -> Any:
        """Create (and start) a container; ``files`` maps in-container paths to (data, mode)
        and is copied in before start, which works with remote engines too (no bind mount)."""
        kwargs: dict[str, Any] = {}
        if network is not None:
            kwargs["network"] = network
            aliases = list(aliases)
            if aliases:
                kwargs["networking_config"] = {
                    network: self.client.api.create_endpoint_config(aliases=aliases)
                }
        container = self.client.containers.create(
            image,
            command,
            name=self._name("ctr"),
            labels=self.labels,
            environment=dict(environment or {}),
            volumes=dict(volumes or {}),
            detach=True,
            **kwargs,
        )
        self._containers.append(container)
        for path, (data, mode) in (files or {}).items():
            directory, _, filename = path.rpartition("/")
            container.put_archive(directory or "/", _tar_one(filename, data, mode))
        if start:
            container.start()
        return container

    def run(
        self,
        image: str,
        command: str | list[str],
        *,
        network: str | None = None,
        environment: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> tuple[int, str]:
        """Run a one-off container to completion; returns (exit code, stdout+stderr)."""
        container = self.container(image, command, network=network, environment=environment)
        try:
            status = container.wait(timeout=timeout)
            output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
            return int(status["StatusCode"]), output
        finally:
            # v=True: the stand-ins declare VOLUMEs, whose anonymous volumes carry no label.
            container.remove(force=True, v=True)
            self._containers.remove(container)

    def cleanup(self) -> None:
        for container in reversed(self._containers):
            with contextlib.suppress(NotFound):
                container.remove(force=True, v=True)
        for net in self._networks:
            with contextlib.suppress(NotFound, APIError):
                net.remove()
        for vol in self._volumes:
            with contextlib.suppress(NotFound, APIError):
                vol.remove(force=True)


def _tar_one(name: str, data: bytes, mode: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def docker_sandbox(docker_client: docker.DockerClient, e2e_labels: dict[str, str]) -> Iterator[Sandbox]:
    sandbox = Sandbox(docker_client, e2e_labels)
    yield sandbox
    sandbox.cleanup()


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    yield from native_hosts()
