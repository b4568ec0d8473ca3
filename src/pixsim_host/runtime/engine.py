"""Connecting to a Docker Engine: where it is, whether it answers, what it supports.

Respects ``DOCKER_HOST``, ``DOCKER_CONTEXT`` and the current Docker context, and turns
the three ways a connection fails (nothing listening, no permission, too old) into one
clear error each.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixsim_host.errors import EngineUnavailable

MIN_API = (1, 41)  # Docker 20.10: the oldest engine pixsim-host is tested against
START_INTERVAL_API = (1, 44)  # Docker 25: healthcheck StartInterval
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class EngineEndpoint:
    url: str
    origin: str  # how it was chosen, for error messages
    tls_dir: Path | None = None


def _docker_config_dir() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def resolve_endpoint() -> EngineEndpoint:
    if os.environ.get("DOCKER_HOST"):
        return EngineEndpoint(os.environ["DOCKER_HOST"], "DOCKER_HOST")
    config_dir = _docker_config_dir()
    context = os.environ.get("DOCKER_CONTEXT")
    origin = "DOCKER_CONTEXT"
    if not context:
        try:
            context = json.loads((config_dir / "config.json").read_text()).get("currentContext")
            origin = "the current Docker context"
        except (OSError, ValueError):
            context = None
    if context and context != "default":
        digest = hashlib.sha256(context.encode()).hexdigest()
        meta_file = config_dir / "contexts" / "meta" / digest / "meta.json"
        try:
            meta = json.loads(meta_file.read_text())
            url = meta["Endpoints"]["docker"]["Host"]
        except (OSError, ValueError, KeyError):
            raise EngineUnavailable(
                f"Docker context {context!r} (from {origin}) was not found",
                "list contexts with `docker context ls` or unset DOCKER_CONTEXT",
            ) from None
        tls_dir = config_dir / "contexts" / "tls" / digest / "docker"
        return EngineEndpoint(url, f"Docker context {context!r}",
                              tls_dir if tls_dir.is_dir() else None)
    return EngineEndpoint(DEFAULT_SOCKET, "the default socket")


def api_tuple(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor or 0)


@dataclass
class Engine:
    """A connected engine: the low-level API client and what the engine supports."""

    api: Any  # docker.APIClient
    endpoint: EngineEndpoint
    api_version: tuple[int, int]
    server_version: str

    @property
    def supports_start_interval(self) -> bool:
        return self.api_version >= START_INTERVAL_API


def connect(timeout: float = 30.0) -> Engine:
    import docker
    from docker.errors import DockerException

    endpoint = resolve_endpoint()
    kwargs: dict[str, Any] = {"base_url": endpoint.url, "timeout": timeout, "version": "auto"}
    if endpoint.tls_dir is not None:
        kwargs["tls"] = docker.tls.TLSConfig(
            client_cert=(str(endpoint.tls_dir / "cert.pem"), str(endpoint.tls_dir / "key.pem")),
            ca_cert=str(endpoint.tls_dir / "ca.pem"),
            verify=True,
        )
    try:
        api = docker.APIClient(**kwargs)
        info = api.version()
    except DockerException as exc:
        raise _connection_error(endpoint, exc) from None
    version = api_tuple(str(info.get("ApiVersion", "0.0")))
    if version < MIN_API:
        raise EngineUnavailable(
            f"the Docker Engine at {endpoint.url} speaks API {info.get('ApiVersion')} "
            f"(Docker {info.get('Version')})",
            f"pixsim-host needs API {MIN_API[0]}.{MIN_API[1]} (Docker 20.10) or newer: upgrade Docker",
        )
    return Engine(api, endpoint, version, str(info.get("Version", "?")))


def _connection_error(endpoint: EngineEndpoint, exc: Exception) -> EngineUnavailable:
    text = str(exc)
    where = f"{endpoint.url} (from {endpoint.origin})"
    if "Permission denied" in text or "PermissionError" in text:
        return EngineUnavailable(
            f"permission denied on the Docker socket {where}",
            "add your user to the docker group (`sudo usermod -aG docker $USER`, then log in "
            "again) or run as root",
        )
    if any(s in text for s in ("FileNotFoundError", "No such file", "Connection refused",
                               "ConnectionRefused", "Connection aborted", "Name or service")):
        return EngineUnavailable(
            f"no Docker Engine answers at {where}",
            "start Docker (e.g. `sudo systemctl start docker`), or point DOCKER_HOST at a "
            "running engine",
        )
    first_line = text.splitlines()[0] if text else type(exc).__name__
    return EngineUnavailable(f"cannot talk to the Docker Engine at {where}: {first_line}",
                             "check that Docker is running and reachable")
