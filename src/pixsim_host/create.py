"""Create a host directory, or re-render an existing one without touching its identity."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixsim_host.config import (
    LOCAL_CLIENT_ORIGINS,
    HostConfig,
    load_config,
    new_host_config,
    parse_config,
)
from pixsim_host.envfile import generate_secrets, read_secrets, write_secrets
from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.ports import pick_port
from pixsim_host.render import apply_config, render_host


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
    # The operator's PixSim7: its checkout, its Dockerfile (Docker), its Python (native).
    source: str | None = None
    dockerfile: str | None = None
    python: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class InitResult:
    host: HostDir
    config: HostConfig
    created: bool
    written: list[str]
    warnings: list[str]


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
    if options.source is not None:
        backend.update(_checkout_values(options))
    if backend:
        values["backend"] = backend
    if options.python is not None:
        values["native"] = {"python": str(Path(options.python).expanduser().absolute())}
    if options.postgres_image is not None:
        values["database"] = {"image": options.postgres_image}
    if options.redis_image is not None:
        values["redis"] = {"image": options.redis_image}
    return values


def _checkout_values(options: InitOptions) -> dict[str, Any]:
    """The backend section for the operator's PixSim7 checkout: its own migration entry point
    and the workers upstream's compose file runs (those the checkout declares)."""
    from pixsim_host.config import PIXSIM7_WORKERS, slugify
    from pixsim_host.services import SERVICES_DIR, pixsim7_migrations, read_declarations

    assert options.source is not None
    source = Path(options.source).expanduser().absolute()
    if not source.is_dir():
        raise HostError(f"--source {source} is not a directory; give the root of your PixSim7 checkout")
    declared = read_declarations(source / SERVICES_DIR)
    if "main-api" not in declared:
        raise HostError(f"{source} declares no main-api service ({SERVICES_DIR}/main-api/"
                        "pixsim.service.json); give the root of a PixSim7 checkout")
    # Written out (not left to the defaults) so the operator sees what the host runs.
    values: dict[str, Any] = {
        "source": str(source),
        "migrate": pixsim7_migrations(source),
        "workers": [worker for worker in PIXSIM7_WORKERS if worker in declared],
    }
    if options.dockerfile is not None:
        values["dockerfile"] = options.dockerfile
        if options.backend_image is None:
            values["image"] = f"pixsim-host/{slugify(options.name or source.name) or 'pixsim7'}-backend:local"
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

    from pixsim_host.stack import runtime_type

    config = runtime_type(config).settle_config(config, claimed_ports or set())
    host.root.mkdir(parents=True, exist_ok=True)
    host.plugins_dir.mkdir(exist_ok=True)
    rendered = render_host(host, config)  # fails before anything is written
    if created:
        # Secrets first: a config on disk always has its .env beside it.
        write_secrets(host.secrets_file, generate_secrets(), config.host_id)
    written = apply_config(host, config, rendered)
    return InitResult(host, config, created, written, warnings)


def init_registered(root: Path, options: InitOptions, *, force: bool = False) -> tuple[InitResult, list[str]]:
    """``init`` under the registry lock: name and port checked, a free port picked, registered."""
    from pixsim_host.hosts import create_registered

    made: list[InitResult] = []

    def create(claimed: set[int]) -> tuple[HostDir, HostConfig]:
        made.append(init_host(root.expanduser().resolve(), options, force=force, claimed_ports=claimed))
        return made[0].host, made[0].config

    notes = create_registered(root, options.name, options.port, create, force=force)
    return made[0], notes
