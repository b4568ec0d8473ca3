"""The backend's environment: the PixSim7 contract, defined once for every runtime.

Each runtime says only where things are (:class:`Endpoints`): how the backend reaches its
database and Redis, where its data and external plugins live, and how it refers to its
secrets. Docker's ``compose.yaml`` refers to ``.env`` (``${NAME}``), Kubernetes to its
Secret (``$(NAME)``), the native runtime passes the values to the process it starts;
nothing else differs, so a host behaves the same wherever it runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pixsim_host.config import HostConfig

# The contract keys whose values carry a secret (or a reference to one): a runtime that
# renders files keeps them out of what it writes in the clear.
SECRET_BEARING = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")


@dataclass(frozen=True)
class Endpoints:
    """Where one runtime puts the backend's dependencies, as the backend sees them."""

    database_url: str  # postgresql://user:PASSWORD@host:port/db (the password as the runtime refers to it)
    redis_url: str  # redis://:PASSWORD@host:port/0
    secret_key: str  # the JWT key, or the runtime's reference to it
    home: str  # PIXSIM_HOME: the backend's data root
    plugins_dir: str  # EXTERNAL_PLUGINS_DIR: the host's installed plugin packages


def compact_json(value: Any) -> str:
    """JSON as the backend's settings read it (lists must be JSON arrays)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def backend_environment(config: HostConfig, endpoints: Endpoints) -> dict[str, str]:
    """The backend's contract environment, in a fixed order, from the config and endpoints."""
    return {
        "DATABASE_URL": endpoints.database_url,
        "REDIS_URL": endpoints.redis_url,
        "SECRET_KEY": endpoints.secret_key,
        # SERVER_ID is how a client (and `up`) tells which host answers at a URL.
        "SERVER_ID": config.host_id,
        "PIXSIM_HOST_ID": config.host_id,
        "SERVER_NAME": config.name,
        "SERVER_DESCRIPTION": config.description,
        # Never an allowlist: it would disable every unlisted plugin, dependencies of
        # installed plugins included, and abort start-up (see plugins.py).
        "PLUGIN_ALLOWLIST": compact_json([]),
        "PLUGIN_DENYLIST": compact_json(list(config.plugins.disabled)),
        # PixSim7 defaults to DEBUG=true; a host never runs that way.
        "DEBUG": "false",
        "CORS_ORIGINS": compact_json(_cors_origins(config)),
        "PIXSIM_HOME": endpoints.home,
        "EXTERNAL_PLUGINS_DIR": endpoints.plugins_dir,
        # The operator's own additions (validated never to shadow a contract variable).
        **config.backend.env,
    }


def _cors_origins(config: HostConfig) -> list[str]:
    """backend.cors_origins, plus the TLS proxy's own origin (a client served through it)."""
    origins = list(config.backend.cors_origins)
    if config.tls_url and config.tls_url not in origins and "*" not in origins:
        origins.append(config.tls_url)
    return origins


def without_secrets(environment: dict[str, str]) -> dict[str, str]:
    """The part of the environment that may be written in the clear."""
    return {key: value for key, value in environment.items() if key not in SECRET_BEARING}
