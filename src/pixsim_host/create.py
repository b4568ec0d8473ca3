"""Create a host directory, or re-render an existing one without touching its identity."""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixsim_host.config import (
    DEFAULT_BACKEND_PORT,
    LOCAL_CLIENT_ORIGINS,
    HostConfig,
    load_config,
    new_host_config,
    parse_config,
    save_config,
)
from pixsim_host.envfile import generate_secrets, read_secrets, write_secrets
from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.render import render_host, write_rendered


@dataclass
class InitOptions:
    """What the user chose; None means "not given" (a default or the existing value)."""

    name: str | None = None
    model: str | None = None
    port: int | None = None
    bind: str | None = None
    public_url: str | None = None
    description: str | None = None
    backend_image: str | None = None
    postgres_image: str | None = None
    redis_image: str | None = None
    runtime: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class InitResult:
    host: HostDir
    config: HostConfig
    created: bool
    written: list[str]
    warnings: list[str]


def port_is_free(bind: str, port: int) -> bool:
    """Whether ``bind:port`` can be bound now (what Docker will need at `up`)."""
    family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((bind, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL and not ipaddress.ip_address(bind).is_unspecified:
                # Not an address of this machine (yet: a VPN that is down). Whether the port is
                # free is then best told on every interface; `doctor` reports the address.
                return port_is_free("::" if family == socket.AF_INET6 else "0.0.0.0", port)
            return False
    return True


def pick_port(bind: str, claimed: set[int], start: int = DEFAULT_BACKEND_PORT) -> int:
    for port in range(start, start + 1000):
        if port not in claimed and port_is_free(bind, port):
            return port
    raise HostError(f"no free port in {start}-{start + 999} on {bind}; pass --port")


def _section_values(options: InitOptions) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if options.name is not None:
        values["name"] = options.name
    if options.model is not None:
        values["model"] = options.model
    if options.description is not None:
        values["description"] = options.description
    if options.runtime is not None:
        values["runtime"] = options.runtime
    backend: dict[str, Any] = {}
    for key, value in (
        ("port", options.port),
        ("bind", options.bind),
        ("public_url", options.public_url),
        ("image", options.backend_image),
    ):
        if value is not None:
            backend[key] = value
    if backend:
        values["backend"] = backend
    if options.postgres_image is not None:
        values["database"] = {"image": options.postgres_image}
    if options.redis_image is not None:
        values["redis"] = {"image": options.redis_image}
    return values


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def init_host(root: Path, options: InitOptions, *, force: bool = False,
              claimed_ports: set[int] | None = None) -> InitResult:
    host = HostDir(root.expanduser().resolve())
    warnings = list(options.warnings)
    if host.exists():
        if not force:
            existing = load_config(host.config_file)
            raise HostError(
                f"{host.root} already holds host {existing.name!r} ({existing.host_id}); "
                "use `pixsim-host init --force` to re-render it (its host_id and secrets are kept)"
            )
        current = load_config(host.config_file)
        read_secrets(host.secrets_file)  # a host without its secrets cannot be re-rendered
        config = parse_config(
            _merge(current.model_dump(mode="json"), _section_values(options)),
            source="the given options",
        )
        created = False
    else:
        if host.secrets_file.exists():
            raise HostError(
                f"{host.secrets_file} exists but {host.config_file.name} does not; "
                "move the .env away or restore the config before running init"
            )
        values = _section_values(options)
        model = values.get("model", "self")
        backend = values.setdefault("backend", {})
        if model != "self":
            backend.setdefault("cors_origins", ["*"])
            if "bind" not in backend:
                backend["bind"] = "0.0.0.0"
                warnings.append(
                    "the backend will listen on every interface (0.0.0.0); pass --bind ADDRESS "
                    "to limit it to your LAN or VPN address, and put TLS in front for 'shared'"
                )
        else:
            backend.setdefault("cors_origins", list(LOCAL_CLIENT_ORIGINS))
        if "port" not in backend:
            backend["port"] = pick_port(backend.get("bind", "127.0.0.1"), claimed_ports or set())
        config = new_host_config(**values)
        created = True

    if config.runtime == "native":
        from pixsim_host.runtime.native import allocate_ports

        config = allocate_ports(config, claimed_ports or set())
    host.root.mkdir(parents=True, exist_ok=True)
    host.plugins_dir.mkdir(exist_ok=True)
    rendered = render_host(host, config)  # fails before anything is written
    if created:
        # Secrets first: a config on disk always has its .env beside it.
        write_secrets(host.secrets_file, generate_secrets(), config.host_id)
    save_config(config, host.config_file)
    written = write_rendered(host, rendered)
    return InitResult(host, config, created, written, warnings)
