"""What a host's Kubernetes manifests are rendered with: names, labels, the backend's
environment, the workloads that run each service. Pure: no kubectl, no runtime, no I/O,
so the renderer imports it without importing a runtime.

The live path (kubectl) is ``runtime/kubernetes.py``; the templates are under
``templates/kubernetes/``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pixsim_host.backend_env import Endpoints, backend_environment, without_secrets
from pixsim_host.errors import HostError
from pixsim_host.services import HttpService, Worker, migrate_commands, resolve_http_services, resolve_workers

if TYPE_CHECKING:
    from pixsim_host.config import HostConfig

KUBERNETES_DIR = "kubernetes"
# Generated file (relative to the host directory) -> template name; overridable per host
# in <dir>/templates/kubernetes/.
GENERATED: dict[str, str] = {
    f"{KUBERNETES_DIR}/{name}": f"kubernetes/{name}.j2"
    for name in (
        "kustomization.yaml",
        "backend-env.yaml",
        "database.yaml",
        "redis.yaml",
        "backend.yaml",
        "ingress.yaml",
    )
}

HOST_ID_LABEL = "org.pixsim-host/host-id"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
PART_OF = "pixsim7"
EXTERNAL_PLUGINS_DIR = "/srv/pixsim/external-plugins"
BACKEND_HOME = "/data"
# A StatefulSet's name goes into its pods' controller-revision-hash label (name + '-' +
# a hash of up to 10 characters, 63 at most), so Kubernetes needs it to be 52 or shorter.
MAX_STATEFULSET_NAME = 52
# pixsim-host's service names (as on Docker) -> the component label of their objects.
COMPONENTS = {"db": "database", "redis": "redis", "backend": "backend"}
BACKEND_PORT = 8000
# The Secret's keys the backend's container gets as variables, referred to as $(NAME).
DB_PASSWORD_VAR = "PIXSIM_HOST_DB_PASSWORD"
REDIS_PASSWORD_VAR = "PIXSIM_HOST_REDIS_PASSWORD"


@dataclass(frozen=True)
class Names:
    db: str
    redis: str
    backend: str
    backend_env: str
    secret: str
    ingress: str


def names(config: HostConfig) -> Names:
    """Every object's name, prefixed by the host's project name (fixed at init)."""
    project = config.project
    return Names(
        db=f"{project}-db",
        redis=f"{project}-redis",
        backend=f"{project}-backend",
        backend_env=f"{project}-backend-env",
        secret=f"{project}-secrets",
        ingress=f"{project}-backend",
    )


def labels(config: HostConfig, component: str) -> dict[str, str]:
    """The labels every object of this host carries (component: its part of the host)."""
    # A worker's component is its service name: it runs the backend's code.
    app = {"database": "postgresql", "redis": "redis", "backend": "pixsim7-backend",
           "secrets": "pixsim7"}.get(component, "pixsim7-backend")
    return {
        "app.kubernetes.io/name": app,
        INSTANCE_LABEL: config.project,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "pixsim-host",
        HOST_ID_LABEL: config.host_id,
    }


def selector(config: HostConfig, component: str) -> dict[str, str]:
    return {INSTANCE_LABEL: config.project, COMPONENT_LABEL: component}


def host_selector(config: HostConfig) -> str:
    return f"{HOST_ID_LABEL}={config.host_id}"


def env_escape(value: str) -> str:
    """Kubernetes expands ``$(NAME)`` in env values and args; ``$$`` keeps a ``$`` literal."""
    return value.replace("$", "$$")


def _with_password(url: str, default_user: str, password_var: str) -> str:
    """``url`` (validated: no password in it) with ``$(password_var)`` as its password."""
    scheme, rest = url.split("://", 1)
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    user, _, hostport = authority.rpartition("@")
    user = user or default_user
    return f"{scheme}://{env_escape(user)}:$({password_var})@{env_escape(hostport)}{env_escape(tail)}"


def endpoints(config: HostConfig) -> Endpoints:
    """Where the backend finds its dependencies in the cluster (secrets as $(NAME))."""
    n = names(config)
    if config.database.url is None:
        database_url = (f"postgresql://{config.database.user}:$({DB_PASSWORD_VAR})"
                        f"@{n.db}:5432/{config.database.name}")
    else:
        database_url = _with_password(str(config.database.url), config.database.user, DB_PASSWORD_VAR)
    if config.redis.url is None:
        redis_url = f"redis://:$({REDIS_PASSWORD_VAR})@{n.redis}:6379/0"
    else:
        redis_url = _with_password(str(config.redis.url), "", REDIS_PASSWORD_VAR)
    return Endpoints(database_url=database_url, redis_url=redis_url, secret_key="$(SECRET_KEY)",
                     home=BACKEND_HOME, plugins_dir=EXTERNAL_PLUGINS_DIR)


def backend_env(config: HostConfig) -> dict[str, str]:
    """The backend's environment without secrets (the ConfigMap): the contract's clear part."""
    return without_secrets(backend_environment(config, endpoints(config)))


def workloads(config: HostConfig) -> dict[str, str]:
    """pixsim-host service name -> the workload that runs it in this host."""
    n = names(config)
    services = {}
    if config.database.url is None:
        services["db"] = f"statefulset/{n.db}"
    if config.redis.url is None:
        services["redis"] = f"statefulset/{n.redis}"
    services["backend"] = f"deployment/{n.backend}"
    for worker in kubernetes_workers(config):
        services[worker.name] = f"deployment/{config.project}-{worker.name}"
    for http in kubernetes_http_services(config):
        services[http.name] = f"deployment/{config.project}-{http.name}"
    return services


def kubernetes_http_services(config: HostConfig) -> list[HttpService]:
    """The HTTP services beside the backend, as they run inside the backend's image."""
    return resolve_http_services(config, python="python")


def kubernetes_workers(config: HostConfig) -> list[Worker]:
    """The host's workers, as their commands run inside the backend's image."""
    return resolve_workers(config, python="python")


def component(service: str) -> str:
    """The component label of a service's objects (a worker's is its own name)."""
    return COMPONENTS.get(service, service)


def template_context(config: HostConfig) -> dict[str, Any]:
    """What ``templates/kubernetes/*.j2`` see as ``k8s`` (besides ``host``)."""
    n = names(config)
    database_in_cluster = config.database.url is None
    redis_in_cluster = config.redis.url is None
    for in_cluster, name, key, what in (
        (database_in_cluster, n.db, "database.url", "PostgreSQL"),
        (redis_in_cluster, n.redis, "redis.url", "Redis"),
    ):
        if in_cluster and len(name) > MAX_STATEFULSET_NAME:
            raise HostError(
                f"the {what} StatefulSet would be named {name!r} ({len(name)} characters), "
                f"longer than the {MAX_STATEFULSET_NAME} Kubernetes allows; point {key} at a "
                "managed service, or run this host from a new host with a shorter name"
            )
    where = endpoints(config)
    environment = backend_env(config)
    digest = hashlib.sha256(json.dumps(environment, sort_keys=True).encode()).hexdigest()
    components = ("database", "redis", "backend", "secrets")
    return {
        "namespace": config.kubernetes.namespace,
        "names": n,
        "labels": {
            "db": labels(config, "database"),
            "redis": labels(config, "redis"),
            "backend": labels(config, "backend"),
            "secret": labels(config, "secrets"),
        },
        "selectors": {
            "db": selector(config, "database"),
            "redis": selector(config, "redis"),
            "backend": selector(config, "backend"),
        },
        "components": components,
        "database_in_cluster": database_in_cluster,
        "redis_in_cluster": redis_in_cluster,
        "database_url": where.database_url,
        "redis_url": where.redis_url,
        "backend_env": environment,
        "backend_env_digest": digest,
        "backend_args": [env_escape(arg) for arg in config.backend.command or []],
        # Run to completion before each backend pod starts (init containers), in the same
        # image and environment: the backend never serves an unmigrated database.
        "migrate": [[env_escape(arg) for arg in argv] for argv in migrate_commands(config)],
        "workers": [{"name": worker.name, "object": f"{config.project}-{worker.name}",
                     "args": [env_escape(arg) for arg in worker.argv],
                     "labels": labels(config, worker.name),
                     "selector": selector(config, worker.name)}
                    for worker in kubernetes_workers(config)],
        # Each its own Deployment and Service (the in-cluster name is the object's), listening
        # on its declared port, with its port variable beside the backend's environment.
        "http_services": [{"name": http.name, "object": f"{config.project}-{http.name}",
                           "args": [env_escape(arg) for arg in http.argv("0.0.0.0", http.listen_port)],
                           "port": http.listen_port, "health": http.health_endpoint,
                           "environment": http.environment(http.listen_port),
                           "labels": labels(config, http.name),
                           "selector": selector(config, http.name)}
                          for http in kubernetes_http_services(config)],
        "ingress": config.kubernetes.ingress_host is not None,
        "requests": {
            "db": {"cpu": "100m", "memory": "256Mi"},
            "redis": {"cpu": "50m", "memory": "64Mi"},
            "backend": {"cpu": "250m", "memory": "512Mi"},
        },
    }


def ingress_url(config: HostConfig) -> str | None:
    host = config.kubernetes.ingress_host
    if host is None:
        return None
    return f"{'https' if config.kubernetes.tls_secret else 'http'}://{host}"


def public_url(config: HostConfig) -> str | None:
    """Where clients reach the backend from outside the cluster, if the config says."""
    return config.backend.public_url or ingress_url(config)
